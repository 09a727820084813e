"""`facerec adapt` measured: identification before and after adapting, the LFW check, and the time it takes.

    python bench/adapt.py [--sets lowres,orl] [--model dlib-resnet] [--device cpu] [--epochs 15] [--threads 2]

Two sets, each through the public API exactly as a user would run it: enroll each person's first 3 photos
into a new gallery, identify every other photo (closed-set top-1, and named correctly at the threshold
in force), `adapt` with the LFW check (`--lfw ../shared/faces/lfw`), identify again.

* lowres: LFW people with at least 10 photos (158), their first 10 photos, each shrunk so its longer side
  is 40 px (INTER_AREA) and enlarged back to 250x250 (bicubic): faces about 20 px wide, like a distant
  CCTV camera. Written as PNG to a temporary folder (never into the project).
* orl: ../shared/faces/orl as it is (40 people, 10 grey photos each), where the pretrained model is
  already near 1.0: the gate's other side, no model kept that is not better.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2

from _common import find_shared, print_json, print_table, set_threads


def lowres_set(shared: Path, folder: Path) -> dict[str, list[Path]]:
    from facerec.lfw import lfw_photos

    out = {}
    for person, photos in lfw_photos(shared / "faces" / "lfw").items():
        if len(photos) < 10:
            continue
        (folder / person).mkdir(parents=True)
        out[person] = []
        for photo in photos[:10]:
            image = cv2.imread(str(photo))
            h, w = image.shape[:2]
            scale = 40 / max(h, w)
            small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
            target = folder / person / f"{photo.stem}.png"
            cv2.imwrite(str(target), cv2.resize(small, (250, 250), interpolation=cv2.INTER_CUBIC))
            out[person].append(target)
    return out


def orl_set(shared: Path, _folder: Path) -> dict[str, list[Path]]:
    root = shared / "faces" / "orl"
    return {p.name: sorted(p.glob("*.pgm"), key=lambda f: int(f.stem)) for p in sorted(root.iterdir()) if p.is_dir()}


def enroll_folder(photos: dict[str, list[Path]], folder: Path, count: int) -> list[tuple[str, Path]]:
    """Links to each person's first `count` photos in an enroll-layout folder; returns the other photos."""
    probes = []
    for person, files in photos.items():
        (folder / person).mkdir(parents=True)
        for photo in files[:count]:
            (folder / person / photo.name).symlink_to(photo)
        probes += [(person, p) for p in files[count:]]
    return probes


def identify_all(rec, probes: list[tuple[str, Path]]) -> dict:
    """Closed-set top-1 (threshold ignored) and named-correctly-at-threshold over the probes, and the rate."""
    started = time.perf_counter()
    top1 = named = found = 0
    for (person, _), result in zip(probes, rec.identify_paths([p for _, p in probes], top_k=1)):
        faces = result.faces or []
        if not faces:
            continue
        found += 1
        face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        top1 += bool(face.candidates) and face.candidates[0].name == person
        named += face.name == person
    seconds = time.perf_counter() - started
    return {
        "top1": round(top1 / len(probes), 4),
        "named": round(named / len(probes), 4),
        "faces_found": found,
        "probes": len(probes),
        "threshold": round(rec.threshold(), 4),
        "photos_per_s": round(len(probes) / seconds, 1),
    }


def run_set(name: str, make, shared: Path, args, work: Path) -> dict:
    from facerec import FaceRecognizer
    from facerec.adapt import AdaptOptions

    photos = make(shared, work / f"{name}-photos")
    probes = enroll_folder(photos, work / f"{name}-enroll", 3)
    rec = FaceRecognizer(work / f"{name}-gallery", model=args.model, device=args.device)
    started = time.perf_counter()
    enrolled = rec.enroll(work / f"{name}-enroll")
    enroll_s = time.perf_counter() - started
    before = identify_all(rec, probes)
    report = rec.adapt(lfw=shared / "faces" / "lfw", options=AdaptOptions(epochs=args.epochs))
    after = identify_all(rec, probes)
    info = rec.info()
    rec.close()
    return {
        "people": len(photos),
        "enrolled_faces": enrolled.faces_added,
        "enroll_s": round(enroll_s, 1),
        "before": before,
        "after": after,
        "adapt": {
            "kept": report.kept,
            "reason": report.reason,
            "seconds": report.seconds,
            "epochs_run": report.epochs_run,
            "best_epoch": report.best_epoch,
            "losses": report.losses,
            "val_accuracy": report.val_accuracy,
            "gate_before": report.before.new_people,
            "gate_after": report.after.new_people,
            "lfw_before": report.before.general,
            "lfw_after": report.after.general,
            "lfw_check": report.general_check,
            "train_photos": report.train_photos,
            "device": report.device,
        },
        "adapted_in_info": info["adapted"] is not None,
    }


SETS = {"lowres": lowres_set, "orl": orl_set}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="lowres,orl")
    parser.add_argument("--model", default="dlib-resnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    machine = set_threads(args.threads)
    machine["device"] = args.device
    shared = find_shared()
    results = {}
    with tempfile.TemporaryDirectory(prefix="facerec-bench-adapt-") as tmp:
        for name in args.sets.split(","):
            results[name] = run_set(name, SETS[name], shared, args, Path(tmp))
    rows = []
    for name, r in results.items():
        a = r["adapt"]
        rows += [
            (
                f"{name}: people, enrolled faces, probes",
                f"{r['people']}, {r['enrolled_faces']}, {r['before']['probes']}",
            ),
            (f"{name}: top-1 before -> after", f"{r['before']['top1']:.4f} -> {r['after']['top1']:.4f}"),
            (
                f"{name}: named at threshold before -> after",
                f"{r['before']['named']:.4f} (t={r['before']['threshold']}) -> {r['after']['named']:.4f} "
                f"(t={r['after']['threshold']})",
            ),
            (f"{name}: adapt gate (held-out) before -> after", f"{a['gate_before']:.4f} -> {a['gate_after']:.4f}"),
            (f"{name}: LFW check before -> after", f"{a['lfw_before']:.4f} -> {a['lfw_after']:.4f}"),
            (
                f"{name}: adapt time ({a['device']}), epochs",
                f"{a['seconds']:.0f} s, {a['epochs_run']} (best {a['best_epoch']})",
            ),
            (f"{name}: kept", f"{a['kept']}: {a['reason']}"),
        ]
    print_table(f"facerec adapt ({args.model})", rows, machine)
    print_json("adapt", {"model": args.model, "epochs": args.epochs, "sets": results}, machine)


if __name__ == "__main__":
    main()
