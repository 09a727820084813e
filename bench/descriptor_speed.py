"""Descriptor speed per face: facerec's DlibResNet (PyTorch) vs dlib's own compute_face_descriptor, same chips.

    python bench/descriptor_speed.py [--faces 256] [--threads 2] [--batch 32] [--repeats 3]

The chips are what facerec feeds the `dlib-resnet` model: MTCNN landmarks warped onto the template by
aligned_chip, the largest face of each of the first LFW photos in sorted order. Both implementations get
the very same 150x150 uint8 chips. Each method is warmed up on one batch, then timed `--repeats` times
over all the chips; the median is reported as ms per face, with the CPU time it took divided by the wall
time (how many cores it kept busy). Without dlib's Python bindings (`pip install dlib-bin`) only
facerec's figures are reported.

Chip making (detection) is not timed and runs with one torch thread: on a busy 2-core machine, two
spinning threads make MTCNN many times slower and would only lengthen the run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import find_shared, print_json, print_table, set_threads


def make_chips(count: int) -> tuple[np.ndarray, int]:
    """`count` chips (N, 150, 150, 3) uint8 and how many LFW photos it took."""
    import torch

    from facerec.align import aligned_chip
    from facerec.detect import Detector
    from facerec.images import read_image

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        detector = Detector("cpu")
        chips, photos = [], 0
        for path in sorted((find_shared() / "faces" / "lfw").glob("*/*.jpg")):
            if len(chips) == count:
                break
            photos += 1
            image = read_image(path)
            faces = detector.detect(image)  # largest first
            if faces:
                chips.append(aligned_chip(image, faces[0].landmarks))
    finally:
        torch.set_num_threads(before)
    if len(chips) < count:
        raise SystemExit(f"bench: only {len(chips)} faces found in {photos} LFW photos")
    return np.stack(chips), photos


def timed(run, warm_up, repeats: int) -> dict:
    """Median wall seconds of `run()` over `repeats` runs after one `warm_up()`, its CPU/wall ratio, and its result."""
    warm_up()
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        result = run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    middle = sorted(range(repeats), key=walls.__getitem__)[repeats // 2]  # the median run (upper, if even)
    return {"wall_s": walls[middle], "cores_busy": cpus[middle] / walls[middle], "walls": walls, "result": result}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    machine = set_threads(args.threads)
    machine["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]

    import torch

    from facerec.embedders.dlib_resnet import find_model_file, load_dlib_resnet

    chips, photos = make_chips(args.faces)
    n, batch = len(chips), args.batch
    model = load_dlib_resnet(Path(tempfile.mkdtemp()))

    def facerec(chunk: int) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, n, chunk):
                x = torch.from_numpy(chips[i : i + chunk]).permute(0, 3, 1, 2).float()
                out.append(model(x).numpy())
        return np.concatenate(out)

    def facerec_warm_up() -> None:
        with torch.inference_mode():
            model(torch.from_numpy(chips[:batch]).permute(0, 3, 1, 2).float())
            model(torch.from_numpy(chips[:1]).permute(0, 3, 1, 2).float())

    results = {
        f"facerec batch {batch}": timed(lambda: facerec(batch), facerec_warm_up, args.repeats),
        "facerec batch 1": timed(lambda: facerec(1), facerec_warm_up, args.repeats),
    }

    try:
        import dlib
    except ImportError:
        dlib = None
        print("bench: dlib's Python bindings are not installed (`pip install dlib-bin`): facerec's figures only")
    batched_api = False
    if dlib is not None:
        recognizer = dlib.face_recognition_model_v1(str(find_model_file()))
        chip_list = [np.ascontiguousarray(c) for c in chips]

        def dlib_single() -> np.ndarray:
            return np.array([recognizer.compute_face_descriptor(c) for c in chip_list], np.float32)

        results["dlib one chip per call"] = timed(
            dlib_single, lambda: [recognizer.compute_face_descriptor(c) for c in chip_list[:batch]], args.repeats
        )
        try:
            recognizer.compute_face_descriptor(chip_list[:2])
            batched_api = True
        except TypeError:
            print("bench: this dlib has no compute_face_descriptor(list of chips)")
        if batched_api:
            results["dlib list of chips"] = timed(
                lambda: np.array(recognizer.compute_face_descriptor(chip_list), np.float32),
                lambda: recognizer.compute_face_descriptor(chip_list[:batch]),
                args.repeats,
            )

    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    ms = {name: 1000 * r["wall_s"] / n for name, r in results.items()}
    reference = results[f"facerec batch {batch}"]["result"]
    figures: dict = {
        "faces": n,
        "photos": photos,
        "batch": batch,
        "repeats": args.repeats,
        "facerec_batch_ms_per_face": ms[f"facerec batch {batch}"],
        "facerec_batch1_ms_per_face": ms["facerec batch 1"],
        "facerec_batch_cores_busy": results[f"facerec batch {batch}"]["cores_busy"],
        "facerec_batch1_cores_busy": results["facerec batch 1"]["cores_busy"],
        "facerec_batch1_vs_batch_max_abs_diff": float(np.abs(results["facerec batch 1"]["result"] - reference).max()),
    }

    def speed(name: str) -> str:
        return f"{ms[name]:.1f} ms/face  ({results[name]['cores_busy']:.1f} cores busy)"

    rows = [
        ("chips (LFW, MTCNN + aligned_chip)", f"{n} faces from the first {photos} photos, 150x150"),
        (f"facerec DlibResNet, batch {batch}", speed(f"facerec batch {batch}")),
        ("facerec DlibResNet, batch 1", speed("facerec batch 1")),
    ]
    if dlib is not None:
        single = results["dlib one chip per call"]
        figures.update(
            dlib=dlib.__version__,
            dlib_single_ms_per_face=ms["dlib one chip per call"],
            dlib_single_cores_busy=single["cores_busy"],
            speedup_dlib_single_vs_facerec_batch=ms["dlib one chip per call"] / ms[f"facerec batch {batch}"],
            speedup_dlib_single_vs_facerec_batch1=ms["dlib one chip per call"] / ms["facerec batch 1"],
            max_abs_diff_vs_dlib=float(np.abs(reference - single["result"]).max()),
        )
        rows.append(("dlib compute_face_descriptor(chip)", speed("dlib one chip per call")))
        if batched_api:
            listed = results["dlib list of chips"]
            figures.update(
                dlib_list_ms_per_face=ms["dlib list of chips"],
                dlib_list_cores_busy=listed["cores_busy"],
                speedup_dlib_list_vs_facerec_batch=ms["dlib list of chips"] / ms[f"facerec batch {batch}"],
                dlib_list_vs_single_max_abs_diff=float(np.abs(listed["result"] - single["result"]).max()),
            )
            rows.append(("dlib compute_face_descriptor([chips])", speed("dlib list of chips")))
        ratios = [("dlib per chip", "dlib_single", f"batch {batch}", "batch")]
        if batched_api:
            ratios.append(("dlib list", "dlib_list", f"batch {batch}", "batch"))
        ratios.append(("dlib per chip", "dlib_single", "batch 1", "batch1"))
        for label, key, which, suffix in ratios:
            ratio = figures[f"speedup_{key}_vs_facerec_{suffix}"]
            rows.append((f"speed-up, {label} / facerec {which}", f"{ratio:.2f}x"))
        rows.append(("max |facerec - dlib| (sanity)", f"{figures['max_abs_diff_vs_dlib']:.2g}"))
    rows.append(("load average (start -> end)", f"{machine['loadavg_start'][0]} -> {machine['loadavg_end'][0]}"))
    print_table("dlib ResNet descriptor speed on CPU, facerec vs dlib", rows, machine)
    print_json("descriptor_speed", figures, machine)


if __name__ == "__main__":
    main()
