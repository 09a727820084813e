"""The evaluation maths on scores whose right answers are known by construction, and the LFW pairs parser."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facerec.errors import InputError
from facerec.evaluate import (
    OpenSetResult,
    Pair,
    best_threshold,
    choose_open_set_threshold,
    open_set_sweep,
    plot_roc,
    read_pairs,
    roc_curve,
    tar_at_far,
    ten_fold,
)


def labelled(same_scores, diff_scores) -> tuple[np.ndarray, np.ndarray]:
    scores = np.array(list(same_scores) + list(diff_scores), np.float64)
    same = np.array([True] * len(same_scores) + [False] * len(diff_scores))
    return scores, same


# -- best_threshold ----------------------------------------------------------------------------------
def test_separable_scores_give_full_accuracy_and_a_threshold_between_the_classes():
    scores, same = labelled([0.8, 0.9, 0.7], [0.1, 0.3, 0.2])
    threshold, accuracy = best_threshold(scores, same)
    assert accuracy == 1.0
    assert threshold == pytest.approx(0.5)  # midpoint of 0.3 (best different) and 0.7 (worst same)


def test_overlapping_scores_give_the_hand_computed_accuracy_and_the_lowest_tied_threshold():
    # sorted: 0.1 D, 0.2 D, 0.3 S, 0.4 D, 0.5 S, 0.6 S. Cutting at 0.25 or at 0.45 both get 5 of 6 right.
    scores, same = labelled([0.3, 0.5, 0.6], [0.1, 0.2, 0.4])
    threshold, accuracy = best_threshold(scores, same)
    assert accuracy == pytest.approx(5 / 6)
    assert threshold == pytest.approx(0.25)


def test_best_threshold_decides_with_greater_or_equal():
    scores, same = labelled([0.5], [0.5])  # a tie can only be called both same or both different
    threshold, accuracy = best_threshold(scores, same)
    assert accuracy == 0.5
    assert threshold == 0.5


def test_one_class_input_is_handled():
    threshold, accuracy = best_threshold([0.2, 0.4], [True, True])
    assert accuracy == 1.0 and np.all(np.array([0.2, 0.4]) >= threshold)
    threshold, accuracy = best_threshold([0.2, 0.4], [False, False])
    assert accuracy == 1.0 and np.all(np.array([0.2, 0.4]) < threshold)


def test_best_threshold_matches_brute_force_on_random_scores():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=300), 1)  # rounding makes many ties
    same = rng.random(300) < 0.5
    threshold, accuracy = best_threshold(scores, same)
    assert accuracy == pytest.approx(np.mean((scores >= threshold) == same))
    brute = max(np.mean((scores >= t) == same) for t in np.r_[scores, scores.max() + 1])
    assert accuracy == pytest.approx(brute)


@pytest.mark.parametrize(
    "scores, same",
    [
        ([], []),
        ([0.1, float("nan")], [True, False]),
        ([0.1, 0.2], [True]),
        ([0.1, 0.2], [1, 2]),
        ([0.1, float("inf")], [True, False]),
    ],
)
def test_bad_arrays_raise_value_error(scores, same):
    with pytest.raises(ValueError):
        best_threshold(scores, same)
    with pytest.raises(ValueError):
        roc_curve(scores, same)


# -- ROC and TAR at FAR ------------------------------------------------------------------------------
def test_tar_at_far_on_a_constructed_example():
    # 100 different-person pairs at 0.00 .. 0.99. FAR 0 must stay above 0.99; FAR 1% may accept the one at
    # 0.99, so the threshold drops to just above 0.98 and takes the same-person 0.985 too; FAR 3%: above 0.96.
    scores, same = labelled([0.995, 0.985, 0.975, 0.5, 0.1], np.arange(100) / 100)
    assert tar_at_far(scores, same, 0.0) == pytest.approx(1 / 5)
    assert tar_at_far(scores, same, 0.01) == pytest.approx(2 / 5)
    assert tar_at_far(scores, same, 0.015) == pytest.approx(2 / 5)
    assert tar_at_far(scores, same, 0.03) == pytest.approx(3 / 5)
    assert tar_at_far(scores, same, 0.5) == pytest.approx(4 / 5)
    assert tar_at_far(scores, same, 1.0) == 1.0


def test_tar_at_far_never_exceeds_the_rate_when_scores_tie():
    # Two different-person pairs tie at 0.9: accepting one accepts both, so FAR 10% must stay above 0.9.
    scores, same = labelled([0.95, 0.9, 0.05], [0.9, 0.9] + [0.1] * 8)
    assert tar_at_far(scores, same, 0.1) == pytest.approx(1 / 3)
    assert tar_at_far(scores, same, 0.2) == pytest.approx(2 / 3)


def test_roc_curve_matches_brute_force_and_auc_is_the_ranking_probability():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=400), 1)
    same = rng.random(400) < 0.4
    far, tar, thresholds = roc_curve(scores, same)
    assert (far[0], tar[0], thresholds[0]) == (0.0, 0.0, np.inf)
    assert (far[-1], tar[-1]) == (1.0, 1.0)
    assert np.all(np.diff(thresholds) < 0)
    for f, t, th in zip(far[1:], tar[1:], thresholds[1:]):
        assert f == pytest.approx(np.mean(scores[~same] >= th))
        assert t == pytest.approx(np.mean(scores[same] >= th))
    pos, neg = scores[same], scores[~same]
    wins = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    result = ten_fold(scores, same, np.arange(400) % 10)
    assert result.auc == pytest.approx(wins)


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="both"):
        roc_curve([0.1, 0.2], [True, True])
    with pytest.raises(ValueError):
        tar_at_far([0.1, 0.2], [True, False], 1.5)


# -- ten_fold ----------------------------------------------------------------------------------------
def test_ten_fold_chooses_each_threshold_on_the_other_folds():
    # fold 3 alone picks 0.4, fold 7 alone picks 0.775; each is then scored with the other's threshold.
    fold3, fold3_same = labelled([0.6, 0.7], [0.1, 0.2])
    fold7, fold7_same = labelled([0.9, 0.95], [0.65, 0.3])
    scores = np.r_[fold3, fold7]
    same = np.r_[fold3_same, fold7_same]
    folds = np.array([3] * 4 + [7] * 4)
    result = ten_fold(scores, same, folds)
    assert result.fold_thresholds == pytest.approx([0.775, 0.4])
    assert result.fold_accuracies == pytest.approx([0.5, 0.75])
    assert result.accuracy == pytest.approx(0.625)
    assert result.accuracy_std == pytest.approx(0.125)
    assert result.threshold == pytest.approx(0.5875)
    assert result.pairs == 8
    assert set(result.tar_at_far) == {"1e-3", "1e-2"}


def test_ten_fold_on_separable_scores():
    rng = np.random.default_rng(2)
    same = np.arange(600) % 2 == 0
    scores = np.where(same, rng.uniform(0.6, 1.0, 600), rng.uniform(-1.0, 0.4, 600))
    result = ten_fold(scores, same, np.repeat(np.arange(10), 60))
    assert result.accuracy == 1.0 and result.accuracy_std == 0.0
    assert 0.4 < result.threshold < 0.6
    assert result.auc == 1.0
    assert result.tar_at_far == {"1e-3": 1.0, "1e-2": 1.0}


def test_ten_fold_edge_cases():
    # All same: each fold's threshold is the lowest score of the other fold (call all of it same), which
    # fold 0's lower scores then fail; one class is legal, just uninformative.
    result = ten_fold([0.1, 0.2, 0.3, 0.4], [True] * 4, [0, 0, 1, 1])
    assert result.fold_thresholds == [0.3, 0.1] and result.fold_accuracies == [0.0, 1.0]
    assert math.isnan(result.auc) and math.isnan(result.tar_at_far["1e-2"])  # undefined with one class
    with pytest.raises(ValueError, match="two folds"):
        ten_fold([0.1, 0.9], [False, True], [0, 0])
    with pytest.raises(ValueError):
        ten_fold([0.1, 0.9], [False, True], [0])
    with pytest.raises(ValueError):
        ten_fold([], [], [])


def test_six_thousand_pairs_are_fast():
    rng = np.random.default_rng(3)
    same = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    scores = rng.normal(size=6000) + same * 2.0
    start = time.perf_counter()
    result = ten_fold(scores, same, np.repeat(np.arange(10), 600))
    assert time.perf_counter() - start < 0.5
    assert 0.8 < result.accuracy < 0.9  # two unit normals 2 apart: about 84% at the midpoint


# -- open-set identification -------------------------------------------------------------------------
# Known probes (best score, named right?) and stranger probes (best score).
KNOWN = [(0.9, True), (0.8, True), (0.7, False), (0.6, True), (0.4, True)]
STRANGERS = [0.75, 0.5, 0.3, 0.2]


def open_set_example():
    scores = np.array([s for s, _ in KNOWN] + STRANGERS)
    right = np.array([r for _, r in KNOWN] + [False] * len(STRANGERS))
    known = np.array([True] * len(KNOWN) + [False] * len(STRANGERS))
    return scores, right, known


def test_open_set_sweep_on_a_hand_made_example():
    thresholds, known_acc, far = open_set_sweep(*open_set_example())
    assert thresholds[:-1] == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9])
    assert thresholds[-1] > 0.9  # the extra candidate that names nobody
    assert known_acc * 5 == pytest.approx([4, 4, 4, 3, 3, 2, 2, 2, 1, 0])
    assert far * 4 == pytest.approx([4, 3, 2, 2, 1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize(
    "max_far, threshold, known_accuracy, false_accepts",
    [(0.25, 0.6, 3 / 5, 1 / 4), (0.5, 0.4, 4 / 5, 2 / 4), (0.0, 0.8, 2 / 5, 0.0), (1.0, 0.2, 4 / 5, 1.0)],
)
def test_choose_open_set_threshold(max_far, threshold, known_accuracy, false_accepts):
    result = choose_open_set_threshold(*open_set_example(), max_far=max_far)
    assert result == OpenSetResult(
        pytest.approx(threshold), pytest.approx(known_accuracy), pytest.approx(false_accepts), 5, 4
    )


def test_open_set_names_nobody_when_a_stranger_outscores_everyone():
    scores, right, known = np.array([0.5, 0.99]), np.array([True, False]), np.array([True, False])
    result = choose_open_set_threshold(scores, right, known, max_far=0.0)
    assert result.threshold > 0.99 and result.known_accuracy == 0.0 and result.false_accept_rate == 0.0


def test_open_set_refuses_bad_input():
    scores, right, known = open_set_example()
    with pytest.raises(ValueError):
        open_set_sweep(scores, right, np.ones_like(known))  # no strangers: FAR is undefined
    with pytest.raises(ValueError):
        open_set_sweep(np.r_[scores[:-1], np.nan], right, known)
    with pytest.raises(ValueError):
        open_set_sweep([], [], [])
    with pytest.raises(ValueError):
        choose_open_set_threshold(scores, right, known, max_far=-0.1)


def test_open_set_sweep_matches_brute_force_and_is_fast():
    rng = np.random.default_rng(4)
    n = 10_000
    known = rng.random(n) < 0.7
    right = known & (rng.random(n) < 0.9)
    scores = np.round(rng.uniform(size=n) + known * 0.3, 3)
    start = time.perf_counter()
    thresholds, known_acc, far = open_set_sweep(scores, right, known)
    choose_open_set_threshold(scores, right, known, max_far=0.01)
    assert time.perf_counter() - start < 0.5
    for i in rng.choice(len(thresholds), 50, replace=False):
        t = thresholds[i]
        assert known_acc[i] == pytest.approx(np.mean(right[known] & (scores[known] >= t)))
        assert far[i] == pytest.approx(np.mean(scores[~known] >= t))


# -- read_pairs --------------------------------------------------------------------------------------
def test_read_pairs_on_real_lfw(shared: Path):
    lfw = shared / "faces" / "lfw"
    pairs = read_pairs(lfw / "pairs.txt")
    assert len(pairs) == 6000
    assert sum(p.same for p in pairs) == 3000
    assert np.bincount([p.fold for p in pairs]).tolist() == [600] * 10
    assert [p.same for p in pairs[:600]] == [True] * 300 + [False] * 300
    first = pairs[0]
    assert first.a.is_file() and first.b.is_file()
    assert first.a.parent.parent == lfw and first.a.name.endswith("_0001.jpg")


def make_lfw(tmp_path: Path, pairs_text: str, people=("Ann_A", "Bob_B"), images=3) -> Path:
    for person in people:
        (tmp_path / person).mkdir(exist_ok=True)
        for i in range(1, images + 1):
            (tmp_path / person / f"{person}_{i:04d}.jpg").write_bytes(b"jpeg")
    path = tmp_path / "pairs.txt"
    path.write_text(pairs_text)
    return path


def test_read_pairs_small_file_and_single_set_header(tmp_path: Path):
    path = make_lfw(tmp_path, "2 1\nAnn_A 1 2\nAnn_A 1 Bob_B 3\nBob_B 2 3\nBob_B 1 Ann_A 3\n\n")
    pairs = read_pairs(path)
    assert pairs[0] == Pair(tmp_path / "Ann_A/Ann_A_0001.jpg", tmp_path / "Ann_A/Ann_A_0002.jpg", True, 0)
    assert pairs[1] == Pair(tmp_path / "Ann_A/Ann_A_0001.jpg", tmp_path / "Bob_B/Bob_B_0003.jpg", False, 0)
    assert [p.fold for p in pairs] == [0, 0, 1, 1]
    path.write_text("1\nAnn_A 1 2\nAnn_A 1 Bob_B 3\n")
    assert [(p.same, p.fold) for p in read_pairs(path)] == [(True, 0), (False, 0)]


def test_read_pairs_with_a_separate_image_root(tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    make_lfw(images, "")
    path = tmp_path / "pairs.txt"
    path.write_text("1\nAnn_A 1 2\nAnn_A 1 Bob_B 3\n")
    assert read_pairs(path, images)[0].a == images / "Ann_A/Ann_A_0001.jpg"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ten 300\nAnn_A 1 2\nAnn_A 1 Bob_B 3\n", r"pairs\.txt:1:.*header"),
        ("1 2 3\nAnn_A 1 2\nAnn_A 1 Bob_B 3\n", r"pairs\.txt:1:"),
        ("", r"pairs\.txt:1:"),
        ("1\nAnn_A 1\nAnn_A 1 Bob_B 3\n", r"pairs\.txt:2:.*same-person"),
        ("1\nAnn_A 1 2\nAnn_A 1 Bob_B\n", r"pairs\.txt:3:.*different-person"),
        ("1\nAnn_A 1 x\nAnn_A 1 Bob_B 3\n", r"pairs\.txt:2:.*'x' is not an integer"),
        ("1\nAnn_A 1 2\nAnn_A 0 Bob_B 3\n", r"pairs\.txt:3:.*1 or more"),
        ("1\nAnn_A 1 2\n.. 1 Bob_B 3\n", r"pairs\.txt:3:.*not a person name"),
        ("1\nAnn_A 1 2\n", r"promises 1 fold.*1 pair lines"),
        ("1\nAnn_A 1 2\nAnn_A 1 Bob_B 3\nAnn_A 2 3\n", r"promises.*3 pair lines"),
    ],
)
def test_malformed_pairs_files_name_the_line(tmp_path: Path, text: str, expected: str):
    with pytest.raises(InputError, match=expected):
        read_pairs(make_lfw(tmp_path, text))


def test_missing_images_are_all_counted_and_the_first_named(tmp_path: Path):
    lines = "".join(f"Ann_A 1 {i}\n" for i in range(2, 12)) + "".join(f"Ann_A 1 Bob_B {i}\n" for i in range(1, 11))
    path = make_lfw(tmp_path, "10\n" + lines)  # images 1..3 exist: Ann_A 4..11 and Bob_B 4..10 do not
    with pytest.raises(InputError, match=r"15 image\(s\).*Ann_A_0004\.jpg.* and 10 more") as info:
        read_pairs(path)
    assert "Bob_B" not in str(info.value)  # only the first few are named


def test_missing_pairs_file_or_image_folder(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        read_pairs(tmp_path / "nope.txt")
    path = make_lfw(tmp_path, "1\nAnn_A 1 2\nAnn_A 1 Bob_B 3\n")
    with pytest.raises(InputError, match="image folder"):
        read_pairs(path, tmp_path / "no-images")


# -- plot_roc ----------------------------------------------------------------------------------------
def test_plot_roc_writes_a_png(tmp_path: Path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(5)
    same = rng.random(500) < 0.5
    curves = {}
    for label, gap in (("strong", 3.0), ("weak", 1.0)):
        far, tar, _ = roc_curve(rng.normal(size=500) + same * gap, same)
        curves[label] = (far, tar)
    out = plot_roc(curves, tmp_path / "plots" / "roc.png", "LFW pairs")
    assert out == tmp_path / "plots" / "roc.png"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000


def test_plot_roc_without_matplotlib_says_how_to_install_it(tmp_path: Path, monkeypatch):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(InputError, match="pip install matplotlib"):
        plot_roc({"x": (np.array([0.0, 1.0]), np.array([0.0, 1.0]))}, tmp_path / "roc.png", "t")
