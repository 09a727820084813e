"""Finding the people nobody has named: a photo folder clustered against a gallery, and a group named.

`cluster` (grouping, stable ids, the vector cache) and `sheet` (the contact sheet) know nothing of galleries;
this module connects them to a session: faces the gallery already names are reported as known, not grouped,
and naming a group enrolls its faces — with the vectors the clustering already computed — in one transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .camera_view import gallery_view, stored_vectors, view_key
from .cluster import (
    DEFAULT_MIN_FACES,
    ClusterResult,
    ClusterStateError,
    cluster_folder,
    default_out_dir,
    group_faces,
    pipeline_faces_of,
    read_state,
)
from .decision import cluster_cut
from .errors import ImageError, InputError
from .gallery import FaceRecord, validate_name
from .session import GallerySession


@dataclass
class ClusterRun:
    """A clustering run and where it left its state, sheet and groups."""

    result: ClusterResult
    out: Path
    sheet: Path
    cut: float

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.result.to_dict(),
            "problems": [p.to_dict() for p in self.result.problems],
            "photos": self.result.photos,
            "out": str(self.out),
            "sheet": str(self.sheet),
            "cut": self.cut,
        }


@dataclass
class NameReport:
    group: str
    name: str
    gallery: str
    added: int
    already: int  # faces of the group that were enrolled before (naming twice is harmless)
    faces_total: int = 0
    people_total: int = 0
    skipped: list[str] = field(default_factory=list)  # faces whose photo changed or is gone

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_key(session: GallerySession) -> str:
    """What a clustering state is valid for: the model and its exact weights."""
    embedder = session.pipeline.embedder
    return f"{embedder.spec.name}:{embedder.weights_sha256}"


def state_model(out: Path) -> str | None:
    """The model name a clustering state folder was made with, or None when there is none yet."""
    model = read_state(out).get("model")
    return str(model).partition(":")[0] if model else None


def cluster_photos(
    session: GallerySession,
    photo_dir: str | Path,
    *,
    out: str | Path | None = None,
    cut: float | None = None,
    min_faces: int = DEFAULT_MIN_FACES,
) -> ClusterRun:
    """Group every face of every photo in `photo_dir`; faces the gallery (when there is one) names are known."""
    from .sheet import write_contact_sheet

    photo_dir = Path(photo_dir)
    if not photo_dir.is_dir():
        raise InputError(f"{photo_dir}: no such folder; give the folder of photos to group")
    out_dir = Path(out) if out is not None else default_out_dir(photo_dir)
    pipeline = session.pipeline
    limit = cluster_cut(pipeline.model, cut)
    name_vectors = None
    if session.stored_meta() is not None:
        gallery, policy = session.reader, session.policy()

        def name_vectors(vectors: np.ndarray) -> list[str | None]:
            raw = gallery.search(vectors, top_k=policy.candidates_needed, rule=policy.rule)
            return [
                None if (name := policy.decide(candidates)) == "unknown" else name
                for candidates in policy.rank(vectors, raw)
            ]

    result = cluster_folder(
        photo_dir,
        pipeline_faces_of(pipeline),
        out_dir,
        model=model_key(session),
        cut=limit,
        min_faces=min_faces,
        name_vectors=name_vectors,
        progress=session.progress,
        workers=session.settings.workers,
    )
    return ClusterRun(result, out_dir, write_contact_sheet(result, out_dir), limit)


def name_group(session: GallerySession, out: str | Path, group_id: str, name: str) -> NameReport:
    """Enroll the faces of group `group_id` of the last run in `out` as `name` (joining a person of that
    name). Every face is one record keyed by its photo's SHA-256 and its rank in the photo, so one group photo
    can name several people, and naming the same group again adds nothing."""
    out = Path(out)
    name = validate_name(name)
    faces = group_faces(out, group_id)
    stored = read_state(out).get("model")
    if stored != model_key(session):
        raise ClusterStateError(
            f"the groups in {out} were made with {stored}, not this gallery's {model_key(session)}; "
            f"run facerec cluster again with --gallery {session.path}"
        )
    pipeline = session.pipeline
    cached: list[tuple[FaceRecord, np.ndarray]] = []
    fresh: list[FaceRecord] = []
    chips, views, skipped = [], [], []
    with session.open_writer() as gallery:
        owners = gallery.owners_by_hash()
        view = gallery_view(gallery.meta)
        already = sum(face.key in owners for face in faces)
        for face in faces:
            if face.key in owners:
                continue
            record = FaceRecord(name, str(Path(face.image).resolve()), face.key, face.box, face.score)
            if face.vector is not None and view is None:
                cached.append((record, face.vector))
                continue
            # Not cached, or the gallery joins its faces with camera views: embedded again from the photo.
            try:
                image = pipeline.read(face.image)
            except ImageError as exc:
                skipped.append(str(exc))
                continue
            found = pipeline.face_at(image, face.box)
            if found is None:
                skipped.append(f"{face.image}: the face is no longer found in it")
                continue
            fresh.append(record)
            chips.append(pipeline.chip(image, found))
            if view is not None:
                views.append(view.face_views(image, found, view_key(record.sha256, record.box), pipeline))
        records = [record for record, _ in cached] + fresh
        if records:  # one transaction
            vectors = [vector[None] for _, vector in cached]
            gallery.add(records, np.concatenate([*vectors, stored_vectors(view, pipeline, chips, views)]))
        report = NameReport(
            group_id, name, str(session.path), len(records), already, gallery.count, gallery.people_count, skipped
        )
    return report
