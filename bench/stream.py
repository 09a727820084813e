"""`facerec watch` on video files, through the path the CLI runs (FrameSource decoding the file,
FaceRecognizer.watch, stream.run_watch): frames per second at 1280x720 and 1920x1080, time from a face's
first appearance to its name, and what searching only around the tracked faces between full passes misses
compared with a full pass on every frame. A table and a JSON line.

    python bench/stream.py [--threads 2] [--trials 8]

Clips, written to a temporary folder and deleted after: obama_podium and hamilton_clip upscaled to
1280x720, crowd_arcade as it is (1920x1080). Gallery: obama and lin_manuel_miranda from
../shared/faces/known, dlib-resnet. Each clip is run in four modes, one after the other:

- regions: what `facerec watch` does (a full pass every Settings.watch_full_pass_s of video time, only
  around the tracked faces in between, on every --detect-every'th frame, its default);
- regions, every frame: the same with --detect-every 1;
- before: the schedule before regions, a full pass on every 2nd frame (FACEREC_WATCH_FULL_PASS=0,
  --detect-every 2), for the speed-up;
- full: a full pass on every frame, the reference for what regions miss (faces per frame, tracks never
  found, tracks named later).

Time to a name: the 1280x720 clips after `lead` black frames, played at their own frame rate (--realtime,
as a camera delivers them; late frames are skipped), from the moment the face's first frame was due to the
first result naming it; `--trials` leads spread over one full-pass period.

--threads sets torch's thread count as the CLI would find it; `facerec watch` spreads each frame's
detection over 2 threads that share them (Detector.parallel) and embeds on one fewer, leaving that one to
the capture / decoding thread (facerec/video.py).
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from _common import find_shared, print_json, print_table, set_threads

PENDING_OR_UNKNOWN = ("…", "unknown")


def write_clip(source: Path, target: Path, size: tuple[int, int] | None, lead: int = 0, limit: int = 10**6) -> Path:
    """`source` resized to `size` (None: as it is), after `lead` black frames, at most `limit` frames."""
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    writer = None
    for _ in range(limit):
        ok, frame = capture.read()
        if not ok:
            break
        if size is not None:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        if writer is None:
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame.shape[1::-1])
            for _ in range(lead):
                writer.write(np.zeros_like(frame))
        writer.write(frame)
    assert writer is not None, source
    writer.release()
    return target


@dataclass
class Run:
    fps: float
    frames: list[tuple[float, list]]  # per frame: video time, its TrackedFaces
    named_at: float | None  # wall time of the first result naming a face
    clock: float  # wall time at which the source's frame 0 was due (its pacing clock's start)
    full_ms: float
    region_ms: float
    full_passes: int
    region_passes: int


class Passes:
    """Times Detector.detect (a full pass) and Detector.detect_regions while a run lasts."""

    def __init__(self) -> None:
        self.seconds = {"detect": 0.0, "detect_regions": 0.0}
        self.calls = {"detect": 0, "detect_regions": 0}

    @contextmanager
    def timing(self) -> Iterator[None]:
        from facerec.detect import Detector

        originals = {name: getattr(Detector, name) for name in self.seconds}

        def timed(name, fn):
            def call(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.seconds[name] += time.perf_counter() - start
                    self.calls[name] += 1

            return call

        for name, fn in originals.items():
            setattr(Detector, name, timed(name, fn))
        try:
            yield
        finally:
            for name, fn in originals.items():
                setattr(Detector, name, fn)

    def ms(self, name: str) -> float:
        return 1000 * self.seconds[name] / max(self.calls[name], 1)


def run(rec, path: Path, detect_every: int, realtime: bool = False) -> Run:
    """One `facerec watch --source path --no-window` run, as the CLI makes it."""
    from facerec.stream import FrameSource, run_watch

    class Stamped(FrameSource):
        """The CLI's FrameSource, noting when its pacing clock started: with --realtime, once the first frame
        has been processed (the models load on it), which is when the caller asks for the next one."""

        clock: float | None = None

        def __iter__(self):
            for frame in super().__iter__():
                yield frame
                self.clock = self.clock or time.monotonic() - frame.time

    frames: list[tuple[float, list]] = []
    named_at: list[float] = []

    def on_frame(result) -> None:
        frames.append((result.time, result.faces))
        if not named_at and any(f.name not in PENDING_OR_UNKNOWN for f in result.faces):
            named_at.append(time.monotonic())

    source = Stamped(str(path), realtime=realtime)
    passes = Passes()
    with passes.timing():
        summary = run_watch(rec.watch(source, detect_every=detect_every), source.fps, window=False, on_frame=on_frame)
    assert source.clock is not None
    return Run(
        summary.fps,
        frames,
        named_at[0] if named_at else None,
        source.clock,
        passes.ms("detect"),
        passes.ms("detect_regions"),
        passes.calls["detect"],
        passes.calls["detect_regions"],
    )


def misses(reference: Run, candidate: Run) -> dict:
    """What `candidate` misses of `reference` on the same frames: faces per frame, reference faces with no
    candidate face on them (IoU 0.5), reference tracks never found, and tracks named later (and by how
    much: the first frame the candidate shows the reference track's name on its face)."""
    from facerec.detect import iou

    assert len(reference.frames) == len(candidate.frames)
    lost_faces = 0
    tracks: dict[int, dict] = {}
    for (when, ref_faces), (_, faces) in zip(reference.frames, candidate.frames):
        for ref in ref_faces:
            hits = [f for f in faces if iou(f.box, ref.box) >= 0.5]
            lost_faces += not hits
            track = tracks.setdefault(ref.track, {"found": False, "named": None, "candidate_named": None})
            track["found"] |= bool(hits)
            if ref.name not in PENDING_OR_UNKNOWN and track["named"] is None:
                track["named"], track["name"] = when, ref.name
            if (
                track["named"] is not None
                and track["candidate_named"] is None
                and any(f.name == track["name"] for f in hits)
            ):
                track["candidate_named"] = when
    named = [t for t in tracks.values() if t["named"] is not None]
    delays = [t["candidate_named"] - t["named"] for t in named if t["candidate_named"] is not None]
    ref_total = sum(len(f) for _, f in reference.frames)
    return {
        "faces_per_frame_full": round(ref_total / len(reference.frames), 2),
        "faces_per_frame_regions": round(sum(len(f) for _, f in candidate.frames) / len(candidate.frames), 2),
        "full_faces_not_found": lost_faces,
        "full_faces_not_found_share": round(lost_faces / max(ref_total, 1), 4),
        "tracks": len(tracks),
        "tracks_missed": sum(not t["found"] for t in tracks.values()),
        "named_tracks": len(named),
        "named_late": sum(d > 0 for d in delays),
        "named_late_max_ms": round(1000 * max(delays, default=0.0)),
        "named_never": len(named) - len(delays),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8, help="time-to-name trials per 1280x720 clip and mode")
    args = parser.parse_args()
    machine = set_threads(args.threads)
    machine["load_average"] = [round(v, 2) for v in os.getloadavg()]

    from facerec import FaceRecognizer
    from facerec.config import Settings

    shared = find_shared()
    temp = tempfile.TemporaryDirectory()
    work = Path(temp.name)
    known = work / "known"
    known.mkdir()
    (known / "obama").symlink_to(shared / "faces/known/obama")
    (known / "lin_manuel_miranda.png").symlink_to(shared / "faces/known/lin_manuel_miranda.png")
    FaceRecognizer(work / "g", model="dlib-resnet", device="cpu").enroll(known)
    settings = Settings.from_env()
    period = settings.watch_full_pass_s
    default_every = inspect.signature(FaceRecognizer.watch).parameters["detect_every"].default
    every_full_pass = replace(settings, watch_full_pass_s=0.0)
    modes = {  # name: (recognizer, detect_every)
        "regions": (FaceRecognizer(work / "g", device="cpu", settings=settings), default_every),
        "regions, every frame": (FaceRecognizer(work / "g", device="cpu", settings=settings), 1),
        "before": (FaceRecognizer(work / "g", device="cpu", settings=every_full_pass), 2),
        "full": (FaceRecognizer(work / "g", device="cpu", settings=every_full_pass), 1),
    }
    video = shared / "video"
    clips = {
        "obama 1280x720": write_clip(video / "obama_podium.mp4", work / "obama720.mp4", (1280, 720)),
        "hamilton 1280x720": write_clip(video / "hamilton_clip.mp4", work / "hamilton720.mp4", (1280, 720)),
        "crowd 1920x1080": video / "crowd_arcade.mp4",
    }
    warm = write_clip(video / "obama_podium.mp4", work / "warm.mp4", (1280, 720), limit=10)
    for rec, every in modes.values():
        run(rec, warm, every)

    rows: list[tuple[str, str]] = []
    figures: dict = {"watch_full_pass_s": period, "clips": {}}
    for label, path in clips.items():
        runs = {mode: run(rec, path, every) for mode, (rec, every) in modes.items()}
        before, full = runs["before"], runs["full"]
        figures["clips"][label] = {
            "frames": len(full.frames),
            "fps": {mode: round(r.fps, 1) for mode, r in runs.items()},
            "full_pass_ms": round(full.full_ms, 1),
        }
        rows.append(
            (
                f"{label}: frames/s",
                ", ".join(f"{mode} {r.fps:.1f}" for mode, r in runs.items()) + f" ({len(full.frames)} frames)",
            )
        )
        for mode in ("regions", "regions, every frame"):
            r = runs[mode]
            missed = misses(full, r)
            figures["clips"][label][mode] = {
                "speedup_vs_before": round(r.fps / before.fps, 2),
                "region_pass_ms": round(r.region_ms, 1),
                "passes": {"full": r.full_passes, "regions": r.region_passes},
                "misses": missed,
            }
            rows += [
                (
                    f"{label}, {mode}",
                    f"x{r.fps / before.fps:.2f} before; {r.full_passes} full passes ({full.full_ms:.0f} ms each), "
                    f"{r.region_passes} around tracks ({r.region_ms:.1f} ms each)",
                ),
                (
                    "    faces/frame",
                    f"{missed['faces_per_frame_regions']} vs {missed['faces_per_frame_full']} with a full pass every "
                    f"frame; {missed['full_faces_not_found']} of its faces not found "
                    f"({100 * missed['full_faces_not_found_share']:.1f}%)",
                ),
                (
                    "    tracks",
                    f"{missed['tracks_missed']} of {missed['tracks']} never found; {missed['named_late']} of "
                    f"{missed['named_tracks']} named tracks named later (at most {missed['named_late_max_ms']} ms), "
                    f"{missed['named_never']} never",
                ),
            ]

    # Time to a name, as from a camera: lead black frames spread over one full-pass period.
    fps30 = cv2.VideoCapture(str(video / "obama_podium.mp4")).get(cv2.CAP_PROP_FPS)
    leads = [15 + round(i * max(period, 1 / fps30) * fps30 / args.trials) for i in range(args.trials)]
    figures["time_to_name_ms"] = {}
    for label, source in (("obama 1280x720", "obama_podium.mp4"), ("hamilton 1280x720", "hamilton_clip.mp4")):
        paths = {
            lead: write_clip(video / source, work / f"lead{lead}-{source}", (1280, 720), lead=lead, limit=45)
            for lead in sorted(set(leads))
        }
        fps = cv2.VideoCapture(str(next(iter(paths.values())))).get(cv2.CAP_PROP_FPS)
        latencies: dict[str, list[float | None]] = {"regions": [], "regions, every frame": [], "before": []}
        for lead in leads:
            for mode in latencies:
                rec, every = modes[mode]
                r = run(rec, paths[lead], every, realtime=True)
                appeared = r.clock + lead / fps
                latencies[mode].append(None if r.named_at is None else 1000 * (r.named_at - appeared))
        figures["time_to_name_ms"][label] = {
            mode: [None if v is None else round(v) for v in values] for mode, values in latencies.items()
        }
        for mode, values in latencies.items():
            got = [v for v in values if v is not None]
            rows.append(
                (
                    f"{label}: time to a name ({mode})",
                    f"median {statistics.median(got):.0f} ms, worst {max(got):.0f} ms over {len(got)} leads"
                    + (f", {len(values) - len(got)} not named within 1.5 s" if len(got) < len(values) else "")
                    if got
                    else "never named within 1.5 s",
                )
            )
    # Why full passes keep a 40 px smallest face: what reduced-size detection loses on the crowd clip at
    # 1280x720 (faces per frame, every 10th frame).
    from facerec.detect import Detector
    from facerec.video import VIDEO_MIN_FACE

    capture, crowd = cv2.VideoCapture(str(video / "crowd_arcade.mp4")), []
    while len(crowd) < 10:
        for _ in range(10):
            ok, frame = capture.read()
        if not ok:
            break
        crowd.append(cv2.cvtColor(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    found = {}
    for name, detector, shrink in (
        ("full size (min face 20)", Detector("cpu", min_face_size=20), 1.0),
        (f"facerec watch (min face {VIDEO_MIN_FACE})", Detector("cpu", min_face_size=VIDEO_MIN_FACE), 1.0),
        ("quarter size (usual recipe)", Detector("cpu", min_face_size=20), 0.25),
    ):
        widths = [
            f.width / shrink
            for image in crowd
            for f in detector.detect(cv2.resize(image, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA))
        ]
        found[name] = round(len(widths) / len(crowd), 2)
        rows.append((f"crowd 1280x720: {name}", f"{found[name]} faces/frame, smallest {min(widths, default=0):.0f} px"))
    figures["crowd_faces_per_frame"] = found
    machine["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print_table("facerec watch on video files, decoding included (dlib-resnet, CPU)", rows, machine)
    print(f"  load average before / after: {machine['load_average']} / {machine['load_average_after']}")
    print_json("stream", figures, machine)
    temp.cleanup()


if __name__ == "__main__":
    main()
