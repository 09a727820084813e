"""The camera's own pictures, read for `adapt --target`: a folder of photos, or a video file or stream.

Unlabelled: only how the faces look matters, so every face found counts (not only one per photo). A video
is sampled two frames a second from its start (up to `MAX_FRAMES`), so neighbouring frames, which look
alike, do not outweigh the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .camera import Observation, jpeg_quality, observe_region
from .errors import ImageError, InputError, SourceError
from .images import decode_image, is_image_path, iter_image_files, read_bytes
from .pipeline import FacePipeline

# A measured camera needs no more: the medians and shares it reports are stable well before this.
MAX_FACES = 400
# Video: frames read per second of video, and at most this many frames.
FRAMES_PER_SECOND = 2.0
MAX_FRAMES = 200


@dataclass
class TargetFaces:
    observations: list[Observation]
    pictures: int  # photos or frames looked at
    unreadable: list[str]  # photos that could not be read, with why
    kind: str  # "photos" or "video"
    source: str  # the folder, photo, video or stream read


def _observations(image: np.ndarray, pipeline: FacePipeline, jpeg: int | None) -> list[Observation]:
    return [
        Observation(
            pipeline.chip(image, face), pipeline.embedder.face_width(face), observe_region(image, face.box), jpeg
        )
        for face in pipeline.detect(image)
    ]


def read_target(source: str, pipeline: FacePipeline, *, progress: bool = False) -> TargetFaces:
    """Faces of the target camera; a folder or photo is read as photos, anything else as a video source."""
    path = Path(source)
    if path.is_dir() or (path.is_file() and is_image_path(path)):
        return _photo_faces(path, pipeline, progress)
    if not path.exists() and "://" not in source and not source.isdigit():
        raise InputError(f"{source}: no such file or folder; give --target a folder of the camera's photos or a video")
    return _video_faces(source, pipeline, progress)


def _photo_faces(root: Path, pipeline: FacePipeline, progress: bool) -> TargetFaces:
    files = iter_image_files(root)
    if not files:
        raise InputError(f"{root}: no photos here (jpg, png, ...); give --target a folder of the camera's photos")
    found: list[Observation] = []
    unreadable = []
    bar = tqdm(files, desc="measure target", unit="photo", disable=not progress, leave=False)
    looked = 0
    for file in bar:
        if len(found) >= MAX_FACES:
            break
        looked += 1
        try:
            data = read_bytes(file)
            image = decode_image(data, str(file), max_pixels=pipeline.settings.max_image_pixels)
        except ImageError as exc:
            unreadable.append(str(exc))
            continue
        found += _observations(image, pipeline, jpeg_quality(data))
    return TargetFaces(found[:MAX_FACES], looked, unreadable, "photos", str(root))


def _video_faces(source: str, pipeline: FacePipeline, progress: bool) -> TargetFaces:
    from .stream import FrameSource

    try:
        frames = FrameSource(source)
    except SourceError as exc:
        raise InputError(f"{exc}; --target takes a folder of photos, a video file or a stream") from None
    due = 0.0
    found: list[Observation] = []
    looked = 0
    bar = tqdm(total=MAX_FRAMES, desc="measure target", unit="frame", disable=not progress, leave=False)
    try:
        for frame in frames:
            if frame.time < due:
                continue
            due = frame.time + 1.0 / FRAMES_PER_SECOND
            looked += 1
            bar.update()
            found += _observations(frame.image, pipeline, None)
            if looked >= MAX_FRAMES or len(found) >= MAX_FACES:
                break
    finally:
        frames.close()
        bar.close()
    if looked == 0:
        raise InputError(f"{source}: no frame could be read from this video; check that it plays, or give photos")
    return TargetFaces(found[:MAX_FACES], looked, [], "video", source)
