"""An enrolled face as the target camera would show it, and what a camera-adapted gallery stores for it.

`adapt --target` changes two things, and this module owns the second. The embedder learns the camera
(facerec.distil). And each enrolled face is stored as its clean vector joined with its *camera view*: the
mean vector of a few copies of its photo damaged as the camera damages faces (`Camera.damage`, the face then
detected and aligned again, as the camera's faces are). A face the camera shows 16 px wide matches such a
view of the right person better than a clean photo, and the clean half keeps clean photos matching: with the
base model and no training at all (bench/adapt.py, centroids of 3 photos, top-1 among 158 LFW people),
camera40 (tuned on) 0.832 -> 0.870 for the gallery's people and 0.758 -> 0.835 for people outside it, ir
(not tuned on) 0.940 -> 0.960 and 0.957 -> 0.973; clean photos 0.987 -> 0.984. At 64 px, where the camera
costs little, views helped nothing (0.971 -> 0.968), so whether a gallery uses them is decided on the
adaptation's early-stopping photos (facerec.adapt), before the gate measures the whole.

Copies are seeded by the photo's SHA-256 and the face's box, so a face's stored vector is the same whether
it was enrolled before adapting or after.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .camera import Camera, Look
from .detect import Face, iou
from .vectors import normalise

if TYPE_CHECKING:
    from .embedders.base import Embedder
    from .gallery.meta import GalleryMeta
    from .pipeline import FacePipeline

# Damaged copies averaged into a face's camera view: the mean settles by about 4 (bench/adapt.py used 4).
VIEW_COPIES = 4


@dataclass
class Scene:
    """An enrolled face with its surroundings (a region of its photo): what a camera's damage is done to."""

    image: np.ndarray  # RGB uint8 region of the photo
    face: Face  # the face, in the region's coordinates


def scene(image: np.ndarray, face: Face, margin: float = 0.6) -> Scene:
    """The face and `margin` of its width around it on every side: enough for the detector to find it again,
    and a bounded amount of memory whatever the photo's size."""
    x1, y1, x2, y2 = face.box
    grow = margin * max(x2 - x1, y2 - y1)
    left, top = max(int(x1 - grow), 0), max(int(y1 - grow), 0)
    right, bottom = min(int(np.ceil(x2 + grow)), image.shape[1]), min(int(np.ceil(y2 + grow)), image.shape[0])
    moved = Face(
        (x1 - left, y1 - top, x2 - left, y2 - top),
        face.score,
        tuple((x - left, y - top) for x, y in face.landmarks),
    )
    return Scene(np.ascontiguousarray(image[top:bottom, left:right]), moved)


def as_camera_shows(
    scenes: list[Scene], camera: Camera, pipeline: FacePipeline, gallery_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Each scene damaged by the camera, its face detected and aligned again (landmarks found on a small face
    are less exact, and that is part of what the camera does); a face the detector misses is aligned where
    it was."""
    chips = []
    for item in scenes:
        damaged = camera.damage(item.image, item.face.box, gallery_noise, rng)
        overlap, found = max(
            ((iou(f.box, item.face.box), f) for f in pipeline.detect(damaged)), key=lambda p: p[0], default=(0.0, None)
        )
        chips.append(pipeline.chip(damaged, found if found is not None and overlap >= 0.3 else item.face))
    return pipeline.embedder.stack(chips)


def view_key(sha256: str, box: tuple[float, ...] | list[float]) -> str:
    """What seeds a face's camera view: its photo's content and where the face is in it."""
    return f"{sha256}:{','.join(f'{v:.0f}' for v in box)}"


def join(clean: np.ndarray, views: np.ndarray) -> np.ndarray:
    """Stored vectors from clean vectors (N, d) and their camera views' vectors (copies, N, d): the clean
    vector and the views' mean direction, weighed alike."""
    if views.shape[1] == 0:
        return clean
    return normalise(clean + normalise(views.mean(axis=0)))


def embed_views(embedder: Embedder, views: np.ndarray) -> np.ndarray:
    """(copies, N, H, W, 3) chips -> (copies, N, dim) unit vectors."""
    return np.stack([embedder.embed(copy) for copy in views]) if len(views) else np.zeros((0, 0, embedder.spec.dim))


@dataclass(frozen=True)
class CameraView:
    """How a camera-adapted gallery makes its faces' camera views: the camera, the noise the gallery's photos
    carry already (only the rest is added), and how many copies are averaged."""

    camera: Camera
    gallery_noise: float
    copies: int = VIEW_COPIES

    def views(self, scenes: list[Scene], keys: list[str], pipeline: FacePipeline) -> np.ndarray:
        """(copies, N, H, W, 3): each scene's face as the camera would show it, its copies seeded by its key
        (`view_key`), so that a face's view does not depend on what else is being viewed."""
        size = pipeline.embedder.spec.input_size
        out = np.zeros((self.copies, len(scenes), size, size, 3), np.uint8)
        for i, (item, key) in enumerate(zip(scenes, keys)):
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
            for copy in range(self.copies):
                out[copy, i] = as_camera_shows([item], self.camera, pipeline, self.gallery_noise, rng)[0]
        return out

    def face_views(self, image: np.ndarray, face: Face, key: str, pipeline: FacePipeline) -> np.ndarray:
        """(copies, H, W, 3): the camera view of one face of a photo (RGB, full resolution); `key`: the view
        key of its gallery record (`view_key`), so that adapting later makes the same view."""
        return self.views([scene(image, face)], [key], pipeline)[:, 0]

    def vectors(self, embedder: Embedder, chips: np.ndarray, views: np.ndarray) -> np.ndarray:
        """What the gallery stores for faces with these chips (N, H, W, 3) and views (copies, N, H, W, 3)."""
        return join(embedder.embed(chips), embed_views(embedder, views))

    def to_record(self) -> dict[str, Any]:
        return {
            "looks": [asdict(look) for look in self.camera.looks],
            "source": self.camera.source,
            "gallery_noise": self.gallery_noise,
            "copies": self.copies,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CameraView:
        camera = Camera(tuple(Look(**look) for look in record["looks"]), record["source"])
        return cls(camera, float(record["gallery_noise"]), int(record["copies"]))


def gallery_view(meta: GalleryMeta) -> CameraView | None:
    """The camera view a gallery joins its faces with, or None when it stores clean vectors."""
    if meta.adaptation is None or meta.adaptation.camera_view is None:
        return None
    return CameraView.from_record(meta.adaptation.camera_view)


def stored_vectors(
    view: CameraView | None, pipeline: FacePipeline, chips: list[np.ndarray], views: list[np.ndarray]
) -> np.ndarray:
    """What a gallery stores for faces with these chips: their vectors, joined with their camera views (one
    (copies, H, W, 3) array per face, `CameraView.face_views`) when the gallery has a camera view."""
    if view is None:
        return pipeline.embed(chips)
    stacked = np.stack(views, axis=1) if views else np.zeros((view.copies, 0, *pipeline.embedder.stack([]).shape[1:]))
    return view.vectors(pipeline.embedder, pipeline.embedder.stack(chips), stacked.astype(np.uint8))
