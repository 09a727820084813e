"""Identifying faces against the gallery: every face of a photo named by the decision policy, photos
read and detected in the background while the faces of a few photos are embedded together."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .decision import UNKNOWN, Policy
from .detect import Face
from .errors import ImageError, InputError, NoFaceError
from .gallery import Candidate, FaceRecord, validate_name
from .images import iter_image_files
from .pipeline import BATCH_PHOTOS, BATCH_PIXELS, EMBED_PHOTOS, ReducedPhoto
from .prefetch import prefetch_batches
from .session import GallerySession


@dataclass
class FaceMatch:
    """One face of an image: its box and detection score, the name it gets, the cosine similarity to that
    person (or to the closest one, for 'unknown') and the score the decision compared with the threshold."""

    box: list[float]
    score: float
    name: str
    similarity: float | None
    candidates: list[Candidate]
    match_score: float | None = None


@dataclass
class ImageResult:
    image: str
    faces: list[FaceMatch] = field(default_factory=list)
    threshold: float | None = None  # on the match_score scale; None where nobody can be named
    operating_point: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return asdict(self)


@dataclass
class _Detected:
    """One photo after the background stage: its faces and chips, the pixels when they are to be drawn on,
    or why it could not be read."""

    path: Path
    faces: list[Face] = field(default_factory=list)
    chips: list[np.ndarray] = field(default_factory=list)
    pixels: np.ndarray | None = None
    error: str | None = None


def expand_paths(paths: Iterable[str | Path]) -> Iterator[tuple[Path, str | None]]:
    """Files as given, folders as the images inside them; a path that cannot be used comes with its error."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = iter_image_files(path)
            if not files:
                yield path, f"{path}: no images in this folder"
            yield from ((f, None) for f in files)
        elif path.exists() or path.is_symlink():
            yield path, None
        else:
            yield path, f"{path}: no such file"


def name_faces(
    session: GallerySession, photos: list[tuple[str, list[Face], list[np.ndarray]]], policy: Policy, top_k: int
) -> list[ImageResult]:
    """Name the faces of several photos (name, faces, chips) with one batch through the embedder; within
    each photo, one person names one face at most (Policy.name_faces)."""
    vectors = session.pipeline.embed([chip for _, _, chips in photos for chip in chips])
    raw = session.reader.search(vectors, top_k=max(1, top_k, policy.candidates_needed), rule=policy.rule)
    ranked = iter(policy.rank(vectors, raw))
    threshold = round(policy.threshold, 4) if np.isfinite(policy.threshold) else None
    results = []
    for name, faces, _ in photos:
        candidates = [next(ranked) for _ in faces]
        matches = []
        for face, cands, chosen in zip(faces, candidates, policy.name_faces(candidates)):
            shown = chosen or (cands[0] if cands else None)
            matches.append(
                FaceMatch(
                    box=[round(v, 1) for v in face.box],
                    score=round(face.score, 4),
                    name=chosen.name if chosen else UNKNOWN,
                    similarity=round(shown.similarity, 4) if shown else None,
                    match_score=round(shown.score, 4) if shown and shown.score is not None else None,
                    candidates=[_rounded(c) for c in cands[: max(1, top_k)]],
                )
            )
        results.append(ImageResult(image=name, faces=matches, threshold=threshold, operating_point=policy.source))
    return results


def _rounded(candidate: Candidate) -> Candidate:
    score = None if candidate.score is None else round(candidate.score, 4)
    return Candidate(candidate.name, round(candidate.similarity, 4), score)


def identify_image(
    session: GallerySession,
    image: str | Path | np.ndarray,
    *,
    threshold: float | None = None,
    top_k: int = 3,
    max_false_accept: float | None = None,
) -> ImageResult:
    """Every face in one image (a path or RGB pixels), named by its best match or 'unknown'."""
    pipeline = session.pipeline
    if isinstance(image, np.ndarray):
        name, faces = "<array>", pipeline.detect(image)
        chips = pipeline.chips(image, faces)
    else:
        name, photo = str(image), pipeline.load_reduced(Path(image))
        faces = pipeline.detect_photos([photo])[0]
        chips = pipeline.photo_chips(photo, faces)
    policy = session.policy(threshold, max_false_accept=max_false_accept)
    return name_faces(session, [(name, faces, chips)], policy, top_k)[0]


def identify_paths(
    session: GallerySession,
    paths: Iterable[str | Path],
    *,
    threshold: float | None = None,
    top_k: int = 3,
    annotate_dir: str | Path | None = None,
    max_false_accept: float | None = None,
) -> Generator[ImageResult, None, None]:
    """identify over files and folders; a bad input yields a result with `error` and the batch goes on.

    Results come in order, a few photos at a time.
    """
    from .annotate import draw_matches, write_image

    policy = session.policy(
        threshold, max_false_accept=max_false_accept
    )  # fail fast (no gallery, wrong model) before the first image
    pipeline = session.pipeline

    def prepare_one(path: Path, found: tuple[ReducedPhoto, list[Face]] | ImageError) -> _Detected:
        if isinstance(found, ImageError):
            return _Detected(path, error=str(found))
        photo, faces = found
        pixels = pipeline.full_image(photo) if annotate_dir is not None else None
        return _Detected(path, faces, pipeline.photo_chips(photo, faces), pixels)

    def prepare(entries: list[tuple[Path, str | None]]) -> list[_Detected]:
        """Reading, detecting and cutting chips, in the background, for a few photos detected together."""
        found = iter(pipeline.find_faces([path for path, error in entries if error is None]))
        return [
            _Detected(path, error=error) if error is not None else prepare_one(path, next(found))
            for path, error in entries
        ]

    def finish(batch: list[_Detected]) -> Generator[ImageResult, None, None]:
        readable = [(str(d.path), d.faces, d.chips) for d in batch if d.error is None]
        named = iter(name_faces(session, readable, policy, top_k))
        for done in batch:
            if done.error is not None:
                yield ImageResult(image=str(done.path), error=done.error)
                continue
            result = next(named)
            if done.pixels is not None and annotate_dir is not None:
                write_image(draw_matches(done.pixels, result.faces), Path(annotate_dir), done.path.stem)
            yield result
        batch.clear()

    batch: list[_Detected] = []
    workers = session.settings.workers
    for detected in prefetch_batches(
        expand_paths(paths),
        prepare,
        weight=lambda entry: pipeline.detection_pixels(entry[0]) if entry[1] is None else 0.0,
        budget=BATCH_PIXELS,
        most=BATCH_PHOTOS,
        workers=workers,
        depth=2 * workers + 2,
    ):
        batch.append(detected)
        if len(batch) >= EMBED_PHOTOS or sum(len(d.chips) for d in batch) >= session.settings.batch_size:
            yield from finish(batch)
    yield from finish(batch)


@dataclass
class RejectReport:
    image: str
    box: list[float]
    not_person: str
    was_named: str  # what the face was named before the veto
    vetoes: int  # faces vetoed for this person now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reject(session: GallerySession, image: str | Path, name: str) -> RejectReport:
    """Say that a face of `image` is not `name`: the face the gallery takes for them (or the photo's one face),
    vetoed for `name` — it and faces nearly identical to it are never named `name` again."""
    name = validate_name(name)
    path = Path(image)
    if name not in session.reader.people():
        raise InputError(f"no person named {name!r} in gallery {session.path}; see `facerec people`")
    pipeline = session.pipeline
    photo = pipeline.load_photo(path)
    assert photo.image is not None
    faces = pipeline.detect(photo.image)
    if not faces:
        raise NoFaceError(f"{path}: no face found")
    vectors = pipeline.vectors(photo.image, faces)
    named = name_faces(session, [(str(path), faces, pipeline.chips(photo.image, faces))], session.policy(), 1)[0]
    taken = [i for i, face in enumerate(named.faces) if face.name == name]
    if taken:
        pick = taken[0]
    elif len(faces) == 1:
        pick = 0
    else:
        raise InputError(
            f"{path}: {len(faces)} faces and none is taken for {name}; crop the photo to the face that is not {name}"
        )
    face = faces[pick]
    with session.open_writer() as gallery:
        gallery.add_veto(FaceRecord(name, str(path.resolve()), photo.sha256, face.box, face.score), vectors[pick])
        count = len(gallery.vetoes(gallery.meta.weights_sha256).get(name, ()))
    return RejectReport(str(path), [round(v, 1) for v in face.box], name, named.faces[pick].name, count)
