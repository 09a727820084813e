"""`facerec check`: the gallery examined with its own photos, before a stranger or a wrong label does harm.

Leave-one-out: each enrolled face is taken out of its person's centroid and identified against the gallery
under the policy in force — how often it comes back as its own person is the known accuracy to expect; how
often a face is named as somebody when its own person is left out entirely is the stranger false-accept rate
the gallery's own people show. It flags faces closer to another person than to the rest of their own
(a wrong label, or a photo that was meant to poison the gallery), people with one photo (no leave-one-out,
a weak centroid), and pairs of photos that are near copies of each other (one person's weight doubled).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .decision import Policy
from .gallery import Candidate, Gallery
from .vectors import normalise

# Two enrolled photos this alike are one photo twice (resized, recompressed, a burst): dlib-resnet's
# different photos of one person are at 0.95 on average (LFW), a recompressed copy at 0.97-0.99.
NEAR_COPY = 0.985


@dataclass
class Flag:
    kind: str  # "closer to another person" | "one photo" | "near copy"
    person: str
    source: str
    detail: str


@dataclass
class CheckReport:
    gallery: str
    people: int
    faces: int
    operating_point: str
    known_accuracy: float | None  # leave-one-out faces of people with 2+ photos named as themselves
    known_faces: int
    stranger_false_accepts: float | None  # faces named as somebody else when their own person is left out
    stranger_faces: int
    flags: list[Flag] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_gallery(gallery: Gallery, policy: Policy) -> CheckReport:
    records = gallery.records()
    _, vectors = gallery.vectors()
    people = sorted({r.person for _, r in records})
    row = {name: i for i, name in enumerate(people)}
    owner = np.array([row[r.person] for _, r in records], np.int64)
    sums = np.zeros((len(people), gallery.dim))
    np.add.at(sums, owner, vectors)
    counts = np.bincount(owner, minlength=len(people))
    centroids = normalise(sums)
    flags: list[Flag] = []
    right = named_as_stranger = known = 0
    for face, ((_, record), vector) in enumerate(zip(records, vectors)):
        mine = owner[face]
        # Every person as a candidate, raw cosine first; the policy scores and decides as it would for a photo.
        # The face's own person is compared without the face (only that one similarity changes).
        raw = centroids @ vector
        if counts[mine] > 1:
            raw[mine] = normalise(sums[mine] - vector) @ vector
        order = np.argsort(-raw)
        candidates = [Candidate(people[i], float(raw[i])) for i in order[: max(policy.candidates_needed, 2)]]
        stranger = [c for c in candidates if c.name != record.person]
        ranked = policy.rank(np.stack([vector, vector]), [candidates, stranger])
        if counts[mine] > 1:
            known += 1
            right += policy.decide(ranked[0]) == record.person
            own, best_other = float(raw[mine]), max((c.similarity for c in stranger), default=-1.0)
            if best_other > own:
                other = next(c.name for c in stranger if c.similarity == best_other)
                flags.append(
                    Flag(
                        "closer to another person",
                        record.person,
                        record.source,
                        f"{best_other:.3f} to {other}, {own:.3f} to the rest of {record.person}",
                    )
                )
        named_as_stranger += policy.decide(ranked[1]) != "unknown"
    for person in people:
        if counts[row[person]] == 1:
            source = next(r.source for _, r in records if r.person == person)
            flags.append(Flag("one photo", person, source, "no leave-one-out; enroll more photos of them"))
    sims = vectors @ vectors.T if len(vectors) <= 20_000 else np.zeros((0, 0))
    for a, b in zip(*np.nonzero(np.triu(sims, 1) >= NEAR_COPY)):
        flags.append(
            Flag(
                "near copy",
                records[a][1].person,
                records[a][1].source,
                f"{float(sims[a, b]):.3f} to {records[b][1].source} ({records[b][1].person})",
            )
        )
    return CheckReport(
        str(gallery.path),
        len(people),
        len(records),
        policy.source,
        round(right / known, 4) if known else None,
        known,
        round(named_as_stranger / len(records), 4) if records and len(people) > 1 else None,
        len(records),
        flags,
    )
