"""LFW through facerec's own pipeline (read → detect → align → embed), for `facerec eval` and the benchmarks.

Each photo's raw descriptors, of the chip and of its mirror image, are cached per model and weights, so
a re-run is fast and every decision rule (flip or not, cosine or Euclidean) is measured on the same
vectors. LFW photos are 250x250 with the face centred: the face nearest the centre is the labelled one.
When MTCNN finds no face, the photo is aligned with the mean landmarks of the photos where it did (the
faces sit at the same place in every LFW photo) and counted in `PhotoVectors.missed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .detect import Face
from .errors import InputError
from .evaluate import PairsResult, read_pairs, ten_fold
from .fileio import atomic_path, sha256_bytes
from .pipeline import FacePipeline
from .prefetch import prefetch
from .vectors import normalise

_CHUNK = 1024  # photos per cache save: an interrupted run loses at most this many


@dataclass
class PhotoVectors:
    paths: list[str]
    plain: np.ndarray  # raw descriptors of each photo's face chip
    mirror: np.ndarray  # raw descriptors of the mirrored chip
    detected: np.ndarray  # False where no face was found and the mean landmarks were used

    @property
    def missed(self) -> int:
        return int((~self.detected).sum())

    def vectors(self, flip: bool) -> np.ndarray:
        """Unit vectors, with or without test-time flip averaging."""
        return normalise(self.plain + self.mirror if flip else self.plain)

    def rows(self, paths: list[str | Path]) -> np.ndarray:
        where = {p: i for i, p in enumerate(self.paths)}
        return np.array([where[_key(p)] for p in paths], np.int64)


def _key(path: str | Path) -> str:
    """Photos are known by their absolute path, however they were named on the command line."""
    return str(Path(path).resolve())


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facerec"


def central_face(faces: list[Face], width: int, height: int) -> Face | None:
    """The detection whose centre is nearest the image centre."""
    if not faces:
        return None
    cx, cy = width / 2, height / 2
    return min(faces, key=lambda f: ((f.box[0] + f.box[2]) / 2 - cx) ** 2 + ((f.box[1] + f.box[3]) / 2 - cy) ** 2)


def _cache_file(pipeline: FacePipeline) -> Path:
    return cache_dir() / f"lfw-{pipeline.model}-{pipeline.embedder.weights_sha256[:16]}.npz"


def _load_cache(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {
                p: (a, b, bool(d)) for p, a, b, d in zip(data["paths"], data["plain"], data["mirror"], data["detected"])
            }
    except (OSError, KeyError, ValueError):
        return {}


def _save_cache(path: Path, known: dict[str, tuple[np.ndarray, np.ndarray, bool]]) -> None:
    paths = sorted(known)
    with atomic_path(path, 0o644) as tmp, open(tmp, "xb") as f:
        np.savez(
            f,
            paths=np.array(paths),
            plain=np.stack([known[p][0] for p in paths]),
            mirror=np.stack([known[p][1] for p in paths]),
            detected=np.array([known[p][2] for p in paths]),
        )


def central_chips(
    paths: list[str], pipeline: FacePipeline, *, progress: bool = False, workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """The model's chip of the central face of every photo, and whether a face was detected there (see the
    module docstring for photos without one). `workers` threads read and detect at once."""
    chips: list[np.ndarray | None] = []
    missing: list[tuple[int, np.ndarray]] = []
    landmarks = []

    def detect(key: str) -> tuple[np.ndarray, Face | None]:
        image = pipeline.read(key)
        return image, central_face(pipeline.detect(image), image.shape[1], image.shape[0])

    bar = tqdm(total=len(paths), desc="detect", unit="photo", disable=not progress, leave=False)
    for image, face in prefetch(paths, detect, workers=workers):
        bar.update()
        if face is None:
            missing.append((len(chips), image))
            chips.append(None)
            continue
        chips.append(pipeline.chip(image, face))
        landmarks.append(face.landmarks)
    bar.close()
    if missing:
        mean = np.mean(np.array(landmarks), axis=0) if landmarks else None
        for row, image in missing:
            if mean is None:  # pragma: no cover - only when no face at all was found
                mean = (
                    np.array([[0.4, 0.45], [0.6, 0.45], [0.5, 0.55], [0.42, 0.65], [0.58, 0.65]]) * image.shape[1::-1]
                )
            face = Face((0.0, 0.0, float(image.shape[1]), float(image.shape[0])), 0.0, tuple(map(tuple, mean)))
            chips[row] = pipeline.chip(image, face)
    detected = np.ones(len(paths), bool)
    detected[[row for row, _ in missing]] = False
    return pipeline.embedder.stack([chip for chip in chips if chip is not None]), detected


def embed_photos(
    paths: list[Path], pipeline: FacePipeline, *, use_cache: bool = True, progress: bool = True
) -> PhotoVectors:
    """Raw descriptors (plain and mirrored) of the central face of every photo, cached per weights file."""
    keys = [_key(p) for p in paths]
    cache = _cache_file(pipeline)
    known = _load_cache(cache) if use_cache else {}
    todo = [p for p in dict.fromkeys(keys) if p not in known]
    bar = tqdm(total=len(todo), desc=f"embed ({pipeline.model})", unit="photo", disable=not progress)
    for start in range(0, len(todo), _CHUNK):
        chunk = todo[start : start + _CHUNK]
        chips, detected = central_chips(chunk, pipeline)
        for key, a, b, found in zip(chunk, *pipeline.embedder.views(chips), detected):
            known[key] = (a, b, bool(found))
        bar.update(len(chunk))
        if use_cache:  # an interrupted run resumes from here
            _save_cache(cache, known)
    bar.close()
    return PhotoVectors(
        paths=keys,
        plain=np.stack([known[k][0] for k in keys]).astype(np.float32),
        mirror=np.stack([known[k][1] for k in keys]).astype(np.float32),
        detected=np.array([known[k][2] for k in keys]),
    )


def lfw_photos(lfw_dir: Path) -> dict[str, list[Path]]:
    """Every person's photos, in file order."""
    return {p.name: sorted(p.glob("*.jpg")) for p in sorted(lfw_dir.iterdir()) if p.is_dir()}


def stable_fraction(name: str) -> float:
    """A fixed pseudo-random number in [0, 1) per name, for splits that never change between runs."""
    return int(sha256_bytes(name.encode())[:8], 16) / 2**32


@dataclass
class PairsReport:
    result: PairsResult
    scores: np.ndarray  # cosine similarity per pair
    same: np.ndarray
    pairs_file: Path
    photos: int
    missed: int  # photos where MTCNN found no face


def evaluate_pairs(
    lfw_dir: Path,
    pairs_file: Path | None,
    pipeline: FacePipeline,
    *,
    use_cache: bool = True,
    progress: bool = True,
) -> PairsReport:
    """The standard 10-fold protocol on a pairs file, with the embedder's own flip setting."""
    pairs_file = pairs_file or lfw_dir / "pairs.txt"
    if not pairs_file.is_file():
        raise InputError(f"{pairs_file}: no such pairs file; give --pairs FILE (LFW's pairs.txt)")
    pairs = read_pairs(pairs_file, lfw_dir)
    photos = list(dict.fromkeys(p for pair in pairs for p in (pair.a, pair.b)))
    vectors = embed_photos(photos, pipeline, use_cache=use_cache, progress=progress)
    unit = vectors.vectors(flip=pipeline.embedder.spec.flip)
    a, b = vectors.rows([p.a for p in pairs]), vectors.rows([p.b for p in pairs])
    scores = (unit[a] * unit[b]).sum(axis=1)
    same = np.array([p.same for p in pairs])
    result = ten_fold(scores, same, np.array([p.fold for p in pairs]))
    return PairsReport(result, scores, same, pairs_file, len(photos), vectors.missed)


@dataclass
class OpenSetProtocol:
    """Identification against a gallery, with strangers: how identification thresholds are calibrated.

    Known people: everyone in LFW with at least `min_photos` photos; their first `enroll` photos (file
    order) are enrolled and up to `max_probes` of the rest are probes. Strangers: the first photo of
    every person with fewer photos, never enrolled; any name given to them is a false accept.
    """

    enrolled: dict[str, list[Path]]
    probes: list[Path]
    truth: list[str | None]  # the probe's person, None for a stranger


def open_set_protocol(lfw_dir: Path, *, min_photos: int = 4, enroll: int = 3, max_probes: int = 10) -> OpenSetProtocol:
    enrolled: dict[str, list[Path]] = {}
    probes: list[Path] = []
    truth: list[str | None] = []
    person: str | None
    for person, photos in lfw_photos(lfw_dir).items():
        if len(photos) >= min_photos:
            enrolled[person] = photos[:enroll]
            rest = photos[enroll : enroll + max_probes]
        else:
            rest = photos[:1]
            person = None
        probes += rest
        truth += [person] * len(rest)
    return OpenSetProtocol(enrolled, probes, truth)
