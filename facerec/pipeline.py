"""`FacePipeline`: image → faces → chips → vectors, with no gallery — the path every command shares.

    from facerec import FacePipeline
    pipeline = FacePipeline.load("dlib-resnet")
    for found in pipeline.faces(pipeline.read("party.jpg")):
        print(found.box, found.vector[:4])

enroll, identify, verify, watch, adapt, eval and the benchmarks all go through it, so a change to how a
photo is read, which face of it counts, or how a face becomes a vector happens here once. It holds a
detector, an embedder and the settings; models load when it is made (`load`), never at import.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import Settings
from .detect import Detector, Face, choose_main_face, iou
from .fileio import sha256_bytes
from .images import decode_image, read_bytes, read_image

if TYPE_CHECKING:
    from .embedders.base import Embedder


@dataclass(frozen=True)
class Photo:
    """A photo read from disk: its content hash (its identity in the gallery) and its pixels, which are
    None when the caller asked to skip photos of a known hash (they are never decoded)."""

    path: Path
    sha256: str
    image: np.ndarray | None


@dataclass(frozen=True)
class FoundFace:
    """A face of an image and its unit vector."""

    face: Face
    vector: np.ndarray

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.face.box

    @property
    def score(self) -> float:
        return self.face.score


def load_photo(path: Path, *, max_pixels: int, skip: Container[str] = ()) -> Photo:
    """A photo's hash and pixels; photos whose hash is in `skip` are hashed only (a re-run is cheap)."""
    data = read_bytes(path)
    digest = sha256_bytes(data)
    if digest in skip:
        return Photo(path, digest, None)
    return Photo(path, digest, decode_image(data, str(path), max_pixels=max_pixels))


class FacePipeline:
    """A detector and an embedder that work together, and the settings they were made with."""

    def __init__(
        self, embedder: Embedder, detector: Detector, settings: Settings, *, model_note: str | None = None
    ) -> None:
        self.embedder = embedder
        self.detector = detector
        self.settings = settings
        # Why `load("auto")` chose the model it did (one line), when it had to choose.
        self.model_note = model_note

    @classmethod
    def load(
        cls,
        model: str = "auto",
        *,
        weights: str | Path | None = None,
        device: str = "auto",
        min_face_size: int | None = None,
        settings: Settings | None = None,
        progress: bool = False,
    ) -> FacePipeline:
        """The pipeline of a model ('auto': vggface2 when its weights are here or can be downloaded, else the
        offline dlib-resnet; `model_note` says why)."""
        from .embedders.base import choose_model, load_embedder

        settings = settings or Settings.from_env()
        note = None
        if model == "auto":
            model, note = choose_model(settings)
        embedder = load_embedder(
            model, weights=Path(weights) if weights else None, device=device, settings=settings, progress=progress
        )
        return cls(
            embedder,
            Detector.from_settings(embedder.device, settings, min_face_size=min_face_size),
            settings,
            model_note=note,
        )

    def with_min_face(self, min_face_size: int) -> FacePipeline:
        """The same models with another smallest face (video searches frames for larger faces, faster)."""
        return FacePipeline(
            self.embedder,
            replace(self.detector, min_face_size=min_face_size),
            self.settings,
            model_note=self.model_note,
        )

    @property
    def model(self) -> str:
        return self.embedder.spec.name

    @property
    def dim(self) -> int:
        return self.embedder.spec.dim

    # -- reading ---------------------------------------------------------------------------------
    def read(self, path: str | Path) -> np.ndarray:
        """An image file as RGB uint8, within the configured size limit."""
        return read_image(path, max_pixels=self.settings.max_image_pixels)

    def load_photo(self, path: Path, *, skip: Container[str] = ()) -> Photo:
        """A photo's hash and pixels, within the configured size limit (see `load_photo`)."""
        return load_photo(path, max_pixels=self.settings.max_image_pixels, skip=skip)

    # -- faces -----------------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Face]:
        """Every face of an image, largest first."""
        return self.detector.detect(image)

    def main_face(self, image: np.ndarray) -> tuple[Face | None, str]:
        """The one face a photo of one person is about (the enrollment rule), or None and why."""
        return choose_main_face(self.detect(image), self.settings.enroll_min_score, self.settings.enroll_dominance)

    def face_at(
        self, image: np.ndarray, box: tuple[float, float, float, float], *, min_iou: float = 0.5
    ) -> Face | None:
        """The detected face that overlaps `box` most (an enrolled face found again), if it overlaps enough."""
        overlap, best = max(
            ((iou(f.box, box), f) for f in self.detect(image)), key=lambda pair: pair[0], default=(0.0, None)
        )
        return best if overlap >= min_iou else None

    # -- vectors ---------------------------------------------------------------------------------
    def chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The embedder's input for one face."""
        return self.embedder.chip(image, face)

    def chips(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        return [self.embedder.chip(image, face) for face in faces]

    def embed(self, chips: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, dim) unit vectors of chips, in batches; none gives an empty (0, dim) array."""
        return self.embedder.embed(self.embedder.stack(chips))

    def vectors(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """One unit vector per face of an image."""
        return self.embed(self.chips(image, faces))

    def faces(self, image: np.ndarray) -> list[FoundFace]:
        """Every face of an image with its vector: what face_recognition's two calls give, in one."""
        faces = self.detect(image)
        return [FoundFace(face, vector) for face, vector in zip(faces, self.vectors(image, faces))]
