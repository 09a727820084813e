"""Enrolling people: a photo folder (one sub-folder per person, or files named after people) or frames of a
camera, into the gallery, batch by batch, so an interrupted run keeps what it finished."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .camera_view import gallery_view, stored_vectors, view_key
from .detect import Face
from .errors import ImageError, InputError, Interrupted, InvalidNameError
from .fileio import sha256_bytes
from .gallery import FaceRecord, validate_name
from .images import is_image_path, iter_image_files
from .pipeline import BATCH_PHOTOS, BATCH_PIXELS, EMBED_PHOTOS, ReducedPhoto
from .prefetch import prefetch_batches
from .session import GallerySession


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class EnrollReport:
    """What one enroll run did. `failed` are files that could not be read; `skipped` the rest left out."""

    gallery: str
    model: str
    added: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    failed: list[Skipped] = field(default_factory=list)
    people_total: int = 0
    faces_total: int = 0
    interrupted: bool = False

    @property
    def faces_added(self) -> int:
        return sum(self.added.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "faces_added": self.faces_added}


@dataclass
class _Prepared:
    """One enrollment photo after the background stage: a chip to embed, or why it is left out."""

    path: Path
    digest: str = ""
    record: FaceRecord | None = None
    chip: np.ndarray | None = None
    views: np.ndarray | None = None  # the face's camera view, in a gallery that joins faces with one
    skipped: Skipped | None = None  # read, but no usable face
    failed: Skipped | None = None  # could not be read


def plan_enrollment(photo_dir: Path) -> tuple[list[tuple[str, Path]], list[Skipped]]:
    """(person, photo) pairs: every sub-folder is a person; a loose image is a person named by its stem."""
    if not photo_dir.exists():
        raise InputError(f"{photo_dir}: no such folder; give the folder that holds one sub-folder per person")
    if not photo_dir.is_dir():
        raise InputError(f"{photo_dir}: is a file, not a folder; give the folder that holds one sub-folder per person")
    plan: list[tuple[str, Path]] = []
    skipped: list[Skipped] = []
    for entry in sorted(photo_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            name, photos = entry.name, iter_image_files(entry)
        elif is_image_path(entry):
            name, photos = entry.stem, [entry]
        else:
            continue
        try:
            person = validate_name(name)
        except InvalidNameError as exc:
            skipped.extend(Skipped(str(p), str(exc)) for p in photos)
            continue
        plan.extend((person, p) for p in photos)
    if not plan and not skipped:
        raise InputError(
            f"{photo_dir}: no images found; put one sub-folder per person (or image files named after people) in it"
        )
    return plan, skipped


def enroll_folder(session: GallerySession, photo_dir: str | Path) -> EnrollReport:
    """Add every photo of a folder; photos already in the gallery (same content) are skipped cheaply.

    Each batch is committed as it completes, so an interrupted run keeps what it finished and a re-run
    continues where it stopped.
    """
    plan, invalid = plan_enrollment(Path(photo_dir))
    settings = session.settings
    report = EnrollReport(gallery=str(session.path), model=session.model, skipped=list(invalid))
    added: Counter[str] = Counter()
    pending: list[_Prepared] = []  # to embed
    records: list[FaceRecord] = []  # embedded, to commit
    vectors: list[np.ndarray] = []
    pipeline = session.pipeline  # loaded here, not in the background threads

    with session.open_writer() as gallery:
        view = gallery_view(gallery.meta)
        # Who each photo (by content hash) is enrolled as: stored ones, and this run's as they are taken.
        # Background threads only read it, to skip decoding photos seen before (a re-run is quick); the
        # decision is this thread's, so that two copies of one photo in flight are enrolled once.
        owners = gallery.owners_by_hash()

        def embed() -> None:
            """Embed the pending photos' faces (a few at a time, while the background threads detect)."""
            if pending:
                chips = [p.chip for p in pending if p.chip is not None]
                views = [p.views for p in pending if p.views is not None]
                vectors.append(stored_vectors(view, pipeline, chips, views))
                records.extend(p.record for p in pending if p.record is not None)
                pending.clear()

        def flush() -> None:
            """Commit what is embedded, as one transaction."""
            embed()
            if records:
                gallery.add(records, np.concatenate(vectors))
                added.update(record.person for record in records)
                records.clear()
                vectors.clear()

        def prepare_one(person: str, path: Path, found: tuple[ReducedPhoto, list[Face]] | ImageError) -> _Prepared:
            if isinstance(found, ImageError):
                return _Prepared(path, failed=Skipped(str(path), str(found)))
            photo, faces = found
            if photo.image is None:
                return _Prepared(path, photo.sha256)
            face, why = pipeline.choose_main(faces)
            if face is None:
                return _Prepared(path, photo.sha256, skipped=Skipped(str(path), why))
            record = FaceRecord(person, str(path.resolve()), photo.sha256, face.box, face.score)
            views = None
            if view is not None:
                views = view.face_views(pipeline.full_image(photo), face, view_key(photo.sha256, face.box), pipeline)
            return _Prepared(path, photo.sha256, record, pipeline.photo_chips(photo, [face])[0], views)

        def prepare(steps: list[tuple[str, Path]]) -> list[_Prepared]:
            """Everything but the embedding, in the background, for a few photos detected together."""
            found = pipeline.find_faces([path for _, path in steps], skip=owners)
            return [prepare_one(person, path, f) for (person, path), f in zip(steps, found)]

        bar = tqdm(total=len(plan), desc="enroll", unit="photo", disable=not session.progress, leave=False)
        try:
            for photo in prefetch_batches(
                plan,
                prepare,
                weight=lambda step: pipeline.detection_pixels(step[1]),
                budget=BATCH_PIXELS,
                most=BATCH_PHOTOS,
                workers=settings.workers,
                depth=2 * settings.workers + 2,
            ):
                bar.update()
                if photo.failed is not None:
                    report.failed.append(photo.failed)
                elif photo.skipped is not None:
                    report.skipped.append(photo.skipped)
                elif photo.digest in owners:
                    report.skipped.append(Skipped(str(photo.path), f"already enrolled as {owners[photo.digest]}"))
                else:
                    assert photo.record is not None and photo.chip is not None
                    owners[photo.digest] = photo.record.person
                    pending.append(photo)
                    if len(pending) >= min(EMBED_PHOTOS, settings.batch_size):
                        embed()
                    if len(records) >= settings.batch_size:
                        flush()
                    bar.set_postfix(faces=sum(added.values()) + len(records) + len(pending), refresh=False)
            flush()
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            bar.close()
        report.added = dict(sorted(added.items()))
        report.people_total = len(gallery.people())
        report.faces_total = gallery.count
    if report.interrupted:
        raise Interrupted(
            f"interrupted: {report.faces_added} faces enrolled before the interruption are kept; "
            "run the same command again to continue",
            report,
        )
    return report


def enroll_chosen_frames(session: GallerySession, name: str, source: str, chosen: Sequence[tuple[Any, Any]]) -> int:
    """Enroll frames chosen from a camera (`stream.collect_enrollment_frames`) as `name`; returns how many.
    They are stored as plain vectors even in a gallery that joins faces with a camera view: a camera's own
    frames are its view already."""
    pipeline = session.pipeline
    records, chips = [], []
    for frame, face in chosen:
        digest = sha256_bytes(frame.image.tobytes())
        records.append(FaceRecord(name, f"{source}#frame{frame.index}", digest, face.box, face.score))
        chips.append(pipeline.chip(frame.image, face))
    with session.open_writer() as gallery:
        gallery.add(records, pipeline.embed(chips))
    return len(records)
