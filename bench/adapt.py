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

Camera sets (`adapt --target`: distillation and camera views), the case of a camera that sees enrolled people
worse than their photos. LFW people with at least 10 photos (158), split by name order into the gallery's
people (79) and people outside it (79). The gallery enrolls the first 3 clean photos of its people and is
adapted with `--target`: 300 photos of *other* LFW people (fewer than 10 photos each) damaged the same way,
unlabelled, and the clean check LFW folds 1-2 (1,200 pairs) via `--lfw`. Then the people outside enroll
their first 3 photos into the adapted gallery, as a user adds people later. The probes are every person's
other 7 photos as the camera shows them (and the same photos clean, for what adapting costs on clean
photos); top-1 is closed-set among all 158 people through the gallery (its stored vectors and rule,
`identify --top-k 1`), against a gallery of all 158 on the base model before, and named right at the
gallery's operating point (photos: at most 5% of strangers named); the first photos of 300 more people (in
no gallery, not in the target) damaged alike are the strangers, and the share given a name is the false-accept
rate the camera's strangers meet. A second pair of rows
measures the model alone, as earlier rounds did: each person's 3 clean photos as its centroid, embedded
by the model under test.

* camera40: each photo shrunk so its longer side is 40 px and enlarged back (faces about 16 px wide).
  DistilOptions' defaults, camera views and the raw-cosine camera strangers were chosen on this set: its
  figures are tuned-on figures.
* camera48: the same at 48 px. Not tuned on (added after those choices were made, to check them).
* camera64: the same at 64 px. Not tuned on.
* ir: grey, gamma 0.6, contrast x0.7, sensor noise 6 grey levels, full resolution (an infrared camera at
  night, roughly). Not tuned on.

An open-set form of the camera gate (held-out photos named right at the operating point the target's faces
set, instead of top-1) was tried after camera48 and ir had been measured kept anyway, so those two informed
it. Two sets were added with it, before any run of it, to judge it on; it lost there (see the README) and
top-1 stays the gate:

* cctv44: shrunk to 44 px, JPEG quality 30 at that size (a low-bitrate stream), enlarged back; written as
  PNG, so adapt cannot read the compression from the files, as with video. Not tuned on.
* ir56: shrunk to 56 px, then the infrared damage above at that size (noise on the small sensor), enlarged
  back. Not tuned on.

`--keep-anyway` keeps what the gate refuses (a diagnostic: what refusing cost); `--face-size`/`--grey`
pass what a user knows about the camera to adapt, as its options do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

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
            target = folder / person / f"{photo.stem}.png"
            cv2.imwrite(str(target), shrunk(cv2.imread(str(photo)), 40))  # LFW's photos are all 250x250
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
    report = rec.adapt(
        lfw=shared / "faces" / "lfw", options=AdaptOptions(**({"epochs": args.epochs} if args.epochs else {}))
    )
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


def infrared(image, rng):
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    grey = (grey**0.6 - 0.5) * 0.7 + 0.5
    grey = np.clip(grey * 255.0 + rng.normal(0.0, 6.0, grey.shape), 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def small_then(image, longer_side: int, damage):
    """The photo shrunk so its longer side is `longer_side` px, damaged at that size (where a camera's
    sensor and encoder work), and enlarged back."""
    h, w = image.shape[:2]
    scale = longer_side / max(h, w)
    small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return cv2.resize(damage(small), (w, h), interpolation=cv2.INTER_CUBIC)


def shrunk(image, longer_side: int):
    return small_then(image, longer_side, lambda small: small)


def jpeg(image, quality: int):
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


CAMERAS = {
    "camera40": lambda image, rng: shrunk(image, 40),
    "camera48": lambda image, rng: shrunk(image, 48),
    "camera64": lambda image, rng: shrunk(image, 64),
    "ir": infrared,
    "cctv44": lambda image, rng: small_then(image, 44, lambda small: jpeg(small, 30)),
    "ir56": lambda image, rng: small_then(image, 56, lambda small: infrared(small, rng)),
}


def best(face) -> tuple[str | None, float]:
    """A face's best candidate and the score the gallery's decision compares with its threshold."""
    if face is None or not face.candidates:
        return None, -np.inf
    top = face.candidates[0]
    return top.name, top.similarity if top.score is None else top.score


def largest(faces):
    return max(faces or [], key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), default=None)


def through_gallery(rec, probes, truth, inside: set[str], clean_probes, strangers) -> dict:
    """The camera's probes, the same photos clean, and the strangers through the gallery (its stored vectors,
    rule and operating point): closed-set top-1 (threshold ignored) and named right at the operating point for
    the gallery's people and for the others, strangers given a name, and named right at equal false accepts
    (the threshold that names 5% or 1% of the strangers: discrimination, whatever the calibration)."""
    share = lambda flags, mask: round(float(np.mean(np.asarray(flags)[mask])), 4)
    mine = np.array([person in inside for person in truth])
    faces = [largest(r.faces) for r in rec.identify_paths(probes, top_k=1)]
    scored = [best(face) for face in faces]
    right = [name == person for (name, _), person in zip(scored, truth)]
    named = [bool(face and face.name == person) for face, person in zip(faces, truth)]
    clean = [best(largest(r.faces))[0] == person for r, person in zip(rec.identify_paths(clean_probes, top_k=1), truth)]
    stranger_faces = [largest(r.faces) for r in rec.identify_paths(strangers, top_k=1)]
    stranger_scores = np.sort([best(face)[1] for face in stranger_faces])[::-1]
    scores = np.array([score for _, score in scored])
    out = {
        "top1": (share(right, mine), share(right, ~mine)),
        "named": (share(named, mine), share(named, ~mine)),
        "strangers_named": round(float(np.mean([bool(f and f.name != "unknown") for f in stranger_faces])), 4),
        "clean_top1": (share(clean, mine), share(clean, ~mine)),
    }
    for rate in (0.05, 0.01):
        threshold = stranger_scores[int(rate * len(stranger_scores))]  # names at most `rate` of the strangers
        at = np.array(right) & (scores > threshold)
        out[f"named_at_{rate:g}_false_accepts"] = (share(at, mine), share(at, ~mine))
    return out


def run_camera(name: str, shared: Path, args, work: Path) -> dict:
    """One camera set (see the module docstring) through the public API, as a user would run it."""
    from facerec import FaceRecognizer
    from facerec.adapt import CameraRequest
    from facerec.cohort import CAMERA_STRANGERS_FILE
    from facerec.distil import DistilOptions
    from facerec.lfw import central_chips, lfw_photos
    from facerec.pipeline import FacePipeline
    from facerec.vectors import group_means

    damage, rng = CAMERAS[name], np.random.default_rng(0)
    photos = lfw_photos(shared / "faces" / "lfw")
    people = [p for p, files in photos.items() if len(files) >= 10]
    inside = people[::2]
    outside = [p for p in people if p not in set(inside)]

    def enroll_folder_of(folder: Path, who: list[str]) -> Path:
        for person in who:
            (folder / person).mkdir(parents=True)
            for photo in photos[person][:3]:
                (folder / person / photo.name).symlink_to(photo)
        return folder

    enroll_inside = enroll_folder_of(work / f"{name}-enroll", inside)
    enroll_outside = enroll_folder_of(work / f"{name}-enroll-outside", outside)

    def damaged_copy(photo: Path, folder: Path) -> str:
        """The photo damaged like the camera, written into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        copy = str(folder / f"{photo.stem}.png")
        cv2.imwrite(copy, damage(cv2.imread(str(photo)), rng))
        return copy

    probes, probe_people, clean_probes = [], [], []
    for person in people:
        for photo in photos[person][3:10]:
            probes.append(damaged_copy(photo, work / f"{name}-probes" / person))
            probe_people.append(person)
            clean_probes.append(str(photo))
    others = [p for p, files in photos.items() if len(files) < 10]
    targeted = np.random.default_rng(1).choice(others, 300, replace=False)
    for person in targeted:
        damaged_copy(photos[person][0], work / f"{name}-target")
    # Strangers the camera sees: 300 more people, in no gallery and not in the target.
    strangers = [
        damaged_copy(photos[person][0], work / f"{name}-strangers")
        for person in np.random.default_rng(2).choice(sorted(set(others) - set(targeted)), 300, replace=False)
    ]

    # Before: every person enrolled on the base model (the gallery as it is today).
    before_rec = FaceRecognizer(work / f"{name}-gallery-before", model=args.model, device=args.device)
    before_rec.enroll(enroll_inside)
    before_rec.enroll(enroll_outside)
    measure = lambda recognizer: through_gallery(recognizer, probes, probe_people, set(inside), clean_probes, strangers)
    before = measure(before_rec)
    before_rec.close()

    # After: the gallery's people adapted to the camera, the others enrolled since (as a user would add them).
    if args.keep_anyway:  # a diagnostic: what a refused adaptation would have given users
        import facerec.adapt

        facerec.adapt.camera_gate = lambda before, after, gain, max_drop: (True, "kept anyway (bench --keep-anyway)")
    rec = FaceRecognizer(work / f"{name}-gallery", model=args.model, device=args.device)
    rec.enroll(enroll_inside)
    started = time.perf_counter()
    report = rec.adapt(
        lfw=shared / "faces" / "lfw",
        camera=CameraRequest(str(work / f"{name}-target"), face_size=args.face_size, grey=args.grey or None),
        distil_options=DistilOptions(**({"epochs": args.epochs} if args.epochs else {})),
        dry_run=args.dry_run,
    )
    seconds = time.perf_counter() - started
    rec.enroll(enroll_outside)
    after = measure(rec) if report.kept else before
    rec.close()
    # The same adapted gallery decided without the camera's faces as its strangers: the LFW table mapped onto
    # the camera's scores (ScoreMap), what a target of fewer than 200 faces gets.
    cohort = work / f"{name}-gallery" / CAMERA_STRANGERS_FILE
    mapped = before
    if report.kept and cohort.exists():
        cohort.rename(cohort.with_suffix(".aside"))
        mapped_rec = FaceRecognizer(work / f"{name}-gallery", model=args.model, device=args.device)
        mapped = measure(mapped_rec)
        mapped_rec.close()

    # The model alone: each person's 3 clean photos as its centroid, embedded by the model under test.
    base = FacePipeline.load(args.model, device=args.device)
    references = [str(p) for person in people for p in photos[person][:3]]
    reference_people = np.repeat(np.arange(len(people)), 3)
    clean, _ = central_chips(references, base)
    damaged, _ = central_chips(probes, base)
    truth = np.array([people.index(p) for p in probe_people])
    in_gallery = np.isin(np.array(probe_people), inside)

    def top1(embedder) -> tuple[float, float]:
        centroids = group_means(embedder.embed(clean), reference_people, len(people))
        right = (embedder.embed(damaged) @ centroids.T).argmax(axis=1) == truth
        return round(float(right[in_gallery].mean()), 4), round(float(right[~in_gallery].mean()), 4)

    model_before = top1(base.embedder)
    model_after = model_before
    if report.checkpoint:  # kept: the adapted model, as identify would load it
        model_after = top1(FacePipeline.load(args.model, weights=report.checkpoint, device=args.device).embedder)
    pair = lambda b, a, i: {"before": b[i], "after": a[i]}
    return {
        "people": {"gallery": len(inside), "outside": len(outside)},
        "probes": len(probes),
        "strangers": len(strangers),
        **{
            f"{key}_{who}": pair(before[key], after[key], i)
            for key in ("top1", "named", "named_at_0.05_false_accepts", "named_at_0.01_false_accepts", "clean_top1")
            for i, who in enumerate(("gallery_people", "outside_people"))
        },
        "strangers_named": {"before": before["strangers_named"], "after": after["strangers_named"]},
        "lfw_table_mapped": {k: mapped[k] for k in ("top1", "named", "strangers_named", "named_at_0.05_false_accepts")},
        "model_only_top1_gallery_people": pair(model_before, model_after, 0),
        "model_only_top1_outside_people": pair(model_before, model_after, 1),
        "lfw_1200_pairs": {"before": report.before.general, "after": report.after.general},
        "gate": {
            "before": report.before.new_people,
            "after": report.after.new_people,
            "named": [report.before.named, report.after.named],
            "gain": report.gain,
        },
        "camera": report.camera,
        "kept": report.kept,
        "reason": report.reason,
        "epochs_run": report.epochs_run,
        "best_epoch": report.best_epoch,
        "val_accuracy": report.val_accuracy,
        "adapt_s": round(seconds, 1),
        "device": report.device,
    }


SETS = {"lowres": lowres_set, "orl": orl_set}
# The camera sets' top-1 rows: (label, result key).
CAMERA_ROWS = [
    ("top-1 gallery's people (through the gallery)", "top1_gallery_people"),
    ("top-1 people enrolled after adapting", "top1_outside_people"),
    ("named right at the operating point: gallery's people", "named_gallery_people"),
    ("named right at the operating point: people enrolled after", "named_outside_people"),
    ("strangers (300, damaged alike) given a name", "strangers_named"),
    ("named right at 5% false accepts: gallery's people", "named_at_0.05_false_accepts_gallery_people"),
    ("named right at 5% false accepts: people enrolled after", "named_at_0.05_false_accepts_outside_people"),
    ("named right at 1% false accepts: gallery's people", "named_at_0.01_false_accepts_gallery_people"),
    ("named right at 1% false accepts: people enrolled after", "named_at_0.01_false_accepts_outside_people"),
    ("clean photos: top-1 gallery's people", "clean_top1_gallery_people"),
    ("clean photos: top-1 people enrolled after", "clean_top1_outside_people"),
    ("model only (clean centroids): gallery's people", "model_only_top1_gallery_people"),
    ("model only (clean centroids): people outside", "model_only_top1_outside_people"),
]


def main() -> None:
    from facerec.camera import CameraSummary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="camera40,camera48,camera64,ir,cctv44,ir56,lowres,orl")
    parser.add_argument("--model", default="dlib-resnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=None, help="[default: the command's own]")
    parser.add_argument("--dry-run", action="store_true", help="camera sets: measure the gate, keep nothing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--keep-anyway", action="store_true", help="camera sets: keep what the gate refuses (a diagnostic)"
    )
    parser.add_argument("--face-size", type=float, default=None, help="camera sets: adapt --face-size, as told")
    parser.add_argument("--grey", action="store_true", help="camera sets: adapt --grey, as told")
    args = parser.parse_args()
    machine = set_threads(args.threads)
    machine["device"] = args.device
    shared = find_shared()
    results = {}
    with tempfile.TemporaryDirectory(prefix="facerec-bench-adapt-") as tmp:
        for name in args.sets.split(","):
            if name in CAMERAS:
                r = results[name] = run_camera(name, shared, args, Path(tmp))
                rows = [
                    (
                        f"{name}: camera measured",
                        CameraSummary(**r["camera"]["target"]).line() if r["camera"] else "-",
                    ),
                    *(
                        (f"{name}: {label}", f"{r[key]['before']:.4f} -> {r[key]['after']:.4f}")
                        for label, key in CAMERA_ROWS
                    ),
                    (f"{name}: faces joined with camera views", str(r["camera"]["views"]) if r["camera"] else "-"),
                    (f"{name}: after, LFW table mapped instead", str(r["lfw_table_mapped"])),
                    (
                        f"{name}: LFW 1,200 clean pairs",
                        f"{r['lfw_1200_pairs']['before']:.4f} -> {r['lfw_1200_pairs']['after']:.4f}",
                    ),
                    (
                        f"{name}: gate (held-out, synthetic)",
                        f"top-1 {r['gate']['before']:.4f} -> {r['gate']['after']:.4f}, named right "
                        f"{r['gate']['named'][0]} -> {r['gate']['named'][1]}, top-1 gain interval {r['gate']['gain']}",
                    ),
                    (
                        f"{name}: adapt time ({r['device']}), epochs",
                        f"{r['adapt_s']:.0f} s, {r['epochs_run']} (best {r['best_epoch']})",
                    ),
                    (f"{name}: kept", f"{r['kept']}: {r['reason']}"),
                ]
            else:
                r = results[name] = run_set(name, SETS[name], shared, args, Path(tmp))
                a = r["adapt"]
                rows = [
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
                    (
                        f"{name}: adapt gate (held-out) before -> after",
                        f"{a['gate_before']:.4f} -> {a['gate_after']:.4f}",
                    ),
                    (f"{name}: LFW check before -> after", f"{a['lfw_before']:.4f} -> {a['lfw_after']:.4f}"),
                    (
                        f"{name}: adapt time ({a['device']}), epochs",
                        f"{a['seconds']:.0f} s, {a['epochs_run']} (best {a['best_epoch']})",
                    ),
                    (f"{name}: kept", f"{a['kept']}: {a['reason']}"),
                ]
            print_table(f"facerec adapt ({args.model}): {name}", rows, machine)
            sys.stdout.flush()  # a set's figures as soon as it is done: the three camera sets take a while
    print_json("adapt", {"model": args.model, "epochs": args.epochs, "sets": results}, machine)


if __name__ == "__main__":
    main()
