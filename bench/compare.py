"""facerec against face_recognition, side by side, on the same LFW photos in one run.

    pip install face_recognition --no-deps "setuptools<81"   # plus dlib-bin (in facerec's test extras)
    python bench/compare.py [--min-photos 6] [--max-probes 3] [--strangers 500] [--pairs-folds 2] [--threads 2]

This script installs nothing. face_recognition needs dlib (`dlib-bin` wheels), `face_recognition_models`
(a facerec dependency) and `pkg_resources` (setuptools below 81).

Identification: every LFW person with at least --min-photos photos enrolls their first 3; up to
--max-probes of their other photos are probes; the first photo of --strangers people with fewer photos
(never enrolled) must come out unknown. Each tool as its documentation says to use it: face_recognition
finds faces with its default HOG detector, encodes them, and names a face after the nearest enrolled
encoding within its default tolerance 0.6 (Euclidean); facerec enrolls and identifies through its Python
API with `dlib-resnet` (MTCNN, aligned chips, test-time flip, person centroids, calibrated threshold).
In every photo the face nearest the centre is the labelled one; a photo where a tool finds no face counts
as wrong (unknown, for a stranger: a correct reject). Verification: the LFW pairs of the first
--pairs-folds folds, 10-fold-style accuracy with the threshold chosen on the other folds. Photos per
second cover everything each tool does to a photo (read, detect, encode), CPU, one process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import find_shared, print_json, print_table, set_threads


def protocol(lfw: Path, min_photos: int, max_probes: int, strangers: int):
    from facerec.lfw import lfw_photos, stable_fraction

    people = lfw_photos(lfw)
    enrolled = {n: p[:3] for n, p in people.items() if len(p) >= min_photos}
    probes = [(n, q) for n, p in people.items() if len(p) >= min_photos for q in p[3 : 3 + max_probes]]
    others = sorted((n for n, p in people.items() if len(p) < min_photos), key=stable_fraction)[:strangers]
    return enrolled, probes + [(None, people[n][0]) for n in others]


def central(boxes: list[tuple[float, float, float, float]], width: int, height: int) -> int | None:
    """Index of the box (x1, y1, x2, y2) whose centre is nearest the image centre."""
    if not boxes:
        return None
    return min(range(len(boxes)), key=lambda i: ((boxes[i][0] + boxes[i][2]) / 2 - width / 2) ** 2
               + ((boxes[i][1] + boxes[i][3]) / 2 - height / 2) ** 2)


class FaceRecognitionTool:
    name = "face_recognition"

    def __init__(self) -> None:
        import face_recognition

        self.fr = face_recognition

    def encode(self, path: Path) -> np.ndarray | None:
        image = self.fr.load_image_file(str(path))
        locations = self.fr.face_locations(image)  # (top, right, bottom, left), HOG
        boxes = [(left, top, right, bottom) for top, right, bottom, left in locations]
        pick = central(boxes, image.shape[1], image.shape[0])
        if pick is None:
            return None
        return self.fr.face_encodings(image, [locations[pick]])[0]

    def identify(self, enrolled: dict[str, list[Path]], probes: list[tuple[str | None, Path]]) -> list[str | None]:
        names, vectors = [], []
        for name, photos in enrolled.items():
            for photo in photos:
                vector = self.encode(photo)
                if vector is not None:
                    names.append(name)
                    vectors.append(vector)
        known = np.array(vectors)
        answers = []
        for _, photo in probes:
            vector = self.encode(photo)
            if vector is None:
                answers.append(None)
                continue
            distances = self.fr.face_distance(known, vector)
            best = int(np.argmin(distances))
            answers.append(names[best] if distances[best] <= 0.6 else None)
        return answers

    def pair_scores(self, a: list[Path], b: list[Path]) -> np.ndarray:
        encoded = {p: self.encode(p) for p in dict.fromkeys(a + b)}
        return np.array([-float(np.linalg.norm(encoded[x] - encoded[y]))
                         if encoded[x] is not None and encoded[y] is not None else -1.0 for x, y in zip(a, b)])


class FacerecTool:
    name = "facerec"

    def __init__(self, work: Path) -> None:
        self.work = work

    def identify(self, enrolled: dict[str, list[Path]], probes: list[tuple[str | None, Path]]) -> list[str | None]:
        from facerec import FaceRecognizer

        folder = self.work / "enroll"
        for name, photos in enrolled.items():
            (folder / name).mkdir(parents=True)
            for photo in photos:
                (folder / name / photo.name).symlink_to(photo)
        rec = FaceRecognizer(self.work / "gallery", model="dlib-resnet", device="cpu")
        rec.enroll(folder)
        answers = []
        for result in rec.identify_paths([p for _, p in probes], top_k=1):
            boxes = [tuple(f.box) for f in result.faces]
            pick = central(boxes, 250, 250)
            name = None if pick is None else result.faces[pick].name
            answers.append(None if name in (None, "unknown") else name)
        return answers

    def pair_scores(self, a: list[Path], b: list[Path]) -> np.ndarray:
        from facerec.detect import Detector
        from facerec.embedders import load_embedder
        from facerec.config import Settings
        from facerec.lfw import central_chips

        embedder = load_embedder("dlib-resnet", device="cpu", progress=False)
        photos = list(dict.fromkeys(str(p) for p in a + b))
        chips, _ = central_chips(photos, embedder, Detector.from_settings("cpu", Settings.from_env()))
        vectors = dict(zip(photos, embedder.embed(chips)))
        return np.array([float(vectors[str(x)] @ vectors[str(y)]) for x, y in zip(a, b)])


def measure(tool, enrolled, probes, pairs) -> dict:
    from facerec.evaluate import ten_fold

    started = time.perf_counter()
    answers = tool.identify(enrolled, probes)
    identify_s = time.perf_counter() - started
    photos = sum(len(p) for p in enrolled.values()) + len(probes)
    known = [(truth, answer) for (truth, _), answer in zip(probes, answers) if truth is not None]
    strangers = [answer for (truth, _), answer in zip(probes, answers) if truth is None]
    started = time.perf_counter()
    scores = tool.pair_scores([p.a for p in pairs], [p.b for p in pairs])
    pairs_s = time.perf_counter() - started
    result = ten_fold(scores, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    return {
        "known_accuracy": round(sum(t == a for t, a in known) / len(known), 4),
        "stranger_false_accepts": round(sum(a is not None for a in strangers) / max(1, len(strangers)), 4),
        "identify_photos_per_s": round(photos / identify_s, 2),
        "pairs_accuracy": round(result.accuracy, 4),
        "pairs_photos_per_s": round(len({p.a for p in pairs} | {p.b for p in pairs}) / pairs_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-photos", type=int, default=6)
    parser.add_argument("--max-probes", type=int, default=3)
    parser.add_argument("--strangers", type=int, default=500)
    parser.add_argument("--pairs-folds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        face_recognition_tool = FaceRecognitionTool()
    except ImportError as exc:
        raise SystemExit(f"bench: face_recognition cannot be imported ({exc}); see this script's docstring")
    machine = set_threads(args.threads)
    from facerec.evaluate import read_pairs

    lfw = find_shared() / "faces" / "lfw"
    enrolled, probes = protocol(lfw, args.min_photos, args.max_probes, args.strangers)
    pairs = [p for p in read_pairs(lfw / "pairs.txt", lfw) if p.fold < args.pairs_folds]
    with tempfile.TemporaryDirectory(prefix="facerec-compare-") as tmp:
        results = {tool.name: measure(tool, enrolled, probes, pairs)
                   for tool in (face_recognition_tool, FacerecTool(Path(tmp)))}
    a, b = results["face_recognition"], results["facerec"]
    ratio = {key: round(b[key] / a[key], 2) if a[key] else None for key in a}
    rows = [(key, f"{a[key]:>8}  {b[key]:>8}  x{ratio[key]}") for key in a]
    print_table(f"face_recognition vs facerec ({len(enrolled)} people enrolled, {len(probes)} probes of which "
                f"{sum(t is None for t, _ in probes)} strangers, {len(pairs)} LFW pairs)",
                [("", "face_rec   facerec  ratio"), *rows], machine)
    print_json("compare", {"people": len(enrolled), "probes": len(probes), "pairs": len(pairs), **results, "ratio": ratio}, machine)


if __name__ == "__main__":
    main()
