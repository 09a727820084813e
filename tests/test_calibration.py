"""Unit tests of calibration.py on synthetic vectors and scores (numpy + pytest only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facerec import calibration as cal


def unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- threshold_for ------------------------------------------------------------------------------------
def test_threshold_is_conformal_rank():
    s = np.arange(1, 100, dtype=float)  # n = 99, a = 0.05: rank ceil(0.95 * 100) = 95 -> value 95
    t = cal.threshold_for(s[::-1], 0.05)
    assert 95 < t < 95.0001
    assert np.mean(s >= t) == pytest.approx(4 / 99)  # the 95th is not accepted (strictly above it)


def test_threshold_controls_false_accepts_on_fresh_strangers():
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):
        t = cal.threshold_for(rng.normal(size=300), 0.05)
        rates.append(np.mean(rng.normal(size=2000) >= t))
    assert 0.04 < np.mean(rates) <= 0.055  # conformal: expected rate <= a, and not far below


def test_threshold_too_few_strangers_names_nobody():
    assert cal.threshold_for(np.array([0.1, 0.2, 0.3]), 0.01) == math.inf  # needs n >= 99
    assert cal.threshold_for(np.zeros(0), 0.05) == math.inf
    assert math.isfinite(cal.threshold_for(np.zeros(99), 0.01))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 2])
def test_threshold_rejects_bad_rates(bad):
    with pytest.raises(ValueError):
        cal.threshold_for(np.ones(10), bad)


def test_stricter_rate_gives_higher_threshold():
    s = np.random.default_rng(1).normal(size=5000)
    assert cal.threshold_for(s, 0.01) > cal.threshold_for(s, 0.05)


# -- cohort statistics ----------------------------------------------------------------------------------
def test_cohort_stats_uses_the_top_k_scores():
    cohort = np.eye(4)  # similarities of a query to the cohort are just its coordinates
    q = np.array([[0.1, 0.2, 0.3, 0.9]]) / np.linalg.norm([0.1, 0.2, 0.3, 0.9])
    st = cal.cohort_stats(q, cohort, top_k=2)
    top = np.sort(q[0])[-2:]
    assert st.mean[0] == pytest.approx(top.mean())
    assert st.std[0] == pytest.approx(top.std())
    full = cal.cohort_stats(q, cohort, top_k=0)  # 0 = the whole cohort
    assert full.mean[0] == pytest.approx(q[0].mean())


def test_cohort_stats_chunking_is_invisible():
    rng = np.random.default_rng(2)
    x, c = unit(rng, 50), unit(rng, 300)
    a, b = cal.cohort_stats(x, c, 20), cal.cohort_stats(x, c, 20, chunk=7)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6)
    np.testing.assert_allclose(a.std, b.std, rtol=1e-6)


def test_cohort_stats_std_floor_and_empty_cohort():
    c = np.tile([[1.0, 0, 0]], (5, 1))
    assert cal.cohort_stats(np.array([[1.0, 0, 0]]), c, 3).std[0] >= 1e-3  # no division by zero later
    with pytest.raises(ValueError):
        cal.cohort_stats(np.ones((1, 3)), np.zeros((0, 3)))


# -- normalise_scores -----------------------------------------------------------------------------------
def test_normalise_sides():
    raw = np.array([[0.9, 0.5], [0.7, 0.6]])
    person = cal.Stats(np.array([0.5, 0.4]), np.array([0.1, 0.2]))
    query = cal.Stats(np.array([0.3, 0.6]), np.array([0.2, 0.1]))
    z = (raw - person.mean) / person.std
    t = (raw - query.mean[:, None]) / query.std[:, None]
    np.testing.assert_allclose(cal.normalise_scores(raw, person, None), z)
    np.testing.assert_allclose(cal.normalise_scores(raw, None, query), t)
    np.testing.assert_allclose(cal.normalise_scores(raw, person, query), (z + t) / 2)
    np.testing.assert_allclose(cal.normalise_scores(raw, None, None), raw)


def test_query_side_cancels_a_domain_shift():
    """A degraded query that resembles everyone more (raw scores and cohort scores shifted together)
    gets the same normalised score as the clean one: the point of the query side."""
    raw = np.array([[0.60, 0.50]])
    person = cal.Stats(np.array([0.5, 0.5]), np.array([0.1, 0.1]))
    clean = cal.normalise_scores(raw, person, cal.Stats(np.array([0.5]), np.array([0.1])))
    shifted = cal.normalise_scores(raw + 0.1, person, cal.Stats(np.array([0.6]), np.array([0.1])))
    assert shifted[0, 0] - clean[0, 0] == pytest.approx(0.5)  # only the person side moved (by 0.1 / 0.1 / 2)
    t_clean = cal.normalise_scores(raw, None, cal.Stats(np.array([0.5]), np.array([0.1])))
    t_shift = cal.normalise_scores(raw + 0.1, None, cal.Stats(np.array([0.6]), np.array([0.1])))
    np.testing.assert_allclose(t_clean, t_shift)


# -- stranger_scores ------------------------------------------------------------------------------------
def test_stranger_scores_leave_one_person_out_and_cohort():
    rng = np.random.default_rng(3)
    cents = unit(rng, 3)
    faces = np.repeat(cents, 2, axis=0) + 0.01 * rng.normal(size=(6, 16))
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    owners = np.repeat(np.arange(3), 2)
    k_norm, k_cal = unit(rng, 40), unit(rng, 10)
    pst = cal.person_stats(cents, k_norm, 10)
    s = cal.stranger_scores(cents, pst, faces, owners, k_cal, k_norm, 10)
    assert s.shape == (10 + 6,)
    # LOPO part: each face's best is over the *other* people, so never near its own (high) score
    own = cal.normalise_scores(faces @ cents.T, pst, cal.cohort_stats(faces, k_norm, 10))
    lopo = s[10:]
    for i, o in enumerate(owners):
        others = np.delete(own[i], o)
        assert lopo[i] == pytest.approx(others.max())
        assert lopo[i] < own[i, o]
    # cohort part equals the direct computation
    direct = cal.normalise_scores(k_cal @ cents.T, pst, cal.cohort_stats(k_cal, k_norm, 10)).max(axis=1)
    np.testing.assert_allclose(s[:10], direct)


def test_one_person_gallery_uses_the_cohort_only():
    rng = np.random.default_rng(4)
    cent, k_norm, k_cal = unit(rng, 1), unit(rng, 30), unit(rng, 12)
    faces = np.repeat(cent, 3, axis=0)
    s = cal.stranger_scores(cent, cal.person_stats(cent, k_norm, 5), faces, np.zeros(3, int), k_cal, k_norm, 5)
    assert s.shape == (12,) and np.isfinite(s).all()
    empty = cal.stranger_scores(cent, cal.person_stats(cent, k_norm, 5), faces, np.zeros(3, int), k_cal[:0], k_norm, 5)
    assert empty.size == 0 and cal.threshold_for(empty, 0.05) == math.inf


# -- end to end: the calibrated threshold holds its rate on synthetic galleries ----------------------------
def test_end_to_end_far_near_nominal_and_known_people_named():
    rng = np.random.default_rng(5)
    d, people = 32, 20
    cents = unit(rng, people, d)

    def around(c, n, noise):
        x = c[None] + noise * rng.normal(size=(n, d))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    faces = np.concatenate([around(c, 3, 0.15) for c in cents])
    owners = np.repeat(np.arange(people), 3)
    cen = np.array([faces[owners == p].mean(0) for p in range(people)])
    cen /= np.linalg.norm(cen, axis=1, keepdims=True)
    k_norm, k_cal, strangers = unit(rng, 1000, d), unit(rng, 1000, d), unit(rng, 4000, d)
    pst = cal.person_stats(cen, k_norm, 100)
    t = cal.threshold_for(cal.stranger_scores(cen, pst, faces, owners, k_cal, k_norm, 100), 0.05)
    _, _, acc = decide(strangers @ cen.T, pst, cal.cohort_stats(strangers, k_norm, 100), t)
    assert 0.03 < acc.mean() < 0.075
    probes = np.concatenate([around(c, 5, 0.15) for c in cents])
    best, _, ok = decide(probes @ cen.T, pst, cal.cohort_stats(probes, k_norm, 100), t)
    assert np.mean(ok & (best == np.repeat(np.arange(people), 5))) > 0.95


def decide(raw, person, query, threshold):
    """Per query: best person, normalised score, accepted? (what facerec.decision.Policy does per face)."""
    s = cal.normalise_scores(raw, person, query)
    best = s.argmax(axis=1)
    score = s[np.arange(len(s)), best]
    return best, score, score >= threshold


def test_chunked_best_matches_unchunked_and_skips_owner_across_chunks():
    rng = np.random.default_rng(6)
    cents, faces, k_norm = unit(rng, 7), unit(rng, 20), unit(rng, 50)
    owners = rng.integers(0, 7, 20)
    faces[0] = cents[owners[0]]  # its own person would win if not skipped
    pst, qst = cal.person_stats(cents, k_norm, 5), cal.cohort_stats(faces, k_norm, 5)
    whole = cal._best(faces, cents, pst, qst, owners, chunk=100)
    np.testing.assert_allclose(cal._best(faces, cents, pst, qst, owners, chunk=2), whole)
    s = cal.normalise_scores(faces @ cents.T, pst, qst)
    s[np.arange(20), owners] = -np.inf
    np.testing.assert_allclose(whole, s.max(axis=1))


def test_top_k_for_is_a_share_of_the_cohort():
    assert cal.top_k_for(2000) == 20
    assert cal.top_k_for(100) == 5  # floor
    assert cal.top_k_for(3) == 3  # never more than the cohort


# -- domain shift (gallery's own strangers vs the cohort) ---------------------------------------------
def _cohort_top2(rng, m, people, loc=0.0):
    s = rng.normal(loc, 1, size=(m, people))
    order = np.argsort(-s, axis=1)
    rows = np.arange(m)
    return order[:, 0], s[rows, order[:, 0]], s[rows, order[:, 1]], s


def test_domain_shift_moves_up_by_the_lopo_excess_and_never_down():
    rng = np.random.default_rng(7)
    arg, best, second, s = _cohort_top2(rng, 4000, 10)
    owners = np.repeat(np.arange(10), 30)
    # LOPO scores drawn like the cohort's best-over-the-other-9 people, then moved by +0.8
    others = np.array([np.delete(rng.normal(size=10), o).max() for o in owners])
    assert cal.domain_shift(arg, best, second, others, owners, 10) < 0.25  # same style: ~0
    assert cal.domain_shift(arg, best, second, others + 0.8, owners, 10) == pytest.approx(0.8, abs=0.25)
    assert cal.domain_shift(arg, best, second, others - 1.0, owners, 10) == 0.0  # never loosened
    assert cal.domain_shift(arg, best, second, others[:4] + 5, owners[:4], 10) == 0.0  # too few LOPO scores
    assert cal.domain_shift(arg, best, second, others, owners, 1) == 0.0  # 1-person gallery: cohort only


def test_domain_shift_reference_excludes_the_own_person():
    # person 0 is every cohort face's best match by far; LOPO faces of person 0 must be compared with
    # the second best (the others), not with person 0's score
    arg = np.zeros(100, int)
    best, second = np.full(100, 5.0), np.full(100, 1.0)
    lopo, owners = np.full(10, 1.0), np.zeros(10, int)
    assert cal.domain_shift(arg, best, second, lopo, owners, 3) == 0.0
    assert cal.domain_shift(arg, best, second, lopo + 0.5, owners, 3) == pytest.approx(0.5)


def test_calibrate_end_to_end_matches_the_parts():
    rng = np.random.default_rng(9)
    cents, k_norm, k_cal = unit(rng, 6), unit(rng, 200), unit(rng, 300)
    faces = np.repeat(cents, 3, axis=0)
    owners = np.repeat(np.arange(6), 3)
    pst = cal.person_stats(cents, k_norm, 10)
    c = cal.calibrate(cents, pst, faces, owners, k_cal, k_norm, 10)
    np.testing.assert_allclose(c.cohort_best, cal.stranger_scores(cents, pst, faces[:0], owners[:0], k_cal, k_norm, 10))
    assert c.shift >= 0 and c.lopo_scores == 18
    assert c.threshold(0.01) > c.threshold(0.05)
    one = cal.calibrate(cents[:1], cal.Stats(pst.mean[:1], pst.std[:1]), faces[:3], owners[:3], k_cal, k_norm, 10)
    assert one.shift == 0 and one.lopo_scores == 0
