"""Video detection between full passes: the schedule (regions.FrameScanner), detection around tracked faces
(Detector.detect_regions) against full-frame detection on real clips, and a face entering mid-clip."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

import mtcnn_reference as compare
from facerec import mtcnn
from facerec.detect import Detector, iou
from facerec.regions import REGION_MIN_FACE, REGION_SIDE, FrameScanner, Scan, region_around
from facerec.stream import Frame, Tracker, watch
from facerec.video import VIDEO_MAX_SIDE, VIDEO_MIN_FACE

DETECTOR = Detector("cpu", min_face_size=VIDEO_MIN_FACE, max_side=VIDEO_MAX_SIDE)


def read_frames(path, count: int, every: int = 1, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    index = 0
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        if index % every == 0:
            if size is not None:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        index += 1
    assert len(frames) == count, path
    return frames


# -- the schedule -------------------------------------------------------------------------------------
@pytest.mark.parametrize("detect_every", [1, 2])
def test_full_pass_at_least_every_period_whatever_the_frame_rate(detect_every):
    """Frames at an uneven rate (a live source dropping frames): every detection frame at least `period`
    after the last full pass gets one, and the others get the regions around the tracks."""
    period = 0.15
    scanner = FrameScanner(DETECTOR, full_every=period, detect_every=detect_every)
    gaps = np.random.default_rng(0).choice([1 / 30, 1 / 30, 1 / 15, 0.1], size=200)
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    boxes = [(100.0, 100.0, 180.0, 190.0), (600.0, 300.0, 640.0, 345.0)]
    last_full = None
    kinds = []
    for n, now in enumerate(times):
        plan = scanner.plan((480, 854, 3), float(now), [(box, float(now)) for box in boxes])
        if n % detect_every:
            assert plan is None
            kinds.append("none")
            continue
        assert plan is not None
        due = last_full is None or now - last_full >= period - 1e-9
        assert plan.full == due, (n, now, last_full)
        if plan.full:
            assert plan.regions == ()
            last_full = now
        else:
            assert [r.box for r in plan.regions] == [region_around(b, (480, 854, 3), VIDEO_MIN_FACE).box for b in boxes]
        kinds.append("full" if plan.full else "regions")
    full_times = [t for t, k in zip(times, kinds) if k == "full"]
    # Between two full passes: at most the period plus the frames that may pass before the next
    # detection frame (detect_every of the largest gap).
    assert max(np.diff(full_times)) <= period + detect_every * gaps.max() + 1e-9
    assert scanner.full_passes == len(full_times) >= 20 and scanner.region_passes == kinds.count("regions") >= 20


def test_period_falls_on_the_frame_it_names():
    """0.2 s at 25 fps is every 5th frame, though 5 / 25 - 0 in floats may fall short of 0.2."""
    scanner = FrameScanner(DETECTOR, full_every=0.2)
    plans = [scanner.plan((360, 640, 3), n / 25, []) for n in range(50)]
    assert [n for n, p in enumerate(plans) if p is not None and p.full] == list(range(0, 50, 5))
    always = FrameScanner(DETECTOR, full_every=0.0, detect_every=2)  # the old schedule
    plans = [always.plan((10, 10, 3), n / 25, []) for n in range(6)]
    assert [None if p is None else p.full for p in plans] == [True, None] * 3


def test_regions_follow_only_the_tracks_seen_since_the_last_full_pass():
    scanner = FrameScanner(DETECTOR, full_every=0.15)
    shape, kept, gone = (480, 854, 3), (100.0, 100.0, 180.0, 190.0), (600.0, 300.0, 640.0, 345.0)
    assert scanner.plan(shape, 0.0, []) == Scan(full=True)
    # `gone` was last seen before the full pass at 0.0 (its track is still open, for a second).
    plan = scanner.plan(shape, 0.04, [(kept, 0.0), (gone, -0.3)])
    assert plan == Scan(False, (region_around(kept, shape, VIDEO_MIN_FACE),))


def test_region_geometry():
    shape = (720, 1280, 3)
    region = region_around((600.0, 200.0, 700.0, 320.0), shape, VIDEO_MIN_FACE)
    x1, y1, x2, y2 = region.box
    assert x1 <= 600 and y1 <= 200 and x2 >= 700 and y2 >= 320
    assert x2 - x1 == pytest.approx(REGION_SIDE * 120, abs=2) and y2 - y1 == pytest.approx(REGION_SIDE * 120, abs=2)
    assert region.min_face == round(REGION_MIN_FACE * 100)  # of its width
    # At the frame's edge the region is cut to the frame; a small face is never searched below the
    # full pass's smallest face.
    edge = region_around((0.0, 680.0, 36.0, 716.0), shape, VIDEO_MIN_FACE)
    assert edge.box[0] == 0 and edge.box[3] == 720 and edge.min_face == VIDEO_MIN_FACE


# -- detection in regions, on real frames ----------------------------------------------------------------
def test_region_crops_equal_facenet(shared):
    """The cascade on the small, narrow pyramids of region crops (their own canvas width) is facenet's."""
    frame = read_frames(shared / "video/hamilton_clip.mp4", 1, size=(1280, 720))[0]
    regions = [region_around(f.box, frame.shape, VIDEO_MIN_FACE) for f in DETECTOR.detect(frame)]
    assert regions
    crops = [np.ascontiguousarray(frame[y1:y2, x1:x2]) for x1, y1, x2, y2 in (r.box for r in regions)]
    ours = mtcnn.detect_many(crops, [r.min_face for r in regions])
    for crop, region, found in zip(crops, regions, ours):
        assert len(found[0]) >= 1
        stats = compare.match(compare.facenet_detect(crop, region.min_face), found)
        assert compare.ok(stats), stats


@pytest.mark.parametrize(
    "video, size, every, count",
    [
        ("obama_podium.mp4", (1280, 720), 3, 12),
        ("hamilton_clip.mp4", (1280, 720), 3, 12),
        ("crowd_arcade.mp4", None, 10, 10),
    ],
)
def test_regions_agree_with_full_frame_detection_on_tracked_faces(shared, video, size, every, count):
    """Around the faces a full pass found on one frame, the next frame's regions find what a full pass on
    it finds: at least 80% of those faces (not cut by the frame) with IoU >= 0.6 and landmarks within 15%
    of the face width, median IoU 0.85, and hardly a face a full pass does not find. The tolerance is
    MTCNN's own: on the blurred, upscaled hamilton faces the full pass's box flips between a tight and a
    loose fit (IoU 0.55) from one frame to the next, and a pyramid that starts at another scale picks
    either (obama and crowd agree on every face)."""
    frames = read_frames(shared / "video" / video, count, every=every, size=size)
    tracked = agreed = extra = 0
    overlaps = []
    for before, frame in itertools.pairwise(frames):
        previous = DETECTOR.detect(before)
        full = DETECTOR.detect(frame)
        found = DETECTOR.detect_regions(frame, [region_around(f.box, frame.shape, VIDEO_MIN_FACE) for f in previous])
        height, width = frame.shape[:2]
        for face in full:
            if not any(iou(face.box, p.box) >= 0.3 for p in previous):
                continue  # not tracked: new faces are the full passes' to find
            x1, y1, x2, y2 = face.box
            if x1 <= 0 or y1 <= 0 or x2 >= width or y2 >= height:
                continue  # cut by the frame: its landmarks are guesses in both
            tracked += 1
            best = max(found, key=lambda f: iou(f.box, face.box), default=None)
            overlaps.append(0.0 if best is None else iou(best.box, face.box))
            if best is not None and overlaps[-1] >= 0.6:
                error = np.abs(np.subtract(best.landmarks, face.landmarks)).max() / face.width
                agreed += error <= 0.15
        extra += sum(not any(iou(f.box, g.box) >= 0.5 for g in full) for f in found)
    assert tracked >= 11
    assert agreed >= 0.8 * tracked and np.median(overlaps) >= 0.85, (agreed, tracked, overlaps)
    assert extra <= 0.05 * tracked, extra


class Named:
    """Tracker doubles: every face gets the same name (this is about detection, not recognition)."""

    def embed(self, image, faces):
        return np.ones((len(faces), 2), np.float32)

    def decide(self, vectors):
        return [("someone", 0.99) for _ in vectors]


def test_face_entering_mid_clip_is_found_within_a_period(shared):
    """Black frames, then the obama clip sliding in from the left (a panning crop): the face is tracked
    no later than one full-pass period after a full pass on every frame first finds it, and from then on
    regions keep finding it on nearly every frame."""
    fps, period = 30.0, 0.15
    source = read_frames(shared / "video/obama_podium.mp4", 40)
    height, width = source[0].shape[:2]
    frames = [np.zeros_like(source[0]) for _ in range(7)]
    for i, image in enumerate(source):  # the picture's right part enters first, 30 px a frame
        shift = max(0, width - 40 - 30 * i)
        moved = np.zeros_like(image)
        moved[:, shift:] = image[:, : width - shift]
        frames.append(moved)
    first_full = next(i for i, image in enumerate(frames) if DETECTOR.detect(image))
    scanner = FrameScanner(DETECTOR, full_every=period)
    tracker = Tracker(Named().embed, Named().decide)
    results = list(watch((Frame(i, i / fps, image) for i, image in enumerate(frames)), scanner, tracker))
    seen = [i for i, r in enumerate(results[:-1]) if r.faces]
    assert seen and first_full <= seen[0] <= first_full + round(period * fps) + 1
    after = len(frames) - seen[0]
    assert len([i for i in seen if i >= seen[0]]) >= 0.9 * after
    assert scanner.region_passes >= 0.6 * len(frames)  # found between full passes, not only by them
    assert {f.name for r in results for f in r.faces} == {"someone"}
