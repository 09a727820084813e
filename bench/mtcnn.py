"""Speed of facerec's MTCNN cascade (facerec/mtcnn.py) against facenet-pytorch's detect_face, on real photos and frames.

Every image goes through what facerec.detect.Detector does first (downscale to <= 1600 px longer side,
minimum face scaled with it). facenet and ours run interleaved on the same items, each item `--reps`
times, and the fastest repetition counts (the machine is shared: minimum, not mean). Ratios are from one
run. Prints a table and one JSON line.

    python bench/mtcnn.py [--threads 1,2] [--reps 2] [--quick]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import time

import cv2
import numpy as np
import torch

from _common import PROJECT_ROOT, find_shared

sys.path.insert(0, str(PROJECT_ROOT / "tests"))  # the facenet reference the tests compare with
import mtcnn_reference as compare
from facerec import mtcnn

SHARED = find_shared()
MAX_SIDE = 1600


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def prep(image: np.ndarray, min_face: int) -> tuple[np.ndarray, int]:
    return compare.prepare(image, min_face, MAX_SIDE)


def load(path):
    from facerec.images import read_image

    return read_image(path)


def frames(path, n, size=None):
    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    out = []
    for k in np.linspace(0, max(total - 1, 0), n).astype(int):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(k))
        ok, f = cap.read()
        if not ok:
            continue
        f = cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
        if size is not None and (f.shape[1], f.shape[0]) != size:
            f = cv2.resize(f, size, interpolation=cv2.INTER_LINEAR)
        out.append(f)
    return out


def build_sets(quick: bool):
    sets = {}
    lfw = sorted(glob.glob(str(SHARED / "faces/lfw/*/*.jpg")))
    n_lfw = 60 if quick else 300
    pick = lfw[:: max(1, len(lfw) // n_lfw)][:n_lfw]
    sets["a_lfw250_min20"] = ([prep(load(p), 20) for p in pick], 32)
    web = sorted(
        glob.glob(str(SHARED / "faces/known/*/*"))
        + glob.glob(str(SHARED / "faces/known/*.*"))
        + glob.glob(str(SHARED / "faces/unknown/*"))
    )
    if quick:
        web = web[::3]
    sets["b_web_min20"] = ([prep(load(p), 20) for p in web], 4)
    nf = 4 if quick else 8
    v720 = frames(SHARED / "video/obama_podium.mp4", nf, (1280, 720)) + frames(
        SHARED / "video/hamilton_clip.mp4", nf, (1280, 720)
    )
    sets["c_video720_min40"] = ([prep(f, 40) for f in v720], 8)
    v1080 = frames(SHARED / "video/crowd_arcade.mp4", nf)
    sets["c_video1080_min40"] = ([prep(f, 40) for f in v1080], 8)
    sets["d_crowd_min20"] = ([prep(load(SHARED / "faces/groups/worlds_largest_selfie.jpg"), 20)], 1)
    return sets


def run_set(items, batch, reps):
    """ms per image: facenet, ours one image per call, ours `batch` images per call; equality counts."""
    t_fn = t_one = t_batch = 0.0
    agree = 0
    faces = 0
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        best = [float("inf")] * 3
        for _ in range(reps):
            s = time.perf_counter()
            ref = [compare.facenet_detect(im, ms) for im, ms in chunk]
            t1 = time.perf_counter()
            one = [mtcnn.detect(im, ms) for im, ms in chunk]
            t2 = time.perf_counter()
            many = mtcnn.detect_batch([im for im, _ in chunk], [ms for _, ms in chunk])
            t3 = time.perf_counter()
            best = [min(best[0], t1 - s), min(best[1], t2 - t1), min(best[2], t3 - t2)]
        t_fn, t_one, t_batch = t_fn + best[0], t_one + best[1], t_batch + best[2]
        for r, o, m in zip(ref, one, many):
            agree += compare.ok(compare.match(r, o)) and compare.ok(compare.match(r, m))
            faces += len(r[0])
    n = len(items)
    return dict(
        n=n,
        faces=faces,
        agree=agree,
        facenet_ms=1e3 * t_fn / n,
        ours_ms=1e3 * t_one / n,
        ours_batch_ms=1e3 * t_batch / n,
        batch=batch,
        ratio=t_fn / t_one,
        ratio_batch=t_fn / t_batch,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sets", default="")
    args = ap.parse_args()
    sets = build_sets(args.quick)
    if args.sets:
        sets = {k: v for k, v in sets.items() if any(k.startswith(s) for s in args.sets.split(","))}
    results = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        # warm both (weights, first oneDNN primitives)
        im, ms = next(iter(sets.values()))[0][0]
        compare.facenet_detect(im, ms), mtcnn.detect(im, ms)
        for name, (items, batch) in sets.items():
            results[f"{name}/t{threads}"] = run_set(items, batch, args.reps)
    print(
        f"{'set/threads':28s} {'n':>4s} {'faces':>5s} {'agree':>5s} {'facenet':>8s} {'ours':>8s} {'batch':>8s} "
        f"{'x one':>6s} {'x batch':>7s}"
    )
    for k, r in results.items():
        print(
            f"{k:28s} {r['n']:4d} {r['faces']:5d} {r['agree']:5d} {r['facenet_ms']:8.1f} {r['ours_ms']:8.1f} "
            f"{r['ours_batch_ms']:8.1f} {r['ratio']:6.2f} {r['ratio_batch']:7.2f}"
        )
    machine = dict(
        cpu=cpu_model(),
        cores=os.cpu_count(),
        torch=torch.__version__,
        threads=args.threads,
        loadavg=os.getloadavg(),
        scripted=mtcnn.nets("cpu").scripted,
        reps=args.reps,
    )
    print(
        json.dumps(
            dict(
                machine=machine,
                results={
                    k: {a: (round(b, 2) if isinstance(b, float) else b) for a, b in r.items()}
                    for k, r in results.items()
                },
            )
        )
    )


if __name__ == "__main__":
    main()
