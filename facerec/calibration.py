"""Per-gallery calibration of the open-set identification decision: scores that mean the same on any
photos, and a threshold that holds the false-accept rate a user asked for.

Why: a stranger's best similarity to a gallery depends on the photo style and on who is enrolled, so one
threshold per gallery size (thresholds.json, chosen on LFW) lets through 2-3x the nominal share of
strangers on other photos. Two things fix that, measured in bench/calibration.py (figures in the README):

1. Score normalisation against a background cohort (adaptive symmetric s-norm). A raw cosine s between
   query q and person p's centroid becomes

       s' = ((s - mu_p) / sd_p + (s - mu_q) / sd_q) / 2

   where mu_p, sd_p are the mean and spread of p's centroid's `top_k` highest similarities to the cohort
   (fixed per person: computed once at enrolment and stored in the gallery), and mu_q, sd_q the same for
   the query (computed per query: one (N, d) @ d product). The query side is what travels across photo
   styles: a blurred, small, recompressed face resembles *everybody* more, its cohort scores rise with
   its raw scores, and the normalised score does not.

2. A per-gallery threshold on s': the conformal (1 - max_false_accept) quantile of the best scores of a
   calibration cohort (non-enrolled faces, people disjoint from the normalisation cohort) against the
   whole gallery, moved up by `domain_shift`: how much higher the gallery's own strangers score -
   leave-one-person-out (LOPO): each enrolled face of P against the gallery without P - than the cohort
   predicts (medians, so 10 people x 3 photos suffice, where a 1% tail would need 100+ LOPO scores).
   A 1-person gallery has no LOPO: the cohort alone decides.

Measured (bench/calibration.py, README "Operating points"): pooling LOPO with the cohort, taking the stricter
of their two quantiles, and raw cosines with the same thresholds all hold the rate less well on photos unlike
the cohort. facerec.decision applies it: `person_stats` and `calibrate` once per gallery snapshot,
`Calibration.threshold(rate)` and `normalise_scores` per query.

Everything is numpy on unit vectors (rows L2-normalised); no model import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TOP_FRACTION = 0.01  # share of the normalisation cohort used per side (chosen on LFW half A)
DEFAULT_TOP_K = 20  # = DEFAULT_TOP_FRACTION of the 2000-vector shipped normalisation cohort
_MIN_STD = 1e-3  # floor for a spread computed from near-identical cohort scores


def top_k_for(cohort_size: int, fraction: float = DEFAULT_TOP_FRACTION) -> int:
    """How many of the highest cohort scores to average: a fixed share of the cohort (at least 5), so a
    user's own, smaller or larger, cohort folder is read at the same tail as the shipped one."""
    return min(cohort_size, max(5, round(fraction * cohort_size)))


@dataclass(frozen=True)
class Stats:
    """Mean and spread of each row's `top_k` highest cohort similarities (one entry per person/query)."""

    mean: np.ndarray
    std: np.ndarray


def cohort_stats(vectors: np.ndarray, cohort: np.ndarray, top_k: int = DEFAULT_TOP_K, *, chunk: int = 4096) -> Stats:
    """Adaptive cohort statistics of each row of `vectors` (people's centroids, or queries).

    Cost: rows x len(cohort) dot products plus a partial sort; chunked so 10^5 centroids need only
    chunk x len(cohort) floats of memory at once."""
    vectors = np.atleast_2d(np.asarray(vectors, np.float32))
    cohort = np.asarray(cohort, np.float32)
    if len(cohort) == 0:
        raise ValueError("the cohort is empty")
    k = min(top_k, len(cohort)) if top_k > 0 else len(cohort)
    means, stds = [], []
    for start in range(0, len(vectors), chunk):
        sims = vectors[start : start + chunk] @ cohort.T
        if k < sims.shape[1]:
            sims = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
        means.append(sims.mean(axis=1))
        stds.append(np.maximum(sims.std(axis=1), _MIN_STD))
    return Stats(np.concatenate(means), np.concatenate(stds))


def person_stats(centroids: np.ndarray, cohort: np.ndarray, top_k: int = DEFAULT_TOP_K) -> Stats:
    """What the gallery stores per person (2 floats): recompute when the person's centroid changes."""
    return cohort_stats(centroids, cohort, top_k)


def stats_or_raw(vectors: np.ndarray, cohort: np.ndarray | None, top_k: int = DEFAULT_TOP_K) -> Stats | None:
    """`cohort_stats`, or None (that side's scores stay raw) without a normalisation cohort: a `raw` cohort,
    the adapted camera's own faces (facerec.cohort.Cohort)."""
    return None if cohort is None else cohort_stats(vectors, cohort, top_k)


def normalise_scores(raw: np.ndarray, person: Stats | None, query: Stats | None) -> np.ndarray:
    """(queries, people) raw cosines -> s-norm scores. With only one side given, that side's z-score
    (person side = Z-norm, query side = T-norm); with neither, the raw scores (kept for comparison)."""
    raw = np.atleast_2d(raw).astype(np.float64)
    parts = []
    if person is not None:
        parts.append((raw - person.mean[None, :]) / person.std[None, :])
    if query is not None:
        parts.append((raw - query.mean[:, None]) / query.std[:, None])
    return raw if not parts else sum(parts) / len(parts)


def _best(
    vectors: np.ndarray,
    centroids: np.ndarray,
    person: Stats | None,
    query: Stats | None,
    owners: np.ndarray | None = None,
    chunk: int = 8192,
) -> np.ndarray:
    """Each row's best normalised score over the people, chunked over people (10^5 people fit in memory);
    with `owners`, each row's own person is skipped (leave-one-person-out)."""
    best = np.full(len(vectors), -np.inf)
    rows = np.arange(len(vectors))
    for start in range(0, len(centroids), chunk):
        sl = slice(start, start + chunk)
        people = None if person is None else Stats(person.mean[sl], person.std[sl])
        s = normalise_scores(vectors @ centroids[sl].T, people, query)
        if owners is not None:  # a face is no stranger to its own person
            mine = (owners >= start) & (owners < start + s.shape[1])
            s[rows[mine], owners[mine] - start] = -np.inf
        best = np.maximum(best, s.max(axis=1))
    return best


def stranger_scores(
    centroids: np.ndarray,
    person: Stats | None,
    faces: np.ndarray,
    owners: np.ndarray,
    calibration_cohort: np.ndarray,
    norm_cohort: np.ndarray | None,
    top_k: int = DEFAULT_TOP_K,
) -> np.ndarray:
    """Best normalised score of faces known to be strangers to each gallery person, as one 1-D array.

    centroids (people, d) and person (their Stats); faces (n, d) the enrolled faces with owners (n,)
    their person's row (leave-one-person-out); calibration_cohort (m, d) non-enrolled faces, disjoint
    by person from norm_cohort (the faces the Stats come from), so that no stranger's own statistics
    contain a photo of itself. Pass an empty `faces` to use the cohort only; a 1-person gallery yields
    no LOPO scores. Cost: (m + n) x people dot products (about 15 s at 10^5 people on one core)."""
    centroids = np.atleast_2d(centroids)
    out = []
    if len(calibration_cohort):
        out.append(_best(calibration_cohort, centroids, person, stats_or_raw(calibration_cohort, norm_cohort, top_k)))
    if len(faces) and len(centroids) > 1:
        owners = np.asarray(owners, np.int64)
        out.append(_best(faces, centroids, person, stats_or_raw(faces, norm_cohort, top_k), owners))
    return np.concatenate(out) if out else np.zeros(0)


def threshold_for(strangers: np.ndarray, max_false_accept: float) -> float:
    """The smallest threshold that, by the conformal rule, names a new stranger with probability at most
    `max_false_accept`: the ceil((1 - a)(n + 1))-th smallest of n stranger scores (decision: score >=
    threshold, ties count against). With too few strangers for the requested rate (n < 1/a - 1) no
    finite threshold can be certified: +inf (name nobody) - the caller should say so."""
    if not 0 < max_false_accept < 1:
        raise ValueError("max_false_accept must be in (0, 1)")
    s = np.sort(np.asarray(strangers, np.float64).ravel())
    rank = int(np.ceil((1 - max_false_accept) * (len(s) + 1)))  # 1-based
    if rank > len(s):
        return float("inf")
    return float(np.nextafter(s[rank - 1], np.inf))  # strictly above the rank-th stranger


def domain_shift(
    cohort_arg: np.ndarray,
    cohort_best: np.ndarray,
    cohort_second: np.ndarray,
    lopo: np.ndarray,
    lopo_owners: np.ndarray,
    people: int,
    min_lopo: int = 5,
) -> float:
    """How much higher the gallery's own strangers score than the cohort predicts (>= 0).

    A gallery enrolled from photos unlike the cohort (another camera, web thumbnails) has its own
    strangers closer together; LOPO shows it with a few scores, too few for a 1% tail. So the median of
    the LOPO scores is compared with the median cohort score against the same people (each LOPO face's
    reference excludes its own person: best, or second best where the cohort's best was that person)
    and the cohort's tail is moved up by the difference. Never down: the shipped calibration is the floor."""
    if people < 2 or len(lopo) < min_lopo:
        return 0.0
    if people > 1000:  # leaving one person out of so many changes the cohort's scores very little
        reference = np.median(cohort_best, keepdims=True)
    else:
        excluded = np.where(
            cohort_arg[:, None] == np.arange(people)[None, :], cohort_second[:, None], cohort_best[:, None]
        )
        reference = np.median(excluded, axis=0)[np.asarray(lopo_owners)]
    return max(0.0, float(np.median(lopo) - np.median(reference)))


@dataclass(frozen=True)
class Calibration:
    """What a gallery stores at save time: the cohort strangers' best scores and the LOPO shift."""

    cohort_best: np.ndarray
    shift: float
    lopo_scores: int  # how many LOPO scores the shift came from (0: cohort only), for `info`

    def threshold(self, max_false_accept: float) -> float:
        return threshold_for(self.cohort_best + self.shift, max_false_accept)


def calibrate(
    centroids: np.ndarray,
    person: Stats | None,
    faces: np.ndarray,
    owners: np.ndarray,
    calibration_cohort: np.ndarray,
    norm_cohort: np.ndarray | None,
    top_k: int = DEFAULT_TOP_K,
) -> Calibration:
    """The winning rule end to end for one gallery (the caller may pass a sample of faces for LOPO)."""
    centroids = np.atleast_2d(centroids)
    q = stats_or_raw(calibration_cohort, norm_cohort, top_k)
    s = normalise_scores(calibration_cohort @ centroids.T, person, q)
    arg = s.argmax(axis=1)
    best = s[np.arange(len(s)), arg]
    second = np.partition(s, s.shape[1] - 2, axis=1)[:, -2] if s.shape[1] > 1 else np.full(len(s), -np.inf)
    lopo = stranger_scores(centroids, person, faces, owners, calibration_cohort[:0], norm_cohort, top_k)
    shift = domain_shift(arg, best, second, lopo, np.asarray(owners, np.int64), len(centroids)) if len(lopo) else 0.0
    return Calibration(best, shift, len(lopo))
