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

from collections.abc import Container, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import Settings
from .detect import Detector, Face, choose_main_face, iou
from .errors import ImageError
from .fileio import sha256_bytes
from .images import Reduced, decode_image, decode_reduced, image_size, read_bytes, read_image

if TYPE_CHECKING:
    from .embedders.base import Embedder

# Photos that enroll and identify detect in one call of the cascade. Small photos gain most from sharing
# its P-Net canvases and R-/O-Net batches (measured on one thread: 48 LFW photos 1.7x, 29 photos of
# ../shared resized to 480 px 1.6x, at 4 to 8 a call; the enroll and identify rows of bench/throughput.py
# and bench/compare.py include it); a photo whose detection image has a million pixels or more gains
# nothing, so a batch closes at that many, which keeps its memory and its time (what Ctrl-C waits for)
# to about one large photo's.
BATCH_PHOTOS = 8
BATCH_PIXELS = 1_000_000
# Photos whose faces enroll and identify embed together while the background threads detect the next
# ones. Small enough that embedding overlaps detection: enroll used to embed 32 at a time, and its last 32
# ran with the detection threads idle (36 web photos of bench/compare.py, AMD EPYC 2 cores: enroll 2.85 s
# -> 2.3 s at 8); the embedder's batches (16 chips with the flip) stay efficient.
EMBED_PHOTOS = 8


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


@dataclass(frozen=True)
class ReducedPhoto:
    """A photo read to find its faces: its content hash, its pixels at the size detection needs (a large
    JPEG decoded at a fraction of its size, images.decode_reduced; None when skipped by hash) and its
    bytes, decoded again at full resolution when chips or drawings need it."""

    path: Path
    sha256: str
    data: bytes
    image: Reduced | None


def load_photo(path: Path, *, max_pixels: int, skip: Container[str] = ()) -> Photo:
    """A photo's hash and pixels; photos whose hash is in `skip` are hashed only (a re-run is cheap)."""
    data = read_bytes(path)
    digest = sha256_bytes(data)
    if digest in skip:
        return Photo(path, digest, None)
    return Photo(path, digest, decode_image(data, str(path), max_pixels=max_pixels))


def _in_reduced(face: Face, factor: int) -> Face:
    """A full-resolution face in the coordinates of the image reduced by `factor` (see images.Reduced)."""

    def to(v: float) -> float:
        return (v + 0.5) / factor - 0.5

    x1, y1, x2, y2 = face.box
    return replace(
        face, box=(to(x1), to(y1), to(x2), to(y2)), landmarks=tuple((to(x), to(y)) for x, y in face.landmarks)
    )


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

    def load_reduced(self, path: Path, *, skip: Container[str] = ()) -> ReducedPhoto:
        """A photo's hash, bytes and pixels at the size this pipeline's detector needs; photos whose hash is
        in `skip` are hashed only."""
        data = read_bytes(path)
        digest = sha256_bytes(data)
        if digest in skip:
            return ReducedPhoto(path, digest, data, None)
        reduced = decode_reduced(
            data, str(path), max_side=self.detector.max_side, max_pixels=self.settings.max_image_pixels
        )
        return ReducedPhoto(path, digest, data, reduced)

    def find_faces(
        self, paths: Sequence[Path], *, skip: Container[str] = ()
    ) -> list[tuple[ReducedPhoto, list[Face]] | ImageError]:
        """Each photo (`load_reduced`) with its faces (none when skipped by hash), or the ImageError that
        says why it cannot be read; the decoded photos go through the detector together."""
        loaded: list[ReducedPhoto | ImageError] = []
        for path in paths:
            try:
                loaded.append(self.load_reduced(path, skip=skip))
            except ImageError as exc:
                loaded.append(exc)
        decoded = [p for p in loaded if isinstance(p, ReducedPhoto) and p.image is not None]
        found = iter(self.detect_photos(decoded))
        return [p if isinstance(p, ImageError) else (p, next(found) if p.image is not None else []) for p in loaded]

    def full_image(self, photo: ReducedPhoto) -> np.ndarray:
        """A photo's pixels at full resolution (its decoded pixels themselves when they are not reduced)."""
        assert photo.image is not None
        if photo.image.factor == 1:
            return photo.image.pixels
        return decode_image(photo.data, str(photo.path), max_pixels=self.settings.max_image_pixels)

    def detection_pixels(self, path: Path) -> float:
        """How much detection work a photo is, from its header: its detection image's pixels (a photo
        whose header cannot be read counts as a full batch, so it is detected alone)."""
        size = image_size(path)
        if size is None:
            return BATCH_PIXELS
        scale = min(1.0, self.detector.max_side / max(size))
        return size[0] * size[1] * scale * scale

    # -- faces -----------------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Face]:
        """Every face of an image, largest first."""
        return self.detector.detect(image)

    def detect_photos(self, photos: Sequence[ReducedPhoto]) -> list[list[Face]]:
        """Every face of each photo (decoded, not skipped), largest first, in full-resolution coordinates;
        the photos go through the detector together."""
        reduced = [photo.image for photo in photos if photo.image is not None]
        assert len(reduced) == len(photos), "a photo skipped by hash has no pixels to detect on"
        return self.detector.detect_many([r.pixels for r in reduced], [r.size for r in reduced])

    def main_face(self, image: np.ndarray) -> tuple[Face | None, str]:
        """The one face a photo of one person is about (the enrollment rule), or None and why."""
        return self.choose_main(self.detect(image))

    def choose_main(self, faces: list[Face]) -> tuple[Face | None, str]:
        """The enrollment rule on a photo's faces: its one main face, or None and why."""
        return choose_main_face(faces, self.settings.enroll_min_score, self.settings.enroll_dominance)

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

    def photo_chips(self, photo: ReducedPhoto, faces: list[Face]) -> list[np.ndarray]:
        """The chips of a photo's faces as its full resolution gives them.

        A reduced decode serves when it still holds every face at twice the chip's resolution or more:
        the chip is then cut with a 2x halving (aligned_chip's pyramid) from it instead of from the full
        decode, and differs by under a grey level on average (tests/test_reduced.py). Smaller faces are
        cut from the full decode.
        """
        reduced = photo.image
        assert reduced is not None
        if reduced.factor == 1 or not faces:
            return self.chips(reduced.pixels, faces)
        needed = 2 * reduced.factor * self.embedder.spec.input_size
        if all(min(face.width, face.height) >= needed for face in faces):
            return self.chips(reduced.pixels, [_in_reduced(face, reduced.factor) for face in faces])
        return self.chips(self.full_image(photo), faces)

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
