"""facerec against face_recognition, side by side, on the same photos in one run: LFW, and LFW made into
larger web-style photos.

    pip install face_recognition --no-deps "setuptools<81"   # plus dlib-bin (in facerec's test extras)
    python bench/compare.py [--min-photos 6] [--max-probes 3] [--strangers 500] [--pairs-folds 2] [--threads 2]
                            [--min-face 20] [--sets lfw,web,large] [--web-people 12] [--web-strangers 12]
                            [--large-people 6] [--large-strangers 6] [--repeats 2]

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
second cover everything each tool does to a photo (read, detect, encode), CPU, one process; the tools take
turns --repeats times on each set and each one's best speed is reported (accuracy is the first run's: every
run gives the same).

Web-style sets (identification only, same rules): --web-people (--large-people) of the enrolled people (3
photos each, up to 2 probes each) and --web-strangers (--large-strangers) strangers, each LFW photo made
into a larger JPEG (quality 90) in a temporary folder: upscaled (bicubic) so that it spans 45 % of the
short side (the face about a fifth), pasted with soft edges near the centre of a canvas cut, flipped and
tinted at random (seeded) from a photo with no face in it (../shared/faces/nofaces/dogs.jpg). `web`:
480x360 and 360x480, the median size of web photos; `large`: 1600x1200, 1800x2400, 3200x2400 and
3024x4032 (camera and phone photos). The faces keep LFW's detail (upscaled, not sharper), so these measure
speed at web sizes, and accuracy only roughly. facerec's models are loaded before the clock starts, as
face_recognition's are when it is imported.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from _common import find_shared, print_json, print_table, set_threads


def protocol(lfw: Path, min_photos: int, max_probes: int, strangers: int):
    from facerec.lfw import lfw_photos, stable_fraction

    people = lfw_photos(lfw)
    enrolled = {n: p[:3] for n, p in people.items() if len(p) >= min_photos}
    probes = [(n, q) for n, p in people.items() if len(p) >= min_photos for q in p[3 : 3 + max_probes]]
    others = sorted((n for n, p in people.items() if len(p) < min_photos), key=stable_fraction)[:strangers]
    return enrolled, probes + [(None, people[n][0]) for n in others]


# Canvas sizes (width, height) of the web-style sets, used in turn photo after photo.
WEB_SETS = {
    "web": [(480, 360), (360, 480)],
    "large": [(1600, 1200), (1800, 2400), (3200, 2400), (3024, 4032)],
}


def web_protocol(enrolled, probes, people: int, strangers: int):
    """A few of the protocol's people (3 enrolled photos and up to 2 probes each) and strangers."""
    from facerec.lfw import stable_fraction

    names = sorted(enrolled, key=stable_fraction)[:people]
    kept = {n: enrolled[n] for n in names}
    known = [(n, q) for n in names for q in [p for t, p in probes if t == n][:2]]
    return kept, known + [(t, p) for t, p in probes if t is None][:strangers]


def web_style(source: Path, size: tuple[int, int], background: np.ndarray, seed: int) -> np.ndarray:
    """An LFW photo as a larger web photo (BGR): see the module docstring."""
    rng = np.random.default_rng(seed)
    width, height = size
    cover = max(width / background.shape[1], height / background.shape[0]) * rng.uniform(1.0, 1.5)
    scaled = cv2.resize(background, None, fx=cover, fy=cover, interpolation=cv2.INTER_LINEAR)
    top = int(rng.integers(0, scaled.shape[0] - height + 1))
    left = int(rng.integers(0, scaled.shape[1] - width + 1))
    canvas = scaled[top : top + height, left : left + width]
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    canvas = np.clip(canvas * rng.uniform(0.7, 1.2, 3), 0, 255)
    photo = cv2.imread(str(source))
    side = int(0.45 * min(width, height))
    photo = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC if side > photo.shape[0] else cv2.INTER_AREA)
    x = (width - side) // 2 + int(rng.integers(-side // 10, side // 10 + 1))
    y = (height - side) // 2 + int(rng.integers(-side // 10, side // 10 + 1))
    mask = np.zeros((side, side), np.float32)
    edge = max(2, side // 12)
    mask[edge:-edge, edge:-edge] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), edge / 2)[..., None]
    region = canvas[y : y + side, x : x + side]
    canvas[y : y + side, x : x + side] = mask * photo + (1 - mask) * region
    return canvas.astype(np.uint8)


def make_web_set(enrolled, probes, sizes: list[tuple[int, int]], root: Path, background: np.ndarray):
    """The protocol's photos made web-style under `root` (same person folders and file names)."""
    made: dict[Path, Path] = {}
    for i, photo in enumerate(dict.fromkeys([p for ps in enrolled.values() for p in ps] + [p for _, p in probes])):
        target = root / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        image = web_style(photo, sizes[i % len(sizes)], background, seed=i)
        cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        made[photo] = target
    return {n: [made[p] for p in ps] for n, ps in enrolled.items()}, [(t, made[p]) for t, p in probes]


def photo_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


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

    @staticmethod
    def warm_up(photo: Path) -> None:
        """Load the models and build the detector's networks once, before any clock starts, as
        face_recognition loads its models when it is imported (about 6 s here, once per process)."""
        from facerec import FacePipeline
        from facerec.prefetch import torch_threads

        pipeline = FacePipeline.load("dlib-resnet", device="cpu")
        pipeline.faces(pipeline.read(photo))
        with torch_threads(1):  # enroll and identify embed on one thread beside their detection threads
            pipeline.faces(pipeline.read(photo))

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
        for (_, path), result in zip(probes, rec.identify_paths([p for _, p in probes], top_k=1)):
            pick = central([tuple(f.box) for f in result.faces], *photo_size(path))
            best = result.faces[pick].candidates[0] if pick is not None else None
            # The decision's score (s-norm under a calibrated policy) is what its threshold is on.
            answers.append(
                (best.name, best.similarity if best.score is None else best.score) if best else (None, -np.inf)
            )
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
    """Identification figures, and verification ones when `pairs` are given."""
    from facerec.evaluate import ten_fold

    started = time.perf_counter()
    best = tool.identify(enrolled, probes)
    identify_s = time.perf_counter() - started
    photos = sum(len(p) for p in enrolled.values()) + len(probes)
    figures = {**open_set(probes, best, tool.threshold), "identify_photos_per_s": round(photos / identify_s, 2)}
    if pairs:
        started = time.perf_counter()
        scores = tool.pair_scores([p.a for p in pairs], [p.b for p in pairs])
        pairs_s = time.perf_counter() - started
        result = ten_fold(scores, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
        figures["pairs_accuracy"] = round(result.accuracy, 4)
        figures["pairs_photos_per_s"] = round(len({p.a for p in pairs} | {p.b for p in pairs}) / pairs_s, 2)
    return {**figures, "_best": best}


def compare(face_recognition_tool, facerec_tool, enrolled, probes, pairs, repeats: int = 1) -> dict:
    """Both tools on one set, face_recognition first, `repeats` times in turn (a fresh facerec gallery each
    time, `facerec_tool(run)`); the figures of the first run, each tool's best speed, and facerec's over
    face_recognition's. Taking turns and the best of each keeps a burst of other work on this shared machine
    from landing on one tool only."""
    runs = []
    for run in range(repeats):
        runs.append([measure(tool, enrolled, probes, pairs) for tool in (face_recognition_tool, facerec_tool(run))])
    a, b = runs[0]
    for key in ("identify_photos_per_s", "pairs_photos_per_s"):
        for figures, tool in ((a, 0), (b, 1)):
            if key in figures:
                figures[key] = max(r[tool][key] for r in runs)
    # face_recognition again, at the threshold that gives it facerec's stranger false-accept rate.
    matched = at_false_accepts(probes, a.pop("_best"), b["stranger_false_accepts"])
    b.pop("_best")
    a["known_accuracy_at_facerec_false_accepts"] = matched["known_accuracy"]
    a["stranger_false_accepts_at_that_threshold"] = matched["stranger_false_accepts"]
    b["known_accuracy_at_facerec_false_accepts"] = b["known_accuracy"]
    b["stranger_false_accepts_at_that_threshold"] = b["stranger_false_accepts"]
    ratio = {key: round(b[key] / a[key], 2) if a[key] else None for key in a}
    return {
        "people": len(enrolled),
        "photos": sum(len(p) for p in enrolled.values()) + len(probes),
        "strangers": sum(t is None for t, _ in probes),
        "pairs": len(pairs),
        "face_recognition": a,
        "facerec": b,
        "ratio": ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-photos", type=int, default=6)
    parser.add_argument("--max-probes", type=int, default=3)
    parser.add_argument("--strangers", type=int, default=500)
    parser.add_argument("--pairs-folds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each tool, in turn; speeds are the best")
    parser.add_argument(
        "--min-face",
        type=int,
        default=20,
        help="facerec's smallest face in pixels (its default 20; face_recognition's HOG finds about 40 and up)",
    )
    parser.add_argument("--sets", default="lfw,web,large", help="which of lfw, web, large to run")
    parser.add_argument("--web-people", type=int, default=12)
    parser.add_argument("--web-strangers", type=int, default=12)
    parser.add_argument("--large-people", type=int, default=6, help="as --web-people, for the large set")
    parser.add_argument("--large-strangers", type=int, default=6)
    args = parser.parse_args()
    sets = args.sets.split(",")
    if not set(sets) <= {"lfw", *WEB_SETS}:
        parser.error(f"--sets: choose from lfw, {', '.join(WEB_SETS)}")
    try:
        face_recognition_tool = FaceRecognitionTool()
    except ImportError as exc:
        raise SystemExit(f"bench: face_recognition cannot be imported ({exc}); see this script's docstring") from None
    machine = set_threads(args.threads)
    from facerec.evaluate import read_pairs

    shared = find_shared()
    lfw = shared / "faces" / "lfw"
    enrolled, probes = protocol(lfw, args.min_photos, args.max_probes, args.strangers)
    pairs = [p for p in read_pairs(lfw / "pairs.txt", lfw) if p.fold < args.pairs_folds]
    background = cv2.imread(str(shared / "faces" / "nofaces" / "dogs.jpg"))
    FacerecTool.warm_up(probes[0][1])
    results = {}
    with tempfile.TemporaryDirectory(prefix="facerec-compare-") as tmp:
        for name in sets:
            work = Path(tmp) / name
            if name == "lfw":
                on = (enrolled, probes, pairs)
            else:
                web = name == "web"
                people = args.web_people if web else args.large_people
                strangers = args.web_strangers if web else args.large_strangers
                few = web_protocol(enrolled, probes, people, strangers)
                on = (*make_web_set(*few, WEB_SETS[name], work / "photos", background), [])
            tool = lambda run, work=work: FacerecTool(work / f"run{run}", args.min_face)
            results[name] = compare(face_recognition_tool, tool, *on, repeats=args.repeats)
            results[name]["sizes"] = [f"{w}x{h}" for w, h in WEB_SETS.get(name, [(250, 250)])]
    rows = [("", "face_rec   facerec  ratio")]
    for name, result in results.items():
        a, b, ratio = result["face_recognition"], result["facerec"], result["ratio"]
        rows.append(
            (
                f"{name} ({', '.join(result['sizes'])}): {result['people']} people enrolled, "
                f"{result['photos']} photos ({result['strangers']} strangers)",
                "",
            )
        )
        rows += [(f"  {key}", f"{a[key]:>8}  {b[key]:>8}  x{ratio[key]}") for key in a]
    print_table(f"face_recognition vs facerec (facerec's smallest face {args.min_face} px)", rows, machine)
    print_json("compare", {"facerec_min_face": args.min_face, **results}, machine)


if __name__ == "__main__":
    main()
