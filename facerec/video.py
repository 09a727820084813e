"""The gallery on video: a camera, file or stream named live, and enrollment at the camera.

Capture, tracking and voting are `stream`'s; this module connects them to a gallery session: the tracker
embeds with the session's pipeline and names with its video policy (stricter than for photos).
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np

from .gallery import validate_name
from .session import GallerySession
from .stream import FrameResult, FrameSource, Tracker, collect_enrollment_frames, watch

# A 40 px smallest face: MTCNN's pyramid then starts at 12/40 of the frame, what keeps 720p live.
VIDEO_MIN_FACE = 40


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
    the tracks still open."""
    pipeline = session.pipeline.with_min_face(min_face)
    tracker = Tracker(pipeline.vectors, vector_namer(session, threshold, max_false_accept))
    frames = (
        source
        if isinstance(source, FrameSource)
        else FrameSource(str(source), realtime=realtime, reconnect_timeout=reconnect_timeout, on_status=on_status)
    )
    try:
        yield from watch(frames, pipeline.detector, tracker, detect_every=detect_every)
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
