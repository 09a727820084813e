"""facerec against face_recognition, side by side, on the same LFW photos in one run.

    pip install face_recognition --no-deps "setuptools<81"   # plus dlib-bin (in facerec's test extras)
    python bench/compare.py [--min-photos 6] [--max-probes 3] [--strangers 500] [--pairs-folds 2] [--threads 2]
                            [--min-face 20]

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
    return min(
        range(len(boxes)),
        key=lambda i: (
            ((boxes[i][0] + boxes[i][2]) / 2 - width / 2) ** 2 + ((boxes[i][1] + boxes[i][3]) / 2 - height / 2) ** 2
        ),
    )


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

    threshold = -0.6  # scores are negative Euclidean distances; 0.6 is face_recognition's default tolerance

    def identify(
        self, enrolled: dict[str, list[Path]], probes: list[tuple[str | None, Path]]
    ) -> list[tuple[str | None, float]]:
        """Each probe's nearest enrolled person and score, whatever the threshold (None: no face found)."""
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
                answers.append((None, -np.inf))
                continue
            distances = self.fr.face_distance(known, vector)
            best = int(np.argmin(distances))
            answers.append((names[best], -float(distances[best])))
        return answers

    def pair_scores(self, a: list[Path], b: list[Path]) -> np.ndarray:
        encoded = {p: self.encode(p) for p in dict.fromkeys(a + b)}
        return np.array(
            [
                -float(np.linalg.norm(encoded[x] - encoded[y]))
                if encoded[x] is not None and encoded[y] is not None
                else -1.0
                for x, y in zip(a, b)
            ]
        )


class FacerecTool:
    name = "facerec"

    def __init__(self, work: Path, min_face: int) -> None:
        self.work = work
        self.min_face = min_face
        self.threshold = 0.0  # set by identify: the calibrated threshold for this gallery

    def identify(
        self, enrolled: dict[str, list[Path]], probes: list[tuple[str | None, Path]]
    ) -> list[tuple[str | None, float]]:
        from facerec import FaceRecognizer

        folder = self.work / "enroll"
        for name, photos in enrolled.items():
            (folder / name).mkdir(parents=True)
            for photo in photos:
                (folder / name / photo.name).symlink_to(photo)
        rec = FaceRecognizer(self.work / "gallery", model="dlib-resnet", device="cpu", min_face_size=self.min_face)
        rec.enroll(folder)
        self.threshold = rec.threshold()
        answers = []
        for result in rec.identify_paths([p for _, p in probes], top_k=1):
            pick = central([tuple(f.box) for f in result.faces], 250, 250)
            best = result.faces[pick].candidates[0] if pick is not None else None
            answers.append((best.name, best.similarity) if best else (None, -np.inf))
        return answers

    def pair_scores(self, a: list[Path], b: list[Path]) -> np.ndarray:
        from facerec import FacePipeline
        from facerec.lfw import central_chips

        pipeline = FacePipeline.load("dlib-resnet", device="cpu", min_face_size=self.min_face)
        photos = list(dict.fromkeys(str(p) for p in a + b))
        chips, _ = central_chips(photos, pipeline)
        vectors = dict(zip(photos, pipeline.embed(chips)))
        return np.array([float(vectors[str(x)] @ vectors[str(y)]) for x, y in zip(a, b)])


def open_set(probes, best: list[tuple[str | None, float]], threshold: float) -> dict:
    """Known people named right and strangers named at all, naming a face when its score reaches threshold."""
    named = [name if score >= threshold else None for name, score in best]
    known = [truth == name for (truth, _), name in zip(probes, named) if truth is not None]
    strangers = [name is not None for (truth, _), name in zip(probes, named) if truth is None]
    return {
        "known_accuracy": round(float(np.mean(known)), 4),
        "stranger_false_accepts": round(float(np.mean(strangers)), 4),
    }


def at_false_accepts(probes, best: list[tuple[str | None, float]], rate: float) -> dict:
    """The open-set figures at the threshold that names `rate` of the strangers: the tools compared at one
    operating point."""
    scores = np.sort([score for (truth, _), (_, score) in zip(probes, best) if truth is None])[::-1]
    threshold = (
        float(np.nextafter(scores[int(rate * len(scores))], np.inf))
        if int(rate * len(scores)) < len(scores)
        else -np.inf
    )
    return {**open_set(probes, best, threshold), "threshold": round(threshold, 4)}


def measure(tool, enrolled, probes, pairs) -> dict:
    from facerec.evaluate import ten_fold

    started = time.perf_counter()
    best = tool.identify(enrolled, probes)
    identify_s = time.perf_counter() - started
    photos = sum(len(p) for p in enrolled.values()) + len(probes)
    rates = open_set(probes, best, tool.threshold)
    started = time.perf_counter()
    scores = tool.pair_scores([p.a for p in pairs], [p.b for p in pairs])
    pairs_s = time.perf_counter() - started
    result = ten_fold(scores, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    return {
        **rates,
        "identify_photos_per_s": round(photos / identify_s, 2),
        "pairs_accuracy": round(result.accuracy, 4),
        "pairs_photos_per_s": round(len({p.a for p in pairs} | {p.b for p in pairs}) / pairs_s, 2),
        "_best": best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-photos", type=int, default=6)
    parser.add_argument("--max-probes", type=int, default=3)
    parser.add_argument("--strangers", type=int, default=500)
    parser.add_argument("--pairs-folds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--min-face",
        type=int,
        default=20,
        help="facerec's smallest face in pixels (its default 20; face_recognition's HOG finds about 40 and up)",
    )
    args = parser.parse_args()
    try:
        face_recognition_tool = FaceRecognitionTool()
    except ImportError as exc:
        raise SystemExit(f"bench: face_recognition cannot be imported ({exc}); see this script's docstring") from None
    machine = set_threads(args.threads)
    from facerec.evaluate import read_pairs

    lfw = find_shared() / "faces" / "lfw"
    enrolled, probes = protocol(lfw, args.min_photos, args.max_probes, args.strangers)
    pairs = [p for p in read_pairs(lfw / "pairs.txt", lfw) if p.fold < args.pairs_folds]
    with tempfile.TemporaryDirectory(prefix="facerec-compare-") as tmp:
        results = {
            tool.name: measure(tool, enrolled, probes, pairs)
            for tool in (face_recognition_tool, FacerecTool(Path(tmp), args.min_face))
        }
    a, b = results["face_recognition"], results["facerec"]
    # face_recognition again, at the threshold that gives it facerec's stranger false-accept rate.
    matched = at_false_accepts(probes, a.pop("_best"), b["stranger_false_accepts"])
    b.pop("_best")
    a["known_accuracy_at_facerec_false_accepts"] = matched["known_accuracy"]
    a["stranger_false_accepts_at_that_threshold"] = matched["stranger_false_accepts"]
    b["known_accuracy_at_facerec_false_accepts"] = b["known_accuracy"]
    b["stranger_false_accepts_at_that_threshold"] = b["stranger_false_accepts"]
    ratio = {key: round(b[key] / a[key], 2) if a[key] else None for key in a}
    rows = [(key, f"{a[key]:>8}  {b[key]:>8}  x{ratio[key]}") for key in a]
    print_table(
        f"face_recognition vs facerec ({len(enrolled)} people enrolled, {len(probes)} probes of which "
        f"{sum(t is None for t, _ in probes)} strangers, {len(pairs)} LFW pairs; facerec's smallest face "
        f"{args.min_face} px)",
        [("", "face_rec   facerec  ratio"), *rows],
        machine,
    )
    print_json(
        "compare",
        {
            "people": len(enrolled),
            "probes": len(probes),
            "pairs": len(pairs),
            "facerec_min_face": args.min_face,
            **results,
            "ratio": ratio,
        },
        machine,
    )


if __name__ == "__main__":
    main()
