"""The decision: from a face's candidates to a name, and every threshold facerec uses to make it.

One owner for the operating point: which cosine similarity names a face depends on the model (its
calibrated table), how many people the gallery holds (a stranger meets more look-alikes in a larger one),
photo or video (a camera sees many strangers, so video is stricter), and, for an adapted gallery, the
adapted model's score scale. Nothing else in facerec compares a similarity with a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .embedders.registry import get_spec
from .errors import InputError

if TYPE_CHECKING:
    from .gallery.meta import GalleryMeta
    from .gallery.search import Candidate

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
    def measure(cls, base: np.ndarray, adapted: np.ndarray, labels: np.ndarray) -> ScoreMap:
        different = labels[:, None] != labels[None, :]
        before, after = (v @ v.T for v in (base, adapted))
        return cls(
            float(before[different].mean()),
            float(before[different].std() + 1e-6),
            float(after[different].mean()),
            float(after[different].std() + 1e-6),
        )


@dataclass(frozen=True)
class Policy:
    """The operating point in force for one gallery: the threshold, the search rule it was calibrated
    under, and where it came from (shown in `info` and with results)."""

    threshold: float
    rule: str
    source: str

    def decide(self, candidates: Sequence[Candidate]) -> str:
        """The name a face gets: its best candidate when at or above the threshold, else 'unknown'."""
        return candidates[0].name if candidates and candidates[0].similarity >= self.threshold else UNKNOWN


def identify_policy(meta: GalleryMeta, people: int, *, video: bool = False, threshold: float | None = None) -> Policy:
    """The identification policy for a gallery of `people` people: a threshold given by the user wins;
    otherwise the model's calibrated threshold for that size, on the adapted model's scale when adapted."""
    thresholds = get_spec(meta.model).thresholds
    if threshold is not None:
        return Policy(threshold, thresholds.rule, "given (--threshold)")
    value = thresholds.identify_for(people, video=video)
    source = f"{meta.model} {'video' if video else 'photo'} threshold calibrated for {people} people"
    if meta.adaptation is not None:
        value = meta.adaptation.score_map.apply(value)
        source += ", mapped onto the adapted model's scores"
    return Policy(value, thresholds.rule, source)


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
