"""The decision: from a face's candidates to a name, and every threshold facerec uses to make it.

One owner for the operating point: which cosine similarity names a face depends on the model (its
calibrated table), how many people the gallery holds (a stranger meets more look-alikes in a larger one),
photo or video (a camera sees many strangers, so video is stricter), and, for an adapted gallery, the
adapted model's score scale. Nothing else in facerec compares a similarity with a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from . import calibration
from .cohort import Cohort, gallery_cohort, shipped_cohort
from .embedders.registry import get_spec
from .errors import InputError

if TYPE_CHECKING:
    from .gallery.meta import GalleryMeta
    from .gallery.search import Candidate
    from .gallery.store import Gallery

UNKNOWN = "unknown"


@dataclass(frozen=True)
class ScoreMap:
    """Maps the base model's thresholds onto an adapted model's similarity scale.

    Adapting moves the scores (strangers usually end up less alike), so a threshold calibrated for the base
    model would name too few or too many. A threshold t is mapped to the score that is as many standard
    deviations above the strangers' mean (different people of the adaptation data) under the adapted
    model as t was under the base model. Approximate; `--threshold` overrides it.
    """

    base_mean: float
    base_std: float
    mean: float
    std: float

    def apply(self, threshold: float) -> float:
        return float(min(0.9999, self.mean + (threshold - self.base_mean) * self.std / self.base_std))

    @classmethod
    def measure(
        cls, base: np.ndarray, adapted: np.ndarray, labels: np.ndarray, probes: np.ndarray | None = None
    ) -> ScoreMap:
        """From the same faces' vectors under both models. `probes` (row i: face i as the target camera shows
        it, adapted model) maps onto the scores the camera's strangers get against the clean gallery, so the
        base model's false-accept rate on clean photos is what the adapted model gives on the camera."""
        different = labels[:, None] != labels[None, :]
        before, after = base @ base.T, (adapted if probes is None else probes) @ adapted.T
        return cls(
            float(before[different].mean()),
            float(before[different].std() + 1e-6),
            float(after[different].mean()),
            float(after[different].std() + 1e-6),
        )


# The operating points asked for by default: the share of strangers a gallery may name. Photos: 5% (the
# LFW open-set protocol's figure); video sees many strangers pass, so it is stricter.
PHOTO_FALSE_ACCEPT = 0.05
VIDEO_FALSE_ACCEPT = 0.005
# Raw candidates re-ranked by the normalised score: the normalised winner was among the raw top 20 for
# 99.6-100% of queries on every photo style measured (bench/calibration.py).
RERANK = 20
# Two faces at least this alike are one photo: the same photo again, resized or recompressed (0.999 for
# ../shared's obama-480p against its 720p and small copies, dlib-resnet), but not other photos of the same
# face (0.965-0.973 for four other photos of that person). A veto ("this face is not X") holds for copies of
# the vetoed face — "not this face", never "not anyone who looks like it" — and a cohort face that copies an
# enrolled one is no stranger to the gallery.
SAME_PHOTO = 0.98


class GalleryCalibration:
    """One gallery snapshot calibrated against a cohort: every person's score statistics and the
    strangers' best normalised scores (cohort strangers, shifted by what the gallery's own strangers show)."""

    def __init__(
        self,
        names: list[str],
        centroids: np.ndarray,
        face_owners: list[str],
        faces: np.ndarray,
        cohort: Cohort,
        *,
        lopo_sample: int = 2000,
    ) -> None:
        cohort = cohort.without_copies(faces, SAME_PHOTO)
        self.cohort = cohort
        self.normalisation = None if cohort.raw else cohort.normalisation
        self.top_k = calibration.top_k_for(len(cohort.normalisation))
        self.row = {name: i for i, name in enumerate(names)}
        self.person = calibration.stats_or_raw(centroids, self.normalisation, self.top_k)
        owners = np.array([self.row[name] for name in face_owners], np.int64)
        if cohort.raw:  # the camera's own faces are the deployment's strangers: no shift from them to measure
            faces, owners = faces[:0], owners[:0]
        if len(owners) > lopo_sample:  # leave-one-person-out on a fixed sample: its median is what counts
            keep = np.sort(np.random.default_rng(0).choice(len(owners), lopo_sample, replace=False))
            faces, owners = faces[keep], owners[keep]
        self.result = calibration.calibrate(
            centroids, self.person, faces, owners, cohort.calibration, self.normalisation, self.top_k
        )

    def threshold(self, max_false_accept: float) -> float:
        return self.result.threshold(max_false_accept)

    def describe(self) -> str:
        own = f"{self.result.lopo_scores} own-stranger scores, shift {self.result.shift:.3f}"
        return f"{self.cohort.description}, {own}"

    def scores(self, vectors: np.ndarray, candidates: Sequence[Sequence[Candidate]]) -> list[list[Candidate]]:
        """Each query's candidates with their normalised score, best first."""
        query = calibration.stats_or_raw(vectors, self.normalisation, self.top_k)
        out = []
        for q, cands in enumerate(candidates):
            rows = np.array([self.row[c.name] for c in cands], np.int64)
            raw = np.array([[c.similarity for c in cands]], np.float64)
            person = None if self.person is None else calibration.Stats(self.person.mean[rows], self.person.std[rows])
            one = None if query is None else calibration.Stats(query.mean[q : q + 1], query.std[q : q + 1])
            normal = calibration.normalise_scores(raw, person, one)[0] if len(cands) else []
            scored = [replace(c, score=float(v)) for c, v in zip(cands, normal)]
            out.append(sorted(scored, key=lambda c: -(c.score or 0.0)))
        return out


@dataclass(frozen=True)
class Policy:
    """The operating point in force for one gallery: the threshold, the search rule it was calibrated
    under, where it came from (shown in `info` and with results), and — when calibrated — the share of
    strangers it admits and the normalisation it applies to scores."""

    threshold: float
    rule: str
    source: str
    max_false_accept: float | None = None
    calibration: GalleryCalibration | None = field(default=None, compare=False, repr=False)
    # A cosine similarity a name also needs (video: the LFW video table; see identify_policy).
    floor: float = -1.0
    # Vetoed faces by the person they are not: such a person is no candidate for faces this alike.
    vetoes: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def candidates_needed(self) -> int:
        return RERANK if self.calibration is not None or self.vetoes else 1

    def rank(self, vectors: np.ndarray, candidates: Sequence[Sequence[Candidate]]) -> list[list[Candidate]]:
        """Candidates scored the way this policy decides, best first, vetoed people left out."""
        if self.vetoes:
            candidates = [[c for c in cands if not self.vetoed(v, c.name)] for v, cands in zip(vectors, candidates)]
        if self.calibration is not None and len(vectors):
            return self.calibration.scores(vectors, candidates)
        return [[replace(c, score=c.similarity) for c in cands] for cands in candidates]

    def vetoed(self, vector: np.ndarray, name: str) -> bool:
        faces = self.vetoes.get(name)
        return faces is not None and float(np.max(faces @ vector)) >= SAME_PHOTO

    def with_vetoes(self, vetoes: dict[str, np.ndarray]) -> Policy:
        return replace(self, vetoes=vetoes)

    def accepts(self, candidate: Candidate) -> bool:
        if candidate.score is None and self.calibration is not None:
            # A raw cosine compared with a normalised threshold would name everybody.
            raise ValueError("candidates must go through Policy.rank before a calibrated policy decides")
        score = candidate.similarity if candidate.score is None else candidate.score
        return score >= self.threshold and candidate.similarity >= self.floor

    def decide(self, candidates: Sequence[Candidate]) -> str:
        """The name a face gets: its best candidate when it meets the threshold, else 'unknown'."""
        return candidates[0].name if candidates and self.accepts(candidates[0]) else UNKNOWN

    def name_faces(self, ranked: Sequence[Sequence[Candidate]]) -> list[Candidate | None]:
        """One name per person per image: the faces of one photo (or frame) that would take the same person
        are settled by score — the best keeps the name, the others fall to their next candidate that meets
        the threshold, else to nobody (None: 'unknown')."""
        pairs = sorted(
            (
                (c.score if c.score is not None else c.similarity, face, c)
                for face, cands in enumerate(ranked)
                for c in cands
                if self.accepts(c)
            ),
            key=lambda item: (-item[0], item[1]),
        )
        chosen: list[Candidate | None] = [None] * len(ranked)
        taken: set[str] = set()
        for _, face, candidate in pairs:
            if chosen[face] is None and candidate.name not in taken:
                chosen[face] = candidate
                taken.add(candidate.name)
        return chosen


def identify_policy(
    meta: GalleryMeta,
    people: int,
    *,
    video: bool = False,
    threshold: float | None = None,
    max_false_accept: float | None = None,
    calibrated: GalleryCalibration | None = None,
) -> Policy:
    """The identification policy for a gallery: a raw threshold given by the user wins; otherwise the
    operating point asked for (`max_false_accept`, default 5% for photos, 0.5% for video) turned into this
    gallery's threshold by its calibration. A gallery without one (no cohort for its model or adapted
    weights) falls back to the model's LFW table by gallery size, at its 5% (photos) or 0.5% (video)."""
    thresholds = get_spec(meta.model).thresholds
    if threshold is not None:
        return Policy(threshold, thresholds.rule, "given (--threshold, cosine similarity)")
    rate = max_false_accept if max_false_accept is not None else VIDEO_FALSE_ACCEPT if video else PHOTO_FALSE_ACCEPT
    if calibrated is not None:
        value = calibrated.threshold(rate)
        source = f"at most {rate:g} of strangers named, calibrated to this gallery ({calibrated.describe()})"
        if not np.isfinite(value):
            source += f"; {len(calibrated.cohort.calibration)} strangers cannot certify so few: nobody is named"
        # Video faces are small and blurred like nothing in the LFW cohort (the camera case, where the
        # calibrated rate held only within 2.2x): a name there also needs the LFW video table's cosine —
        # unless the strangers are the adapted camera's own faces (a raw cohort), already the video's style.
        floored = video and not calibrated.cohort.raw
        floor = thresholds.identify_for(people, video=True) if floored else -1.0
        if floored:
            source += f", and cosine >= {floor:.4f} (LFW video table)"
        return Policy(value, thresholds.rule, source, rate, calibrated, floor)
    if max_false_accept is not None:
        raise InputError(
            f"--max-false-accept needs a calibrated gallery; this one ({meta.model}"
            f"{', adapted' if meta.adaptation else ''}) has no cohort to calibrate with: give --threshold instead"
        )
    value = thresholds.identify_for(people, video=video)
    source = f"{meta.model} LFW {'video' if video else 'photo'} table for {people} people (not calibrated)"
    if meta.adaptation is not None:
        value = meta.adaptation.score_map.apply(value)
        source += ", mapped onto the adapted model's scores"
    return Policy(value, thresholds.rule, source)


def calibrate_gallery(gallery: Gallery) -> GalleryCalibration | None:
    """The gallery's calibration against the cohort of its exact weights — the user's own strangers
    (`facerec calibrate --strangers`) when there are some, else the shipped one — or None without one."""
    cohort = gallery_cohort(gallery.path, gallery.meta.weights_sha256) or shipped_cohort(
        gallery.meta.model, gallery.meta.weights_sha256
    )
    if cohort is None or gallery.count == 0:
        return None
    names, centroids = gallery.people_vectors()
    owners, faces = gallery.face_vectors()
    return GalleryCalibration(names, centroids, owners, faces, cohort)


# Clustering (facerec cluster): average linkage stops where two groups' mean cosine similarity falls below
# this cut. Tuned with dlib-resnet on one half of the LFW people (stable_fraction < 0.5) for pairwise precision
# >= 0.98 and the best BCubed F with one-photo strangers mixed in; measured on the other half (bench/cluster.py,
# README): precision 0.992, recall 0.973. A model without a measured cut needs --cut.
CLUSTER_CUTS: dict[str, float] = {"dlib-resnet": 0.935}


def cluster_cut(model: str, cut: float | None = None) -> float:
    """The similarity cut for grouping faces of `model`: the one given, else its measured one."""
    if cut is not None:
        return cut
    if model not in CLUSTER_CUTS:
        raise InputError(
            f"no clustering cut has been measured for model {model}; pass --cut (a cosine similarity; "
            f"bench/cluster.py measures one), or cluster with a dlib-resnet gallery"
        )
    return CLUSTER_CUTS[model]


def verify_threshold(model: str, threshold: float | None = None) -> float:
    """The one-pair threshold: the model's verification operating point unless one is given."""
    return get_spec(model).thresholds.verify if threshold is None else threshold
