"""Faces in a live camera, a video file or a network stream: capture, tracking, voting, events.

What runs when (see the README for what it costs):
- every frame: read (a capture thread keeps only the newest frame of a live source, so latency never
  grows), match the current face boxes to tracks;
- every `detect_every`-th frame: MTCNN (`regions.FrameScanner`): on the whole frame every few tenths of a
  second, its image pyramid starting at 12/min_face of the frame (a 40 px minimum face: 30% size and
  below), so faces of 50 px in 1280x720 are still found — quarter-size detection, the usual webcam
  recipe, loses them; in between only around the tracked faces, at a scale set by each face's size;
- per track, not per frame: a few quick embeddings when it appears, then one re-check a second; its name
  is the majority vote over its recent embeddings, so names do not flicker between frames.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .decision import UNKNOWN
from .detect import Detector, Face, iou
from .errors import InputError, Interrupted, NoFaceError, SourceError, StreamLostError
from .regions import FrameScanner
from .vectors import normalise

PENDING = "…"


def _is_live(source: str) -> bool:
    return source.isdigit() or "://" in source


def _open(source: str, opener: Callable[..., Any]) -> Any:
    """An opened capture or None; OpenCV's own complaints about a missing camera stay quiet."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        capture = opener(int(source) if source.isdigit() else source)
    except cv2.error:
        capture = None
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if capture is None or not capture.isOpened():
        return None
    return capture


@dataclass
class Frame:
    index: int
    time: float  # seconds: video time for a file, since start for a live source
    image: np.ndarray  # RGB uint8


class FrameSource:
    """Frames of a camera index ("0"), a video file, or a stream URL (rtsp://, http://...).

    A live source is read by a thread that keeps only the newest frame; when it fails, the thread
    reconnects with growing pauses and gives up after `reconnect_timeout` seconds (StreamLostError).
    A file is read as fast as it can be processed (a thread decodes a few frames ahead), or paced at its
    own frame rate with `realtime` (frames are skipped when processing falls behind).
    """

    def __init__(
        self,
        source: str,
        *,
        realtime: bool = False,
        reconnect_timeout: float = 30.0,
        backoff: tuple[float, float] = (0.5, 8.0),
        opener: Callable = cv2.VideoCapture,
        on_status: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.source = str(source)
        self.live = _is_live(self.source)
        self.realtime = realtime
        self.reconnect_timeout = reconnect_timeout
        self.backoff = backoff
        self.opener = opener
        self.on_status = on_status
        self._capture = _open(self.source, opener)
        if self._capture is None:
            raise SourceError(f"cannot open video source {self.source}: check the camera index, file path or URL")
        fps = self._capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps if 1.0 <= fps <= 240.0 else 30.0
        self._latest: tuple[int, float, np.ndarray] | None = None
        self._error: str | None = None
        self._done = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._ahead: queue.Queue[Frame | None] = queue.Queue(maxsize=4)

    # -- live sources ------------------------------------------------------------------------------
    def _reader(self) -> None:
        start, index, lost_since = time.monotonic(), 0, None
        pause = self.backoff[0]
        while not self._done.is_set():
            ok, frame = self._capture.read() if self._capture is not None else (False, None)
            if ok and frame is not None:
                lost_since, pause = None, self.backoff[0]
                with self._cond:
                    self._latest = (index, time.monotonic() - start, frame)
                    self._cond.notify_all()
                index += 1
                continue
            now = time.monotonic()
            if lost_since is None:
                lost_since = now
                self.on_status(f"video source {self.source} stopped sending frames; reconnecting")
            if now - lost_since > self.reconnect_timeout:
                with self._cond:
                    self._error = (
                        f"video source {self.source} lost for {self.reconnect_timeout:.0f} s; giving up "
                        "(check the camera or network, then start again)"
                    )
                    self._cond.notify_all()
                return
            if self._capture is not None:
                self._capture.release()
            self._done.wait(pause)
            self._capture = _open(self.source, self.opener)
            if self._capture is not None:
                self.on_status(f"video source {self.source} reconnected")
            pause = min(pause * 2, self.backoff[1])

    def _live_frames(self) -> Iterator[Frame]:
        self._thread = threading.Thread(target=self._reader, name="facerec-capture", daemon=True)
        self._thread.start()
        seen = -1
        while True:
            with self._cond:
                while (self._latest is None or self._latest[0] == seen) and self._error is None:
                    self._cond.wait(0.5)
                if self._error is not None:
                    raise StreamLostError(self._error)
                assert self._latest is not None
                index, when, frame = self._latest
            seen = index
            yield Frame(index, when, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))

    # -- files -------------------------------------------------------------------------------------
    def _paced_frames(self) -> Iterator[Frame]:
        start: float | None = None  # the pacing clock starts once the first frame is processed (models load on it)
        index = 0
        while True:
            if start is not None:  # skip what we are late for, wait for what is early
                due = start + index / self.fps
                while time.monotonic() - due > 1.0 / self.fps and self._capture.grab():
                    index += 1
                    due = start + index / self.fps
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            ok, frame = self._capture.read()
            if not ok or frame is None:
                return
            yield Frame(index, index / self.fps, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if start is None:
                start = time.monotonic() - index / self.fps
            index += 1

    def _read_ahead(self) -> None:
        index = 0
        while not self._done.is_set():
            ok, frame = self._capture.read()
            item = Frame(index, index / self.fps, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)) if ok else None
            while not self._done.is_set():
                try:
                    self._ahead.put(item, timeout=0.1)
                    break
                except queue.Full:
                    pass
            if item is None:
                return
            index += 1

    def _fast_frames(self) -> Iterator[Frame]:
        """Every frame of a file, decoded by a thread a few frames ahead of the caller (OpenCV releases
        the GIL): decoding 1920x1080 is a tenth of the time a frame takes, and the other core is free."""
        self._thread = threading.Thread(target=self._read_ahead, name="facerec-decode", daemon=True)
        self._thread.start()
        while (item := self._ahead.get()) is not None:
            yield item

    def __iter__(self) -> Iterator[Frame]:
        if self.live:
            return self._live_frames()
        return self._paced_frames() if self.realtime else self._fast_frames()

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._capture is not None:
            self._capture.release()


@dataclass
class Track:
    id: int
    face: Face
    first_seen: float
    last_seen: float
    votes: deque = field(default_factory=lambda: deque(maxlen=9))
    best: dict[str, float] = field(default_factory=dict)  # best similarity per name voted for
    name: str = PENDING
    similarity: float | None = None
    vector_sum: np.ndarray | None = None  # the track's embeddings, summed: its mean is what is named
    embeddings: int = 0
    last_embedded: float = -1e9
    announced: bool = False

    def vote(self, name: str, similarity: float) -> None:
        """Majority over the recent votes; the current name keeps a tie, so names do not flicker."""
        self.votes.append(name)
        self.best[name] = max(similarity, self.best.get(name, -1.0))
        counts = Counter(self.votes)
        top = max(counts.values())
        if counts.get(self.name, 0) < top:
            self.name = next(n for n, c in counts.most_common() if c == top)
        self.similarity = self.best.get(self.name)

    def event(self, kind: str) -> dict:
        return {
            "event": kind,
            "track": self.id,
            "name": self.name if self.name != PENDING else UNKNOWN,
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "first_seen": round(self.first_seen, 3),
            "last_seen": round(self.last_seen, 3),
        }


@dataclass
class TrackedFace:
    """A face of one frame: the box the last detection saw and its track's current name."""

    track: int
    box: list[float]
    name: str
    similarity: float | None


@dataclass
class FrameResult:
    index: int
    time: float
    faces: list[TrackedFace]
    events: list[dict[str, Any]]
    image: np.ndarray = field(repr=False)
    # The last result of a stream is no frame: it carries the leave events of the tracks still open,
    # and whether the stream ended because of Ctrl-C.
    end: bool = False
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame": self.index,
            "time": round(self.time, 3),
            "faces": [asdict(f) for f in self.faces],
            "events": self.events,
        }


@dataclass
class WatchSummary:
    """What a watch run saw: its `--json` last line, and what Ctrl-C reports."""

    frames: int
    seconds: float
    fps: float
    faces: int
    tracks: int
    people: dict[str, float]
    unknown_tracks: int

    def to_dict(self) -> dict[str, Any]:
        return {"summary": asdict(self)}


class Tracker:
    """Follows faces across frames by box overlap and names each track by voting over its embeddings.

    embed(image, faces) gives unit vectors; decide(vectors) gives (name or 'unknown', similarity) each.
    A new track is embedded `quick_votes` times `quick_interval` apart, then every `recheck_interval`: a
    face whose first embedding is too blurred to name gets its second chance 0.1 s later (at 0.15 s, the
    time to a name in bench/stream.py reached 371 ms on one of 8 leads).
    """

    def __init__(
        self,
        embed: Callable[[np.ndarray, list[Face]], np.ndarray],
        decide: Callable[[np.ndarray], list[tuple[str, float]]],
        *,
        max_missing: float = 1.0,
        quick_votes: int = 3,
        quick_interval: float = 0.1,
        recheck_interval: float = 1.0,
        min_iou: float = 0.3,
    ) -> None:
        self.embed = embed
        self.decide = decide
        self.max_missing = max_missing
        self.quick_votes = quick_votes
        self.quick_interval = quick_interval
        self.recheck_interval = recheck_interval
        self.min_iou = min_iou
        self.tracks: dict[int, Track] = {}
        self.ended: list[Track] = []
        self._next_id = 1

    def update(self, image: np.ndarray, now: float, faces: list[Face] | None) -> list[dict]:
        """faces None: no detection on this frame (tracks keep their boxes). Returns the events."""
        events: list[dict] = []
        if faces is not None:
            unmatched = set(self.tracks)
            pairs = sorted(
                ((iou(t.face.box, f.box), tid, i) for tid, t in self.tracks.items() for i, f in enumerate(faces)),
                reverse=True,
            )
            used: set[int] = set()
            for overlap, tid, i in pairs:
                if overlap < self.min_iou:
                    break
                if tid in unmatched and i not in used:
                    self.tracks[tid].face, self.tracks[tid].last_seen = faces[i], now
                    unmatched.discard(tid)
                    used.add(i)
            for i, face in enumerate(faces):
                if i not in used:
                    self.tracks[self._next_id] = Track(self._next_id, face, now, now)
                    self._next_id += 1
        for tid in [tid for tid, t in self.tracks.items() if now - t.last_seen > self.max_missing]:
            track = self.tracks.pop(tid)
            if track.announced:
                events.append(track.event("leave"))
            self.ended.append(track)
        due = [
            t
            for t in self.tracks.values()
            if t.last_seen == now
            and now - t.last_embedded
            >= (self.quick_interval if t.embeddings < self.quick_votes else self.recheck_interval)
        ]
        if due:
            for track, vector in zip(due, self.embed(image, [t.face for t in due])):
                # Each vote names the mean of the track's embeddings so far: one blurred or turned
                # frame cannot swing it, and more frames of the same face sharpen it.
                track.vector_sum = vector if track.vector_sum is None else track.vector_sum + vector
                name, similarity = self.decide(normalise(track.vector_sum[None]))[0]
                track.vote(name, similarity)
                track.embeddings += 1
                track.last_embedded = now
                if not track.announced:
                    track.announced = True
                    events.append(track.event("appear"))
        return events

    def finish(self) -> list[dict]:
        """End every track (the stream ended): their leave events."""
        events = [t.event("leave") for t in self.tracks.values() if t.announced]
        self.ended.extend(self.tracks.values())
        self.tracks.clear()
        return events


def one_name_per_person(faces: list[TrackedFace]) -> None:
    """Within one frame a person is in one place: when two tracks carry the same name, the better match
    keeps it and the other shows 'unknown' until its own votes settle (in place)."""
    best: dict[str, TrackedFace] = {}
    for face in sorted(faces, key=lambda f: -(f.similarity or 0.0)):
        if face.name in (UNKNOWN, PENDING):
            continue
        if face.name in best:
            face.name = UNKNOWN
        else:
            best[face.name] = face


def watch(frames: Iterable[Frame], scanner: FrameScanner, tracker: Tracker) -> Generator[FrameResult, None, None]:
    """Per-frame results (faces with their track's current name, and events) for any frame iterable; the
    scanner decides what of each frame is searched for faces."""
    last, interrupted, detected_at = None, False, None
    try:
        for frame in frames:
            faces = scanner.scan(frame.image, frame.time, [(t.face.box, t.last_seen) for t in tracker.tracks.values()])
            detected_at = frame.time if faces is not None else detected_at
            events = tracker.update(frame.image, frame.time, faces)
            # Only faces the last detection saw: a track kept alive to re-find its face is not drawn.
            shown = [
                TrackedFace(
                    t.id,
                    [round(v, 1) for v in t.face.box],
                    t.name,
                    None if t.similarity is None else round(t.similarity, 4),
                )
                for t in tracker.tracks.values()
                if t.last_seen == detected_at
            ]
            one_name_per_person(shown)
            last = frame
            yield FrameResult(frame.index, frame.time, shown, events, frame.image)
    except KeyboardInterrupt:
        interrupted = True  # still close the open tracks, so every appear event gets its leave
    if last is not None:
        yield FrameResult(last.index, last.time, [], tracker.finish(), last.image, end=True, interrupted=interrupted)
    elif interrupted:
        raise KeyboardInterrupt


_TITLE = "facerec"
# Tried in a child process: the Qt of the Linux OpenCV wheels aborts the whole process when it cannot
# reach the display (a stale DISPLAY after ssh or tmux, missing X libraries), which no exception catches.
_WINDOW_PROBE = """
import sys
import cv2
try:
    cv2.namedWindow("facerec-probe", cv2.WINDOW_AUTOSIZE)
except cv2.error as exc:  # a build without GUI, or GTK's way of saying it cannot reach the display
    sys.exit(3 if "not implemented" in str(exc) else str(exc).strip())
cv2.destroyAllWindows()
"""
_NO_GUI = 3


def _window_wanted() -> bool:
    """True when a display is set and a window opens on it; False without a display (the run goes on
    headless); InputError when a display is set but no window can be opened there."""
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not display:
        return False
    try:
        probe = subprocess.run([sys.executable, "-c", _WINDOW_PROBE], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        reason = "it did not answer within 60 s"
    else:
        if probe.returncode == 0:
            return True
        if probe.returncode == _NO_GUI:
            raise InputError(
                "cannot open a window: this OpenCV has no GUI support (opencv-python-headless?); "
                "install opencv-python, or use --no-window"
            )
        lines = [line.strip() for line in probe.stderr.splitlines() if line.strip() and "font" not in line.lower()]
        reason = lines[0] if lines else f"the window test ended with code {probe.returncode}"
    raise InputError(f"cannot open a window on display {display}: {reason}; check DISPLAY, or use --no-window")


def _window_quit() -> bool:
    """`q` or Esc pressed, or the window closed with its title-bar button (which would otherwise just
    reopen it on the next frame): Qt forgets a closed window, other back ends report it hidden."""
    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
        return True
    try:
        return cv2.getWindowProperty(_TITLE, cv2.WND_PROP_VISIBLE) < 1
    except cv2.error:
        return True


RATE_COLOUR = (255, 255, 0)  # RGB yellow: reads on faces, walls and the dark


def draw_rate(image: np.ndarray, rate: float) -> None:
    """The frame rate in the top left corner of an RGB frame, in place."""
    cv2.putText(image, f"{rate:.1f} fps", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, RATE_COLOUR, 2, cv2.LINE_AA)


def run_watch(
    results: Generator[FrameResult, None, None],
    fps: float,
    *,
    window: bool = True,
    record: Path | None = None,
    events_file: Path | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> WatchSummary:
    """Show, record and log a stream of results; returns the summary. Ctrl-C, `q` and closing the window
    end it cleanly: the recording is finalised and every track that appeared gets its leave event."""
    from .annotate import draw_matches

    window = window and _window_wanted()
    writer, events_out = None, None
    if events_file is not None:
        events_out = open(events_file, "a", encoding="utf-8")
    frames, faces, started = 0, 0, time.monotonic()
    shown: deque[float] = deque(maxlen=30)  # when the last frames were drawn: the rate shown is the current one
    people: dict[str, float] = {}
    unknown_tracks = tracks = 0
    interrupted = quit_asked = False

    def handle(result: FrameResult) -> bool:
        nonlocal frames, faces, writer, unknown_tracks, tracks, quit_asked
        for event in result.events:
            if events_out is not None:
                events_out.write(json.dumps(event, ensure_ascii=False) + "\n")
                events_out.flush()
            if event["event"] == "leave":
                tracks += 1
                if event["name"] == UNKNOWN:
                    unknown_tracks += 1
                else:
                    people[event["name"]] = people.get(event["name"], 0.0) + event["last_seen"] - event["first_seen"]
        if result.end:
            return True
        frames += 1
        faces += len(result.faces)
        if on_frame is not None:
            on_frame(result)
        if record is not None or window:
            shown.append(time.monotonic())
            drawn = draw_matches(result.image, result.faces)
            if len(shown) > 1:
                draw_rate(drawn, (len(shown) - 1) / max(shown[-1] - shown[0], 1e-6))
            bgr = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
            if record is not None:
                if writer is None:
                    mp4v = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]
                    writer = cv2.VideoWriter(str(record), mp4v, fps, (bgr.shape[1], bgr.shape[0]))
                    if not writer.isOpened():
                        raise InputError(f"cannot write video {record}; check the folder and use a .mp4 name")
                writer.write(bgr)
            if window:
                if frames == 1:  # the window is the frame: no toolbar or status bar around it
                    cv2.namedWindow(_TITLE, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
                cv2.imshow(_TITLE, bgr)
                quit_asked = _window_quit()
                return quit_asked
        return False

    def close_tracks() -> None:
        """The generator's last word, asked for with the KeyboardInterrupt it handles: the leave events."""
        try:
            handle(results.throw(KeyboardInterrupt))
        except (KeyboardInterrupt, StopIteration):
            pass

    try:
        try:
            for result in results:
                if handle(result):
                    interrupted = result.interrupted  # Ctrl-C reached the generator first
                    break
        except KeyboardInterrupt:
            interrupted = True
            close_tracks()
        if quit_asked:
            close_tracks()
    finally:
        if writer is not None:
            writer.release()
        if events_out is not None:
            events_out.close()
        if window:
            cv2.destroyAllWindows()
    seconds = time.monotonic() - started
    summary = WatchSummary(
        frames,
        round(seconds, 2),
        round(frames / max(seconds, 1e-6), 2),
        faces,
        tracks,
        {name: round(t, 2) for name, t in sorted(people.items())},
        unknown_tracks,
    )
    if interrupted:
        raise Interrupted("interrupted: the recording and the events file are complete", summary)
    return summary


def enrollment_problem(image: np.ndarray, faces: list[Face], min_width: int = 80) -> str | None:
    """Why this frame is not good enough to enroll from, or None.

    Judged on the one face in view: big enough (min_width px), sharp (variance of the Laplacian of the
    face region, which blur and motion flatten) and frontal (nose midway between the eyes, eye line near
    level), since a turned or blurred face makes a poor reference.
    """
    if len(faces) != 1:
        return "no face in view" if not faces else f"{len(faces)} faces in view: only the person to enroll"
    face = faces[0]
    if face.score < 0.95:
        return "face not clearly visible"
    if face.width < min_width:
        return f"face too small ({face.width:.0f} px wide, at least {min_width}): come closer"
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    region = cv2.cvtColor(image[max(y1, 0) : y2, max(x1, 0) : x2], cv2.COLOR_RGB2GRAY)
    region = cv2.resize(region, (128, 128), interpolation=cv2.INTER_AREA)
    if cv2.Laplacian(region, cv2.CV_64F).var() < 40.0:
        return "image blurred: hold still"
    (lx, ly), (rx, ry), (nx, _), _, _ = face.landmarks
    eye_gap = rx - lx
    if eye_gap <= 0 or not 0.3 <= (nx - lx) / eye_gap <= 0.7 or abs(ry - ly) > 0.25 * eye_gap:
        return "face turned or tilted: look at the camera"
    return None


def collect_enrollment_frames(
    frames: Iterable[Frame],
    detector: Detector,
    *,
    count: int = 5,
    spacing: float = 0.5,
    timeout: float = 30.0,
    min_width: int = 80,
    on_status: Callable[[str], None] = lambda message: None,
) -> list[tuple[Frame, Face]]:
    """`count` good frames of the single face in view, at least `spacing` seconds apart."""
    chosen: list[tuple[Frame, Face]] = []
    problems: Counter[str] = Counter()
    start = None
    for frame in frames:
        start = frame.time if start is None else start
        if frame.time - start > timeout:
            break
        if chosen and frame.time - chosen[-1][0].time < spacing:
            continue
        faces = detector.detect(frame.image)
        problem = enrollment_problem(frame.image, faces, min_width)
        if problem is None:
            chosen.append((frame, faces[0]))
            on_status(f"captured {len(chosen)} of {count}")
            if len(chosen) == count:
                break
        else:
            problems[problem] += 1
    if len(chosen) < count:
        worst = problems.most_common(1)[0][0] if problems else "no frames"
        raise NoFaceError(f"only {len(chosen)} of {count} good frames in {timeout:.0f} s; most often: {worst}")
    return chosen
