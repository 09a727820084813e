"""Verification and open-set evaluation on scores alone: the LFW pairs protocol, threshold choice and ROC.

Everything here works on similarity scores (higher = more alike; pass cosine similarity, or the negative
of a Euclidean distance), so it knows nothing about models or galleries and can be tested with numbers made
up by hand. The decision rule everywhere is `score >= threshold` -> same person (or: accept the name).

All functions are vectorised (sorting and cumulative sums), so 6000 pairs or 10^4 probes take milliseconds.
Bad input files raise InputError (the user's to fix); bad arrays raise ValueError (the caller's bug).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

TAR_AT_FAR_LEVELS = {"1e-3": 1e-3, "1e-2": 1e-2}
_MISSING_SHOWN = 5  # how many missing images a read_pairs error lists by name


# -- pairs files -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """Two face images, whether they show the same person, and the fold (0-based) of the protocol."""

    a: Path
    b: Path
    same: bool
    fold: int


def _image_path(root: Path, name: str, number: str, where: str) -> Path:
    if name in (".", "..") or "/" in name or "\\" in name:
        raise InputError(f"{where}: {name!r} is not a person name (it would leave the image folder)")
    try:
        index = int(number)
    except ValueError:
        raise InputError(f"{where}: image number {number!r} is not an integer") from None
    if index < 1:
        raise InputError(f"{where}: image number {index} must be 1 or more (LFW counts from 1)")
    return root / name / f"{name}_{index:04d}.jpg"


def read_pairs(pairs_file: Path, image_root: Path | None = None) -> list[Pair]:
    """Parse an LFW pairs file: header `folds per_fold` (or just `n` for one set), then per fold `per_fold`
    same-person lines `name i j` followed by `per_fold` different-person lines `name1 i name2 j`.

    Images are `image_root/name/name_%04d.jpg`, image_root defaulting to the pairs file's folder. Every
    image is checked up front, so a long evaluation cannot die half-way on a missing file.
    """
    pairs_file = Path(pairs_file)
    root = Path(image_root) if image_root is not None else pairs_file.parent
    try:
        text = pairs_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"pairs file {pairs_file} does not exist; pass the LFW pairs.txt") from None
    except IsADirectoryError:
        raise InputError(f"pairs file {pairs_file} is a folder; pass the LFW pairs.txt inside it") from None
    except UnicodeDecodeError:
        raise InputError(f"pairs file {pairs_file} is not a text file; pass the LFW pairs.txt") from None
    except OSError as exc:
        raise InputError(f"cannot read pairs file {pairs_file} ({exc.strerror})") from None
    if not root.is_dir():
        raise InputError(
            f"image folder {root} for {pairs_file} does not exist; pass the LFW folder that holds one folder per person"
        )

    lines = text.splitlines()
    header = lines[0].split() if lines else []
    try:
        numbers = [int(x) for x in header]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        folds, per_fold = 1, numbers[0]
    elif len(numbers) == 2:
        folds, per_fold = numbers
    else:
        raise InputError(
            f"{pairs_file}:1: expected a header 'folds pairs_per_fold' (e.g. '10 300') or 'pairs', got "
            f"{lines[0] if lines else ''!r}"
        )
    if folds < 1 or per_fold < 1:
        raise InputError(f"{pairs_file}:1: the header numbers must be positive, got {lines[0]!r}")

    body = lines[1:]
    while body and not body[-1].strip():  # a trailing blank line is not an error
        body.pop()
    expected = folds * 2 * per_fold
    if len(body) != expected:
        raise InputError(
            f"{pairs_file}: the header promises {folds} fold(s) of {per_fold} same and {per_fold} different pairs "
            f"({expected} lines), but {len(body)} pair lines follow"
        )

    pairs: list[Pair] = []
    for offset, line in enumerate(body):
        where = f"{pairs_file}:{offset + 2}"
        fold, position = divmod(offset, 2 * per_fold)
        same = position < per_fold
        fields = line.split()
        if same:
            if len(fields) != 3:
                raise InputError(f"{where}: expected a same-person line 'name i j', got {line!r}")
            a = _image_path(root, fields[0], fields[1], where)
            b = _image_path(root, fields[0], fields[2], where)
        else:
            if len(fields) != 4:
                raise InputError(f"{where}: expected a different-person line 'name1 i name2 j', got {line!r}")
            a = _image_path(root, fields[0], fields[1], where)
            b = _image_path(root, fields[2], fields[3], where)
        pairs.append(Pair(a, b, same, fold))

    seen: set[Path] = set()
    missing: list[Path] = []
    for pair in pairs:
        for path in (pair.a, pair.b):
            if path not in seen:
                seen.add(path)
                if not path.is_file():
                    missing.append(path)
    if missing:
        shown = ", ".join(str(p) for p in missing[:_MISSING_SHOWN])
        more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
        raise InputError(
            f"{len(missing)} image(s) named in {pairs_file} do not exist: {shown}{more}; "
            f"check that {root} is the LFW image folder (pass image_root if the images live elsewhere)"
        )
    return pairs


# -- input checks ------------------------------------------------------------------------------------
def _scores(scores: Any, name: str = "scores", *, finite: bool = True) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: there is nothing to evaluate")
    if np.isnan(array).any():
        raise ValueError(f"{name} holds {int(np.isnan(array).sum())} NaN value(s); every score must be a number")
    if finite and not np.isfinite(array).all():
        raise ValueError(f"{name} holds infinite values; pass finite similarities")
    return array


def _labels(labels: Any, n: int, name: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (n,):
        raise ValueError(f"{name} must have one entry per score ({n}), got shape {array.shape}")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must be booleans (or 0/1)")
        array = array.astype(bool)
    return array


def _scores_and_same(scores: Any, same: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _scores(scores)
    return s, _labels(same, s.size, "same")


# -- verification ------------------------------------------------------------------------------------
def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold that maximises accuracy on these pairs, and that accuracy.

    Candidates are the midpoints between consecutive distinct sorted scores, plus the lowest score (call
    everything same) and just above the highest (call everything different), so one-class input works.
    Ties go to the lowest threshold.
    """
    s, y = _scores_and_same(scores, same)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n = s.size
    # k = how many of the lowest scores are called "different"; only cuts between distinct scores are possible.
    cuts = np.concatenate(([0], np.flatnonzero(s[1:] != s[:-1]) + 1, [n]))
    diff_below = np.concatenate(([0], np.cumsum(~y)))[cuts]
    same_below = np.concatenate(([0], np.cumsum(y)))[cuts]
    correct = diff_below + (same_below[-1] - same_below)
    best = int(np.argmax(correct))  # first maximum = lowest threshold
    k = int(cuts[best])
    if k == 0:
        threshold = s[0]
    elif k == n:
        threshold = np.nextafter(s[-1], np.inf)
    else:
        lo, hi = s[k - 1], s[k]
        threshold = lo / 2 + hi / 2
        if not lo < threshold <= hi:  # adjacent floats: the midpoint rounded onto `lo`
            threshold = hi
    return float(threshold), float(correct[best] / n)


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-accept rate, true-accept rate and threshold at every distinct score, from strict to lenient.

    The first point is (0, 0) at threshold +inf; the last is (1, 1) at the lowest score. Needs both classes.
    """
    s, y = _scores_and_same(scores, same)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("a ROC curve needs both same-person and different-person pairs")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_each = np.concatenate((np.flatnonzero(s[1:] != s[:-1]), [s.size - 1]))
    tar = np.cumsum(y)[last_of_each] / positives
    far = np.cumsum(~y)[last_of_each] / negatives
    thresholds = s[last_of_each]
    return np.r_[0.0, far], np.r_[0.0, tar], np.r_[np.inf, thresholds]


def _tar_at_far(far: np.ndarray, tar: np.ndarray, target: float) -> float:
    # far is non-decreasing, tar too: the best TAR allowed is at the last point within the target.
    return float(tar[np.searchsorted(far, target, side="right") - 1])


def _auc(far: np.ndarray, tar: np.ndarray) -> float:
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """True-accept rate at the strictest-needed threshold whose false-accept rate (on different-person pairs)
    is at most `far`. Tied scores move together, so the rate is never exceeded.
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be between 0 and 1, got {far}")
    curve_far, curve_tar, _ = roc_curve(scores, same)
    return _tar_at_far(curve_far, curve_tar, far)


@dataclass
class PairsResult:
    """The ten-fold verification result; `threshold` is the one to ship."""

    accuracy: float  # mean over folds
    accuracy_std: float  # population std over folds (np.std), as the usual LFW scripts report
    threshold: float  # mean of the per-fold thresholds
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    tar_at_far: dict[str, float]  # {"1e-3": TAR, "1e-2": TAR} over all pairs; NaN when a class is absent
    auc: float  # NaN when a class is absent
    pairs: int


def ten_fold(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> PairsResult:
    """The standard protocol: each fold is scored with the threshold chosen on all the other folds, so the
    accuracy is never measured on the pairs that chose its threshold. Works for any number of folds >= 2.
    """
    s, y = _scores_and_same(scores, same)
    f = np.asarray(folds)
    if f.shape != s.shape:
        raise ValueError(f"folds must have one entry per score ({s.size}), got shape {f.shape}")
    fold_ids = np.unique(f)
    if fold_ids.size < 2:
        raise ValueError("ten_fold needs at least two folds: each fold's threshold is chosen on the others")
    accuracies: list[float] = []
    thresholds: list[float] = []
    for fold in fold_ids:
        test = f == fold
        threshold, _ = best_threshold(s[~test], y[~test])
        accuracies.append(float(np.mean((s[test] >= threshold) == y[test])))
        thresholds.append(threshold)
    if y.all() or not y.any():
        tars = {key: float("nan") for key in TAR_AT_FAR_LEVELS}
        auc = float("nan")
    else:
        curve_far, curve_tar, _ = roc_curve(s, y)
        tars = {key: _tar_at_far(curve_far, curve_tar, level) for key, level in TAR_AT_FAR_LEVELS.items()}
        auc = _auc(curve_far, curve_tar)
    return PairsResult(
        accuracy=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        threshold=float(np.mean(thresholds)),
        fold_accuracies=accuracies,
        fold_thresholds=thresholds,
        tar_at_far=tars,
        auc=auc,
        pairs=int(s.size),
    )


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Draw ROC curves (label -> (far, tar)) to an image, FAR on a log axis where the useful range lies.

    matplotlib is optional: it is imported here, with the Agg canvas, so no display is ever needed.
    """
    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("plotting a ROC curve needs matplotlib: pip install matplotlib") from None
    path = Path(path)
    figure = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    lowest = 1.0
    for label, (far, tar) in curves.items():
        far, tar = np.asarray(far, np.float64), np.asarray(tar, np.float64)
        if far.shape != tar.shape or far.ndim != 1:
            raise ValueError(f"curve {label!r}: far and tar must be 1-D arrays of one length")
        positive = far[far > 0]
        if positive.size:
            lowest = min(lowest, float(positive.min()))
        axes.plot(far, tar, label=str(label))
    axes.set_xscale("log", nonpositive="mask")
    axes.set_xlim(min(lowest, 1e-3), 1.0)
    axes.set_ylim(0.0, 1.0)
    axes.set_xlabel("false accept rate (different-person pairs accepted)")
    axes.set_ylabel("true accept rate (same-person pairs accepted)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    except OSError as exc:
        raise InputError(
            f"cannot write the ROC plot to {path} ({exc.strerror or exc}); choose a writable path"
        ) from None
    return path


# -- open-set identification -------------------------------------------------------------------------
@dataclass
class OpenSetResult:
    """An identification threshold and what it does to enrolled people and to strangers."""

    threshold: float
    known_accuracy: float  # probes of enrolled people named correctly (and above threshold)
    false_accept_rate: float  # probes of never-enrolled people given any name
    known_probes: int
    stranger_probes: int


def open_set_sweep(
    best_scores: np.ndarray, best_is_right: np.ndarray, is_known: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known-person accuracy and stranger false-accept rate at every candidate threshold (ascending).

    Candidates are the distinct best scores, plus one just above the highest (name nobody), so a threshold
    that meets any false-accept limit always exists. A probe is named when its best score >= threshold.
    -inf is allowed for a probe with no candidate at all (an empty gallery, say); NaN and +inf are not.
    """
    s = _scores(best_scores, "best_scores", finite=False)
    if (s == np.inf).any():
        raise ValueError("best_scores holds +inf; pass finite similarities (-inf marks a probe with no candidate)")
    right = _labels(best_is_right, s.size, "best_is_right")
    known = _labels(is_known, s.size, "is_known")
    n_known, n_strangers = int(known.sum()), int((~known).sum())
    if n_known == 0 or n_strangers == 0:
        raise ValueError("open-set calibration needs probes of enrolled people and probes of strangers")
    thresholds = np.unique(np.r_[s, np.nextafter(s.max(), np.inf)])
    correct = np.sort(s[known & right])
    strangers = np.sort(s[~known])
    # count of values >= t = size - (number of values < t)
    known_acc = (correct.size - np.searchsorted(correct, thresholds, side="left")) / n_known
    far = (strangers.size - np.searchsorted(strangers, thresholds, side="left")) / n_strangers
    return thresholds, known_acc, far


def choose_open_set_threshold(
    best_scores: np.ndarray, best_is_right: np.ndarray, is_known: np.ndarray, max_far: float = 0.05
) -> OpenSetResult:
    """The threshold with the best known-person accuracy whose stranger false-accept rate is <= max_far.

    Ties go to the lowest threshold (the most lenient one with that accuracy).
    """
    if not 0.0 <= max_far <= 1.0:
        raise ValueError(f"max_far must be between 0 and 1, got {max_far}")
    thresholds, known_acc, far = open_set_sweep(best_scores, best_is_right, is_known)
    allowed = far <= max_far  # never empty: the last candidate names nobody
    best = int(np.argmax(np.where(allowed, known_acc, -1.0)))
    known_probes = int(np.count_nonzero(is_known))  # already checked to be 0/1 by the sweep
    return OpenSetResult(
        threshold=float(thresholds[best]),
        known_accuracy=float(known_acc[best]),
        false_accept_rate=float(far[best]),
        known_probes=known_probes,
        stranger_probes=int(np.size(is_known)) - known_probes,
    )
