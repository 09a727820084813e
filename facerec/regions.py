"""What of each video frame is searched for faces: the whole frame now and then, only around the faces
being tracked in between.

A full MTCNN pass is most of what video costs (its pyramid covers the whole frame down to a 40 px face).
Tracked faces move little from one frame to the next, so between full passes each one is looked for in a
square REGION_SIDE times its size around its last box, for faces of at least REGION_MIN_FACE of its size:
a few pyramid levels of a few dozen pixels, all tracks in one batch. Faces new to the view are found by
the full passes, so `full_every` seconds of frame time (video time for a file, capture time for a live
source, whatever the frame rate) bound how late one is seen; facerec watch takes it from
`Settings.watch_full_pass_s`, chosen so that a new face is named within 300 ms (bench/stream.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .detect import Detector, Face, Region

# A tracked face is searched for in a square this many times its size (room for it to move and grow
# between two detections), for faces from this share of its size up (room for it to shrink). Larger
# regions and smaller faces cost more: most of a region's time is R-Net and O-Net on the P-Net candidates
# around the face, and each pyramid level adds its own (crowd clip: 170 candidates for 2.5 and 0.5, 98
# for these).
REGION_SIDE = 2.0
REGION_MIN_FACE = 0.7
# Frame times are decimal fractions (index / fps): a period of 0.2 s at 25 fps must fall on frame 5.
_TIME_SLACK = 1e-6


@dataclass(frozen=True)
class Scan:
    """What one frame is searched for: the whole frame (full) or the regions around its tracks."""

    full: bool
    regions: tuple[Region, ...] = ()


def region_around(box: tuple[float, float, float, float], shape: tuple[int, ...], min_face: int) -> Region:
    """The region in which a face last seen at `box` is looked for in a frame of `shape`: a square around
    its centre, for faces from a share of its width up, never smaller than the full pass's `min_face` (so
    regions find nothing a full pass would not)."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    # MTCNN's boxes are taller than wide; its 12 px window is the face's width.
    narrow = min(x2 - x1, y2 - y1)
    half = REGION_SIDE * side / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    height, width = shape[:2]
    return Region(
        (
            max(0, math.floor(cx - half)),
            max(0, math.floor(cy - half)),
            min(width, math.ceil(cx + half)),
            min(height, math.ceil(cy + half)),
        ),
        max(min_face, round(REGION_MIN_FACE * narrow)),
    )


# A live track: its last box (x1, y1, x2, y2) and when it was last seen (frame time).
Tracked = tuple[tuple[float, float, float, float], float]


class FrameScanner:
    """Decides, frame by frame, what is searched for faces, and searches it with the detector.

    Detection runs on every `detect_every`-th frame; on those, the whole frame when `full_every` seconds
    of frame time have passed since the last full pass (0: always), else the regions around the tracks
    seen since the last full pass. A track the last full pass did not find is not followed: its face is
    gone or hidden, and in a crowd the tracks kept open for a second after their face was last seen
    tripled the regions (the next full pass finds a face that comes back). The first frame gets a full
    pass. Counts the passes of each kind.
    """

    def __init__(self, detector: Detector, *, full_every: float, detect_every: int = 1) -> None:
        self.detector = detector
        self.full_every = full_every
        self.detect_every = detect_every
        self.full_passes = self.region_passes = 0
        self._last_full: float | None = None
        self._frames = 0

    def plan(self, shape: tuple[int, ...], now: float, tracks: Iterable[Tracked]) -> Scan | None:
        """What this frame (of `shape`, at `now` seconds) is searched for; None: no detection on it."""
        frame, self._frames = self._frames, self._frames + 1
        if frame % self.detect_every:
            return None
        if self._last_full is None or now - self._last_full >= self.full_every - _TIME_SLACK:
            self._last_full = now
            self.full_passes += 1
            return Scan(full=True)
        self.region_passes += 1
        minimum = self.detector.min_face_size
        return Scan(False, tuple(region_around(box, shape, minimum) for box, seen in tracks if seen >= self._last_full))

    def scan(self, image: np.ndarray, now: float, tracks: Iterable[Tracked]) -> list[Face] | None:
        """The faces of this frame by its plan, in frame coordinates; None when it is not searched."""
        plan = self.plan(image.shape, now, tracks)
        if plan is None:
            return None
        return self.detector.detect(image) if plan.full else self.detector.detect_regions(image, plan.regions)
