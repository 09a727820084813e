"""Detection and embedding speed on LFW photos, per stage, on CPU: a table and a JSON line.

    python bench/throughput.py [--photos 500] [--threads 2] [--weights FILE]

Stages are timed one photo after another; then the same photos go through `FaceRecognizer.enroll` and
`identify_paths`, which read, decode and detect in background threads while embedding (the ratio to the
sequential end to end is measured in the same run).

Speed does not depend on the weight values, so without --weights it uses deterministic random weights
of the same network (the pretrained file cannot be downloaded offline).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _common import find_shared, print_json, print_table, set_threads


def pipelined(paths: list[Path], weights: Path, tmp: Path) -> tuple[float, float]:
    """Seconds to enroll the photos (one folder per LFW person) and then to identify them all."""
    from facerec import FaceRecognizer

    for path in paths:
        (tmp / "photos" / path.parent.name).mkdir(parents=True, exist_ok=True)
        (tmp / "photos" / path.parent.name / path.name).symlink_to(path)
    rec = FaceRecognizer(tmp / "gallery", model="vggface2", weights=weights, device="cpu")
    _ = rec.pipeline  # models loaded before the clock starts, as in the stage timings
    start = time.perf_counter()
    rec.enroll(tmp / "photos")
    enrolled = time.perf_counter()
    for _ in rec.identify_paths(paths):
        pass
    return enrolled - start, time.perf_counter() - enrolled


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--weights")
    args = parser.parse_args()
    machine = set_threads(args.threads)

    from facerec import FacePipeline
    from facerec.config import Settings
    from facerec.testing import write_random_facenet_weights

    paths = sorted((find_shared() / "faces" / "lfw").glob("*/*.jpg"))[: args.photos]
    weights = Path(args.weights) if args.weights else write_random_facenet_weights(Path(tempfile.mkdtemp()) / "w.pt")
    settings = replace(Settings.from_env(), batch_size=args.batch)
    pipeline = FacePipeline.load("vggface2", weights=weights, device="cpu", settings=settings)
    embedder, detector, read_image = pipeline.embedder, pipeline.detector, pipeline.read
    detector.detect(read_image(paths[0]))  # warm-up: first call builds the networks
    embedder.embed(np.zeros((2, 160, 160, 3), np.uint8))

    t = {"decode": 0.0, "detect": 0.0, "chip": 0.0, "embed": 0.0}
    chips = []
    start = time.perf_counter()
    for path in paths:
        t0 = time.perf_counter()
        image = read_image(path)
        t1 = time.perf_counter()
        faces = detector.detect(image)
        t2 = time.perf_counter()
        chips += [embedder.chip(image, face) for face in faces[:1]]
        t3 = time.perf_counter()
        t["decode"] += t1 - t0
        t["detect"] += t2 - t1
        t["chip"] += t3 - t2
    t0 = time.perf_counter()
    embedder.embed(np.stack(chips))
    t["embed"] = time.perf_counter() - t0
    total = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="facerec-throughput-") as tmp:
        enroll_s, identify_s = pipelined(paths, weights, Path(tmp))
    n, f = len(paths), len(chips)
    figures = {
        "photos": n,
        "faces": f,
        "decode_ms_per_photo": 1000 * t["decode"] / n,
        "detect_ms_per_photo": 1000 * t["detect"] / n,
        "chip_ms_per_face": 1000 * t["chip"] / f,
        "embed_ms_per_face": 1000 * t["embed"] / f,
        "batch": args.batch,
        "photos_per_s": n / total,
        "enroll_photos_per_s": n / enroll_s,
        "identify_photos_per_s": n / identify_s,
        "workers": settings.workers,
    }
    rows = [
        ("photos (LFW, 250x250)", f"{n} ({f} faces kept, the largest per photo)"),
        ("decode", f"{figures['decode_ms_per_photo']:.1f} ms/photo"),
        ("detect (MTCNN)", f"{figures['detect_ms_per_photo']:.1f} ms/photo"),
        ("crop", f"{figures['chip_ms_per_face']:.2f} ms/face"),
        (f"embed (batch {args.batch})", f"{figures['embed_ms_per_face']:.1f} ms/face"),
        ("end to end, one stage after another", f"{figures['photos_per_s']:.1f} photos/s"),
        (
            f"enroll ({settings.workers} background workers)",
            f"{figures['enroll_photos_per_s']:.1f} photos/s "
            f"({figures['enroll_photos_per_s'] / figures['photos_per_s']:.2f}x)",
        ),
        (
            f"identify ({settings.workers} background workers)",
            f"{figures['identify_photos_per_s']:.1f} photos/s "
            f"({figures['identify_photos_per_s'] / figures['photos_per_s']:.2f}x)",
        ),
    ]
    print_table("facerec throughput on CPU", rows, machine)
    print_json("throughput", figures, machine)


if __name__ == "__main__":
    main()
