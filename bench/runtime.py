"""The embedder on ONNX Runtime against PyTorch, in one process, taking turns: a table and a JSON line.

    python bench/runtime.py [--calls 40] [--runs 8] [--threads 2] [--weights FILE]

Network alone: dlib-resnet and InceptionResnetV1 (`--weights`, else deterministic random weights: speed does
not depend on the values) on random chips at the batch sizes facerec embeds (2 and 4: one or two faces and
their mirror images in `identify` and `watch`; 32: `enroll`, `eval`, `cluster`), on one torch thread and on
--threads, the two engines called in turn --calls times; medians, and the largest difference between their
outputs. End to end: enroll and identify on `bench/compare.py`'s web photos (72 photos, 480x360 and 360x480)
through the Python API with dlib-resnet, FACEREC_RUNTIME=torch and auto in turn --runs times (each run a new
gallery, the order swapped every run); photos per second, median, and the median of each pair's ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from _common import find_shared, print_json, print_table, set_threads


@contextmanager
def engine(name: str):
    previous = os.environ.get("FACEREC_RUNTIME")
    os.environ["FACEREC_RUNTIME"] = name
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("FACEREC_RUNTIME")
        else:
            os.environ["FACEREC_RUNTIME"] = previous


def network_alone(model: str, weights: Path | None, calls: int, threads: int) -> dict:
    import torch

    from facerec.config import Settings
    from facerec.embedders.base import load_embedder
    from facerec.prefetch import torch_threads

    settings = Settings.from_env()
    onnx = load_embedder(model, weights=weights, device="cpu", settings=replace(settings, runtime="onnx"))
    plain = replace(onnx, runner=replace(onnx.runner, engine="torch"))
    size = onnx.spec.input_size
    out = {}
    for count in sorted({1, threads}):
        for batch in (2, 4, 32):
            chips = np.random.default_rng(batch).integers(0, 256, (batch, size, size, 3), np.uint8)
            inputs = onnx.runner.to_input(chips)
            times: dict[str, list[float]] = {"torch": [], "onnx": []}
            with torch_threads(count), torch.inference_mode():
                for _ in range(2):  # first calls build sessions and caches
                    results = {name: e.runner(e.module, inputs) for name, e in (("torch", plain), ("onnx", onnx))}
                for _ in range(max(3, calls * 2 // batch)):
                    for name, e in (("torch", plain), ("onnx", onnx)):
                        started = time.perf_counter()
                        e.runner(e.module, inputs)
                        times[name].append(time.perf_counter() - started)
            torch_ms, onnx_ms = (float(np.median(times[n]) * 1e3) for n in ("torch", "onnx"))
            out[f"{model} batch {batch}, {count} thread{'s' * (count > 1)}"] = {
                "torch_ms": round(torch_ms, 2),
                "onnx_ms": round(onnx_ms, 2),
                "ratio": round(onnx_ms / torch_ms, 3),
                "max_difference": float(np.abs(results["torch"] - results["onnx"]).max()),
            }
    return out


def end_to_end(runs: int) -> dict:
    from compare import WEB_SETS, FacerecTool, make_web_set, protocol, web_protocol

    shared = find_shared()
    enrolled, probes = protocol(shared / "faces" / "lfw", 6, 3, 500)
    background = cv2.imread(str(shared / "faces" / "nofaces" / "dogs.jpg"))
    speeds: dict[str, list[float]] = {"torch": [], "auto": []}
    answers = {}
    with tempfile.TemporaryDirectory(prefix="facerec-runtime-") as tmp:
        enrolled, probes = make_web_set(*web_protocol(enrolled, probes, 12, 12), WEB_SETS["web"], Path(tmp), background)
        photos = sum(len(p) for p in enrolled.values()) + len(probes)
        for name in speeds:
            with engine(name):
                FacerecTool.warm_up(probes[0][1])
        for run in range(runs):
            for name in ("torch", "auto") if run % 2 == 0 else ("auto", "torch"):
                with engine(name):
                    tool = FacerecTool(Path(tmp) / f"{name}{run}", 20)
                    started = time.perf_counter()
                    answers[name] = tool.identify(enrolled, probes)
                    speeds[name].append(photos / (time.perf_counter() - started))
    pairs = np.array(speeds["auto"]) / np.array(speeds["torch"])
    return {
        "photos": photos,
        "torch_photos_per_s": round(float(np.median(speeds["torch"])), 2),
        "onnx_photos_per_s": round(float(np.median(speeds["auto"])), 2),
        "ratio_median_of_pairs": round(float(np.median(pairs)), 3),
        "ratio_range": [round(float(pairs.min()), 3), round(float(pairs.max()), 3)],
        "same_answers": [a[0] for a in answers["torch"]] == [a[0] for a in answers["auto"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40, help="calls of each engine at batch 2 (fewer for larger)")
    parser.add_argument("--runs", type=int, default=8, help="end-to-end runs of each engine; 0 skips them")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", help="InceptionResnetV1 weights (default: deterministic random ones)")
    args = parser.parse_args()
    machine = set_threads(args.threads)
    from facerec.testing import write_random_facenet_weights

    with tempfile.TemporaryDirectory(prefix="facerec-runtime-weights-") as tmp:
        weights = Path(args.weights) if args.weights else write_random_facenet_weights(Path(tmp) / "w.pt", seed=0)
        alone = network_alone("dlib-resnet", None, args.calls, args.threads)
        alone.update(network_alone("vggface2", weights, args.calls, args.threads))
    figures: dict = {"network": alone}
    rows = [("network, batch, torch threads", "torch ms   onnx ms   ratio")]
    rows += [(k, f"{v['torch_ms']:>8}  {v['onnx_ms']:>8}  x{v['ratio']}") for k, v in alone.items()]
    if args.runs:
        figures["end_to_end"] = e2e = end_to_end(args.runs)
        low, high = e2e["ratio_range"]
        speeds = f"{e2e['torch_photos_per_s']:>8}  {e2e['onnx_photos_per_s']:>8}"
        ratio = f"x{e2e['ratio_median_of_pairs']} ({low}-{high}), same answers: {e2e['same_answers']}"
        rows.append((f"enroll + identify, {e2e['photos']} web photos, photos/s", f"{speeds}  {ratio}"))
    print_table("the embedder: ONNX Runtime against PyTorch", rows, machine)
    print_json("runtime", figures, machine)


if __name__ == "__main__":
    main()
