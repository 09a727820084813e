"""Face detection with MTCNN (facenet-pytorch's trained nets, our batched cascade in `mtcnn`): boxes,
probabilities and 5 landmarks in original coordinates.

MTCNN's pyramid work grows with the image area, so very large photos are downscaled before detection and
the results mapped back; everything returned is in the coordinates of the image that was passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .config import Settings

# PNet's window is 12 px: no detector setting can find a face smaller than that in the detection image.
_PNET_WINDOW = 12


@dataclass(frozen=True)
class Face:
    """One detected face. Landmarks: left eye, right eye, nose, left and right mouth corner (x, y)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


@dataclass(frozen=True)
class Region:
    """A part of an image to search: integer (x1, y1, x2, y2) pixels, and the smallest face looked for
    there (image pixels), which sets how much MTCNN shrinks it."""

    box: tuple[int, int, int, int]
    min_face: int


@dataclass(frozen=True)
class Detector:
    """Finds every face in an RGB uint8 image.

    min_face_size is in original pixels; min_score drops MTCNN's low-probability boxes, which on web
    photos are mostly not faces. The MTCNN networks are shared between detectors on one device.
    """

    device: str = "cpu"
    min_face_size: int = 20
    min_score: float = 0.90
    max_side: int = 1600
    # Threads one cascade call spreads its work over when the calling thread has that many torch threads
    # (`mtcnn._spread`; each takes its share of them): a photo detected in the main thread, `watch`'s frames.
    # enroll's and identify's background threads have one each and detect alone, side by side.
    parallel: int = 2

    @classmethod
    def from_settings(cls, device: str, settings: Settings, *, min_face_size: int | None = None) -> Detector:
        """A detector with the configured score floor and size limit (and minimum face unless given)."""
        return cls(
            device,
            min_face_size=min_face_size or settings.min_face_size,
            min_score=settings.min_face_score,
            max_side=settings.detect_max_side,
        )

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces sorted by decreasing area."""
        return self.detect_many([image])[0]

    def detect_many(self, images: list[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None) -> list[list[Face]]:
        """The faces of several images, their pyramids and candidates batched through the cascade.

        `sizes`: the full-resolution (height, width) of photos that `images` are reduced decodes of
        (images.decode_reduced, no smaller than the detection image): each is then detected as its full
        decode would be (the same detection-image size and smallest face) and its faces come in
        full-resolution coordinates.
        """
        from . import mtcnn

        full = list(sizes) if sizes is not None else [image.shape[:2] for image in images]
        smalls, scales = [], []
        for image, (height, width) in zip(images, full):
            scale = min(1.0, self.max_side / max(height, width, 1))
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = image
            if (image.shape[1], image.shape[0]) != size:
                small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            smalls.append(np.ascontiguousarray(small))
            scales.append(scale)
        minimums = [max(_PNET_WINDOW, int(self.min_face_size * scale)) for scale in scales]
        # Our cascade on facenet-pytorch's trained nets: the boxes, landmarks and probabilities of its
        # detect_face (tests/test_mtcnn.py), about 1.6x faster (bench/mtcnn.py). Called with our minimum
        # face as an argument and no shared state, so threads can detect at once.
        found = mtcnn.detect_many(smalls, minimums, device=self.device, parallel=self.parallel)
        return [self._faces(boxes, points, scale, size) for (boxes, points), scale, size in zip(found, scales, full)]

    def detect_regions(self, image: np.ndarray, regions: Sequence[Region]) -> list[Face]:
        """The faces inside some parts of an image, in its coordinates, sorted by decreasing area: what a
        video tracker searches between full passes (see `regions`).

        Each region goes through MTCNN at its own smallest face, all of them in one batch. A face cut by
        a region's edge (one that is not the image's edge) is dropped: its box and landmarks would be
        guessed, and it is found whole in its own region or by the next full pass. A face found in two
        overlapping regions is kept once.
        """
        from . import mtcnn

        if not regions:
            return []
        height, width = image.shape[:2]
        crops = [np.ascontiguousarray(image[y1:y2, x1:x2]) for x1, y1, x2, y2 in (r.box for r in regions)]
        minimums = [max(_PNET_WINDOW, r.min_face) for r in regions]
        found = mtcnn.detect_many(crops, minimums, device=self.device, parallel=self.parallel)
        boxes, points = [], []
        for (x1, y1, x2, y2), (b, p) in zip((r.box for r in regions), found):
            b, p = b.reshape(-1, 5), p.reshape(-1, 5, 2)
            cut = (
                ((b[:, 0] < 0) & (x1 > 0))
                | ((b[:, 1] < 0) & (y1 > 0))
                | ((b[:, 2] > x2 - x1) & (x2 < width))
                | ((b[:, 3] > y2 - y1) & (y2 < height))
            )
            boxes.append(b[~cut] + (x1, y1, x1, y1, 0))
            points.append(p[~cut] + (x1, y1))
        faces = self._faces(np.concatenate(boxes), np.concatenate(points), 1.0, (height, width))
        kept: list[Face] = []
        for face in sorted(faces, key=lambda f: -f.score):
            if all(iou(face.box, other.box) < 0.5 for other in kept):
                kept.append(face)
        return sorted(kept, key=lambda f: f.area, reverse=True)

    def _faces(self, boxes: np.ndarray, points: np.ndarray, scale: float, size: tuple[int, int]) -> list[Face]:
        height, width = size
        boxes, points = np.asarray(boxes, np.float64).reshape(-1, 5), np.asarray(points, np.float64).reshape(-1, 5, 2)
        faces = []
        for box, prob, pts in zip(boxes[:, :4] / scale, boxes[:, 4], points / scale):
            x1, y1, x2, y2 = (float(v) for v in box)
            face = Face(
                # MTCNN extends boxes of faces cut by the border past the image: report what is visible.
                box=(max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))),
                score=float(prob),
                landmarks=tuple((float(x), float(y)) for x, y in pts),
            )
            if face.score >= self.min_score and min(face.width, face.height) >= self.min_face_size * 0.8:
                faces.append(face)
        return sorted(faces, key=lambda f: f.area, reverse=True)


def iou(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def choose_main_face(faces: list[Face], min_score: float, dominance: float) -> tuple[Face | None, str]:
    """The one face a photo of one person (to enroll, to verify) is about, or None and why.

    Low-confidence detections are ignored first: on large web photos MTCNN's biggest box under ~0.95 is
    often a torso or hair, and one enrolled non-face attracts many wrong matches.
    """
    if not faces:
        return None, "no face found"
    confident = sorted((f for f in faces if f.score >= min_score), key=lambda f: f.area, reverse=True)
    if not confident:
        return None, f"no confident face (best detection {max(f.score for f in faces):.2f} < {min_score})"
    if len(confident) > 1 and confident[0].area < dominance * confident[1].area:
        return None, f"ambiguous: {len(confident)} faces of similar size; crop the photo to one person"
    return confident[0], ""
