"""Video: the tracker and its votes, the capture's reconnect path, and real clips end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facerec.cli import main
from facerec.detect import Face
from facerec.errors import SourceError, StreamLostError
from facerec.stream import FrameSource, Tracker, enrollment_problem

EYES_LEVEL = ((40.0, 50.0), (80.0, 50.0), (60.0, 70.0), (45.0, 90.0), (75.0, 90.0))


def face_at(x: float, y: float, size: float = 100.0, score: float = 0.99) -> Face:
    pts = tuple((x + px * size / 120, y + py * size / 120) for px, py in EYES_LEVEL)
    return Face((x, y, x + size, y + size), score, pts)


class Scripted:
    """embed() and decide() doubles: decisions come from a list, one per embedding."""

    def __init__(self, names):
        self.names = list(names)
        self.calls = 0
        self.decided: list[np.ndarray] = []

    def embed(self, image, faces):
        self.calls += len(faces)
        return np.tile(
            np.array([[1.0, 0.0]], np.float32) if self.calls % 2 else np.array([[0.0, 1.0]], np.float32),
            (len(faces), 1),
        )

    def decide(self, vectors):
        self.decided.append(vectors)
        return [(self.names.pop(0) if self.names else "alice", 0.95) for _ in vectors]

    def tracker(self, **kw) -> Tracker:
        return Tracker(self.embed, self.decide, **kw)


def test_tracker_follows_a_face_and_votes_without_flicker():
    namer = Scripted(["alice", "bob", "alice", "alice", "bob", "alice"])
    tracker = namer.tracker(quick_interval=0.0, recheck_interval=0.0)
    image = np.zeros((10, 10, 3), np.uint8)
    events = []
    names = []
    for step in range(6):
        events += tracker.update(image, step * 0.1, [face_at(100 + step * 3, 100)])  # moving slowly
        names.append(next(iter(tracker.tracks.values())).name)
    assert len(tracker.tracks) == 1 and next(iter(tracker.tracks)) == 1
    assert names == ["alice"] * 6  # a minority 'bob' vote never flips the name
    assert [e["event"] for e in events] == ["appear"]
    # What is named is the mean of the track's embeddings so far (alternating [1, 0] and [0, 1] here).
    assert np.allclose(namer.decided[1], [[2**-0.5, 2**-0.5]]) and np.allclose(
        namer.decided[2], [[2 / 5**0.5, 1 / 5**0.5]]
    )
    # The face leaves: after max_missing seconds the track ends with its leave event.
    events = tracker.update(image, 0.5, [])
    assert events == []
    events = tracker.update(image, 2.0, [])
    assert [(e["event"], e["name"], e["track"]) for e in events] == [("leave", "alice", 1)]
    assert events[0]["first_seen"] == 0.0 and events[0]["last_seen"] == pytest.approx(0.5)


def test_tracker_embeds_a_few_times_not_every_frame():
    namer = Scripted([])
    tracker = namer.tracker(quick_votes=3, quick_interval=0.15, recheck_interval=1.0)
    image = np.zeros((10, 10, 3), np.uint8)
    for frame in range(75):  # 3 s at 25 fps
        tracker.update(image, frame / 25, [face_at(100, 100)])
    assert 3 + 2 <= namer.calls <= 3 + 3  # three quick votes, then about one a second


def test_two_faces_two_tracks_and_new_track_after_a_gap():
    tracker = Scripted(["alice", "bob"] + ["alice", "bob"] * 10).tracker(quick_interval=0.0)
    image = np.zeros((10, 10, 3), np.uint8)
    tracker.update(image, 0.0, [face_at(0, 0), face_at(300, 0)])
    tracker.update(image, 0.1, [face_at(302, 0), face_at(2, 0)])
    assert sorted(t.name for t in tracker.tracks.values()) == ["alice", "bob"]
    assert {t.id: t.face.box[0] for t in tracker.tracks.values()} == {1: 2, 2: 302}


class FlakyCapture:
    """A capture double that delivers frames, then fails, as a camera that is unplugged."""

    opened = 0

    def __init__(self, source, frames_before_failure=5, reopenable=True):
        type(self).opened += 1
        self.left = frames_before_failure
        self.ok = type(self).opened == 1 or reopenable

    def isOpened(self):
        return self.ok

    def get(self, prop):
        return 25.0

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        time.sleep(0.005)
        return True, np.zeros((48, 64, 3), np.uint8)

    def release(self):
        pass


def test_live_source_reconnects_then_gives_up():
    FlakyCapture.opened = 0
    messages = []
    source = FrameSource(
        "rtsp://camera.invalid/stream",
        opener=lambda s: FlakyCapture(s, reopenable=True),
        reconnect_timeout=5.0,
        backoff=(0.01, 0.02),
        on_status=messages.append,
    )
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == 8:
            break
    source.close()
    assert len(frames) == 8 and FlakyCapture.opened >= 2  # frames kept coming after a reconnect
    assert any("reconnected" in m for m in messages)

    FlakyCapture.opened = 0
    source = FrameSource(
        "0",
        opener=lambda s: FlakyCapture(s, reopenable=False),
        reconnect_timeout=0.3,
        backoff=(0.05, 0.1),
        on_status=messages.append,
    )
    started = time.monotonic()
    with pytest.raises(StreamLostError, match="lost for 0 s; giving up"):
        for _ in source:
            pass
    source.close()
    assert time.monotonic() - started < 5


def test_source_that_cannot_be_opened(tmp_path):
    with pytest.raises(SourceError, match="cannot open video source"):
        FrameSource(str(tmp_path / "missing.mp4"))
    result = CliRunner().invoke(
        main, ["watch", "--source", str(tmp_path / "missing.mp4"), "--gallery", str(tmp_path / "g")]
    )
    assert result.exit_code == 2 and "no gallery" in result.stderr


def test_enrollment_frame_quality():
    image = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)  # sharp texture
    assert enrollment_problem(image, [face_at(100, 100, 150)]) is None
    assert "too small" in enrollment_problem(image, [face_at(100, 100, 40)])
    assert "2 faces" in enrollment_problem(image, [face_at(0, 0, 150), face_at(200, 200, 150)])
    assert "blurred" in enrollment_problem(np.full((400, 400, 3), 128, np.uint8), [face_at(100, 100, 150)])
    turned = Face((100, 100, 250, 250), 0.99, ((150, 150), (200, 150), (205, 180), (160, 210), (200, 210)))
    assert "turned" in enrollment_problem(image, [turned])


# -- real video, offline model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video_gallery(tmp_path_factory, shared) -> Path:
    gallery = tmp_path_factory.mktemp("video") / "g"
    result = CliRunner().invoke(
        main, ["enroll", str(shared / "faces/known"), "--gallery", str(gallery), "--model", "dlib-resnet"]
    )
    assert result.exit_code == 0, result.stderr
    return gallery


def watch_json(gallery: Path, video: Path, tmp_path: Path, *extra: str):
    events = tmp_path / "events.jsonl"
    result = CliRunner().invoke(
        main,
        [
            "watch",
            "--source",
            str(video),
            "--gallery",
            str(gallery),
            "--no-window",
            "--json",
            "--events",
            str(events),
            *extra,
        ],
    )
    assert result.exit_code == 0, (result.stderr, result.exception)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    return frames, summary, [json.loads(line) for line in events.read_text().splitlines()]


def check_events_agree(events: list[dict], summary: dict) -> None:
    appears = {e["track"] for e in events if e["event"] == "appear"}
    leaves = [e for e in events if e["event"] == "leave"]
    assert appears == {e["track"] for e in leaves} and len(leaves) == summary["tracks"]
    per_name: dict[str, float] = {}
    for e in leaves:
        if e["name"] != "unknown":
            per_name[e["name"]] = per_name.get(e["name"], 0) + e["last_seen"] - e["first_seen"]
    assert {n: round(t, 2) for n, t in per_name.items()} == summary["people"]
    assert sum(e["name"] == "unknown" for e in leaves) == summary["unknown_tracks"]


def test_obama_podium(video_gallery, shared, tmp_path):
    record = tmp_path / "out.mp4"
    frames, summary, events = watch_json(
        video_gallery, shared / "video/obama_podium.mp4", tmp_path, "--record", str(record)
    )
    with_face = [f for f in frames if f["faces"]]
    named = [f for f in with_face if [x["name"] for x in f["faces"]] == ["obama"]]
    assert len(with_face) >= 0.9 * len(frames)
    assert len(named) >= 0.9 * len(with_face)
    assert {x["track"] for f in with_face for x in f["faces"]} == {1}  # one track
    assert summary["frames"] == len(frames) == 153 and list(summary["people"]) == ["obama"]
    check_events_agree(events, summary)
    import cv2

    playback = cv2.VideoCapture(str(record))
    assert playback.isOpened() and int(playback.get(cv2.CAP_PROP_FRAME_COUNT)) == 153


def test_hamilton_clip(video_gallery, shared, tmp_path):
    frames, summary, events = watch_json(video_gallery, shared / "video/hamilton_clip.mp4", tmp_path)
    assert "lin_manuel_miranda" in summary["people"]
    assert set(summary["people"]) == {"lin_manuel_miranda"}
    check_events_agree(events, summary)


def test_crowd_has_no_names(video_gallery, shared, tmp_path):
    frames, summary, events = watch_json(video_gallery, shared / "video/crowd_arcade.mp4", tmp_path)
    assert summary["people"] == {} and summary["unknown_tracks"] >= 1
    assert all(x["name"] in ("unknown", "…") for f in frames for x in f["faces"])
    check_events_agree(events, summary)


def test_enroll_at_the_camera(tmp_path, shared):
    """`watch --enroll NAME` on a video file standing in for a camera."""
    gallery = tmp_path / "g"
    result = CliRunner().invoke(
        main,
        [
            "watch",
            "--source",
            str(shared / "video/obama_podium.mp4"),
            "--enroll",
            "barack",
            "--gallery",
            str(gallery),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "barack", "faces_added": 5}
    assert "captured 5 of 5" in result.stderr
    found = CliRunner().invoke(
        main, ["identify", str(shared / "faces/known/obama/obama.jpg"), "--gallery", str(gallery), "--json"]
    )
    assert json.loads(found.stdout)["faces"][0]["name"] == "barack"
    # A clip with nobody in it cannot be enrolled from: a clear error, nothing added.
    crowd = CliRunner().invoke(
        main,
        ["watch", "--source", str(shared / "video/crowd_arcade.mp4"), "--enroll", "nobody", "--gallery", str(gallery)],
    )
    assert crowd.exit_code == 1 and "good frames" in crowd.stderr and "most often:" in crowd.stderr
    people = CliRunner().invoke(main, ["people", "--gallery", str(gallery), "--json"])
    assert json.loads(people.stdout)["people"] == [{"name": "barack", "faces": 5}]


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_leaves_complete_recording_and_events(video_gallery, shared, tmp_path, as_json):
    """Ctrl-C mid-stream: exit 130, the summary of what was seen (as JSON with --json), a complete
    recording, and every appear event closed by its leave event."""
    import os
    import signal
    import subprocess
    import sys

    import cv2

    record, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facerec.cli",
            "watch",
            "--source",
            str(shared / "video/hamilton_clip.mp4"),
            "--realtime",
            "--no-window",
            "--gallery",
            str(video_gallery),
            "--record",
            str(record),
            "--events",
            str(events),
            *(["--json"] if as_json else []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FACEREC_DOWNLOAD_URL": "http://127.0.0.1:9/"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (events.exists() and events.read_text().strip()):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    if as_json:
        printed = [json.loads(line) for line in out.splitlines()]
        summary = printed[-1]["summary"]
        assert summary["frames"] == len(printed) - 1 > 0 and all("faces" in line for line in printed[:-1])
    else:
        assert " frames in " in out and "tracks" in out
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    appears = {e["track"] for e in lines if e["event"] == "appear"}
    assert appears and appears == {e["track"] for e in lines if e["event"] == "leave"}
    playback = cv2.VideoCapture(str(record))
    assert playback.isOpened() and 10 < int(playback.get(cv2.CAP_PROP_FRAME_COUNT)) < 275
    assert playback.read()[0]


def test_window_q_quits(monkeypatch):
    """With a display, frames are shown and `q` ends the run cleanly (cv2's window calls stand in; the real
    window is tested in test_window.py)."""
    import cv2

    from facerec import stream
    from facerec.stream import FrameResult, TrackedFace, run_watch

    shown, keys = [], iter([-1, -1, ord("q")])
    monkeypatch.setattr(stream, "_window_wanted", lambda: True)
    monkeypatch.setattr(cv2, "namedWindow", lambda title, flags: shown.append("opened"))
    monkeypatch.setattr(cv2, "getWindowProperty", lambda title, prop: 1.0)
    monkeypatch.setattr(cv2, "imshow", lambda title, image: shown.append(image.shape))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: next(keys))
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: shown.append("closed"))
    image = np.zeros((48, 64, 3), np.uint8)
    face = TrackedFace(1, [1, 1, 20, 20], "alice", 0.97)
    results = (FrameResult(i, i / 25, [face], [], image) for i in range(10))
    summary = run_watch(results, 25.0, window=True)
    assert summary.frames == 3 and shown == ["opened"] + [(48, 64, 3)] * 3 + ["closed"]
