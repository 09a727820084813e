"""The gallery on video: a camera, file or stream named live, and enrollment at the camera.

Capture, tracking and voting are `stream`'s; this module connects them to a gallery session: the tracker
embeds with the session's pipeline and names with its video policy (stricter than for photos).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import replace

import numpy as np

from .detect import Face
from .gallery import validate_name
from .prefetch import torch_threads_beside
from .regions import FrameScanner
from .session import GallerySession
from .stream import FrameResult, FrameSource, Tracker, collect_enrollment_frames, watch

# A 40 px smallest face: MTCNN's pyramid then starts at 12/40 of the frame, what keeps 720p live.
VIDEO_MIN_FACE = 40
# Frames up to this side are searched as they are: with a 40 px smallest face the pyramid starts at 30%
# of the frame either way, and shrinking 1920x1080 to the photos' 1600 (INTER_AREA) cost as much as a
# fifth of a full pass.
VIDEO_MAX_SIDE = 1920


def vector_namer(
    session: GallerySession, threshold: float | None, max_false_accept: float | None = None
) -> Callable[[np.ndarray], list[tuple[str, float]]]:
    """name_vectors(vectors) -> [(name or 'unknown', similarity)] under the session's video policy."""
    gallery = session.reader
    policy = session.policy(threshold, video=True, max_false_accept=max_false_accept)

    def name_vectors(vectors: np.ndarray) -> list[tuple[str, float]]:
        raw = gallery.search(vectors, top_k=policy.candidates_needed, rule=policy.rule)
        return [
            (policy.decide(candidates), candidates[0].similarity if candidates else 0.0)
            for candidates in policy.rank(vectors, raw)
        ]

    return name_vectors


def watch_source(
    session: GallerySession,
    source: str | int | FrameSource,
    *,
    threshold: float | None = None,
    max_false_accept: float | None = None,
    min_face: int = VIDEO_MIN_FACE,
    detect_every: int = 2,
    realtime: bool = False,
    reconnect_timeout: float = 30.0,
    on_status: Callable[[str], None] = lambda message: None,
) -> Generator[FrameResult, None, None]:
    """Per-frame results (faces, track names, appear/leave events) for a camera index, video file or stream
    URL (or an open `stream.FrameSource`). The last result has `end` set and carries the leave events of
    the tracks still open. The whole frame is searched every `Settings.watch_full_pass_s` seconds, only
    around the tracked faces in between (see `regions`)."""
    pipeline = session.pipeline.with_min_face(min_face)
    detector = replace(pipeline.detector, max_side=max(pipeline.detector.max_side, VIDEO_MAX_SIDE))
    scanner = FrameScanner(detector, full_every=session.settings.watch_full_pass_s, detect_every=detect_every)

    def embed(image: np.ndarray, faces: list[Face]) -> np.ndarray:
        # Embedding leaves a core's worth to the capture or decoding thread: OpenMP's threads wait for each
        # other at every operation, so one that the decoder holds up stalls the rest. Detection spreads over
        # threads of its own instead (Detector.parallel), which lose only their own time: on 2 cores the
        # 1080p crowd clip went from 10.1-11.8 to 12.6-14.7 frames/s (AMD EPYC).
        with torch_threads_beside(1):
            return pipeline.vectors(image, faces)

    tracker = Tracker(embed, vector_namer(session, threshold, max_false_accept))
    frames = (
        source
        if isinstance(source, FrameSource)
        else FrameSource(str(source), realtime=realtime, reconnect_timeout=reconnect_timeout, on_status=on_status)
    )
    try:
        yield from watch(frames, scanner, tracker)
    finally:
        frames.close()


def enroll_from_camera(
    session: GallerySession,
    name: str,
    source: str | int,
    *,
    count: int = 5,
    timeout: float = 30.0,
    on_status: Callable[[str], None] = lambda message: None,
) -> int:
    """Capture `count` good frames of the one face in view and enroll them as `name`."""
    from .enroll import enroll_chosen_frames

    name = validate_name(name)
    frames = FrameSource(str(source), on_status=on_status)
    try:
        chosen = collect_enrollment_frames(
            frames,
            session.pipeline.with_min_face(VIDEO_MIN_FACE).detector,
            count=count,
            timeout=timeout,
            on_status=on_status,
        )
    finally:
        frames.close()
    return enroll_chosen_frames(session, name, str(source), chosen)
