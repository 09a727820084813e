"""Video speed on CPU: frames per second processed, time from a face appearing to its name, where the time
goes, and what detection at reduced size loses. A table and a JSON line.

    python bench/stream.py [--threads 2]

Frames of ../shared/video clips are decoded and resized beforehand (a capture thread decodes in
parallel in `facerec watch`), then fed to the same pipeline `facerec watch` runs (offline dlib-resnet,
../shared/faces/known enrolled).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from _common import find_shared, print_json, print_table, set_threads


def clip(path: Path, size: tuple[int, int], limit: int = 300) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    return frames


class Timed:
    """Wraps a callable and adds up its time."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args):
        start = time.perf_counter()
        try:
            return self.fn(*args)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


class TimedDetector:
    """What `stream.watch` needs of a detector, with its detect timed."""

    def __init__(self, detect: Timed) -> None:
        self.detect = detect


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--detect-every", type=int, default=2)
    args = parser.parse_args()
    machine = set_threads(args.threads)

    from facerec import FaceRecognizer
    from facerec.stream import Frame, Tracker, watch
    from facerec.video import VIDEO_MIN_FACE, vector_namer

    shared = find_shared()
    rec = FaceRecognizer(Path(tempfile.mkdtemp()) / "g", model="dlib-resnet", device="cpu")
    rec.enroll(shared / "faces" / "known")
    rows, figures = [], {"detect_every": args.detect_every, "sizes": {}}
    for size in ((640, 480), (1280, 720)):
        frames = clip(shared / "video" / "obama_podium.mp4", size) + clip(shared / "video" / "hamilton_clip.mp4", size)
        video = rec.pipeline.with_min_face(VIDEO_MIN_FACE)
        namer = vector_namer(rec.session, None)
        detect = Timed(video.detector.detect)
        detector = TimedDetector(detect)
        embed = Timed(video.vectors)
        tracker = Tracker(embed, namer)
        list(watch((Frame(i, i / 25, f) for i, f in enumerate(frames[:10])), detector, Tracker(video.vectors, namer)))
        detect.seconds = detect.calls = 0
        start = time.perf_counter()
        for _ in watch(
            (Frame(i, i / 25, f) for i, f in enumerate(frames)), detector, tracker, detect_every=args.detect_every
        ):
            pass
        total = time.perf_counter() - start
        fps = len(frames) / total
        detect_s, detect_calls, embed_s, embed_calls = detect.seconds, detect.calls, embed.seconds, embed.calls

        # Time to a name: frames arrive at 25 fps (as from a camera) after a few empty ones; from the
        # arrival of the first frame with the face to the first result that names it. Two offsets, since
        # the detector runs on every other frame.
        blank = np.zeros_like(frames[0])
        latencies = []
        for lead in (4, 5):
            arrival: dict[int, float] = {}

            def paced(lead=lead, arrival=arrival, blank=blank, frames=frames):
                t0 = time.perf_counter()
                for i, image in enumerate([blank] * lead + frames[:50]):
                    delay = t0 + i / 25 - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    arrival[i] = time.perf_counter()
                    yield Frame(i, i / 25, image)

            for result in watch(paced(), detector, Tracker(video.vectors, namer), detect_every=args.detect_every):
                if any(f.name not in ("unknown", "…") for f in result.faces):
                    latencies.append(time.perf_counter() - arrival[lead])
                    break
        key = f"{size[0]}x{size[1]}"
        other = total - detect_s - embed_s
        figures["sizes"][key] = {
            "frames": len(frames),
            "fps": round(fps, 1),
            "detect_ms_per_call": round(1000 * detect_s / max(detect_calls, 1), 1),
            "detect_share": round(detect_s / total, 3),
            "embed_ms_per_call": round(1000 * embed_s / max(embed_calls, 1), 1),
            "embed_calls": embed_calls,
            "embed_share": round(embed_s / total, 3),
            "other_share": round(other / total, 3),
            "time_to_name_ms": [round(1000 * t) for t in latencies],
        }
        rows += [
            (f"{key}: processed", f"{fps:.1f} frames/s over {len(frames)} frames (detector every {args.detect_every})"),
            (
                f"{key}: detect",
                f"{1000 * detect_s / max(detect_calls, 1):.1f} ms a call, {100 * detect_s / total:.0f}% of the time",
            ),
            (
                f"{key}: embed",
                f"{1000 * embed_s / max(embed_calls, 1):.1f} ms a call ({embed_calls} calls for "
                f"{len(frames)} frames), {100 * embed_s / total:.0f}%",
            ),
            (f"{key}: tracking, voting", f"{100 * other / total:.0f}%"),
            (f"{key}: time to a name", " / ".join(f"{1000 * t:.0f} ms" for t in latencies)),
        ]

    # What reduced-size detection loses, on the crowd clip at 1280x720: faces found per frame.
    from facerec.detect import Detector

    crowd = clip(shared / "video" / "crowd_arcade.mp4", (1280, 720), limit=100)[::10]
    found = {}
    for label, detector, shrink in (
        ("full size (min face 20)", Detector("cpu", min_face_size=20), 1.0),
        ("facerec watch (min face 40)", video.detector, 1.0),
        ("quarter size (usual recipe)", Detector("cpu", min_face_size=20), 0.25),
    ):
        widths = []
        for image in crowd:
            small = cv2.resize(image, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1 else image
            widths += [f.width / shrink for f in detector.detect(small)]
        found[label] = widths
        rows.append(
            (
                f"crowd 1280x720: {label}",
                f"{len(widths) / len(crowd):.1f} faces/frame, smallest {min(widths, default=0):.0f} px",
            )
        )
    figures["crowd_faces_per_frame"] = {k: round(len(v) / len(crowd), 2) for k, v in found.items()}
    print_table("facerec watch on CPU (dlib-resnet)", rows, machine)
    print_json("stream", figures, machine)


if __name__ == "__main__":
    main()
