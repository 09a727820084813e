"""Issue 13: does the stranger false-accept rate (FAR) hold at the requested operating point, per gallery?

    python bench/calibration.py [--lfw DIR] [--quick]

Reads the cached dlib-resnet descriptors of every LFW photo (facerec.lfw.cache_dir(), built by
facerec.lfw.embed_photos, e.g. through bench/cluster.py) and the re-styled photos of bench/embed_styles.py
(lfw-dlib-resnet-<style>.npz in the same folder). Unit vectors = normalise(plain + mirror) (the model's test-time flip).

Protocol (nothing is chosen on the data it is reported on):
  half A = people with stable_fraction(name) < 0.5: tuning. A is split again by
           stable_fraction("cohort:" + name) < 0.5 into a tuning cohort and tuning galleries/strangers.
  half B = the rest: every reported figure. Galleries of 1, 3, 10, 30, 100 people drawn from B people
           with >= 4 photos (enrol the first 3, probes = up to 10 of the rest); 600 = all 296 of them plus
           304 drawn B people with 2-3 photos (enrol 1 photo, probes = the rest: the 1-photo edge case).
           Strangers: the first photo of every B person not in the gallery.
  cohort (for B) = photos of A people, as bench/make_cohort.py ships it: the first 1500 people in a fixed
           hash order give their first photo as calibration strangers, the others up to 10 photos each
           (every first photo before any second) to a 2000-face normalisation cohort.
Styles: clean LFW; web-small / tiny-noisy (bench/embed_styles.py) for the probes and strangers only (gallery
enrolled from clean photos: the camera case) or for everything; cohort clean (shipped) or re-styled
(a folder of the user's own non-enrolled photos).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import find_shared
from facerec import calibration as cal
from facerec.lfw import cache_dir, stable_fraction

SIZES = (1, 3, 10, 30, 100, 600)
DRAWS = {1: 40, 3: 40, 10: 20, 30: 20, 100: 10, 600: 5}
ALPHAS = (0.01, 0.05)
SEED = 13
N_STATS = 2000  # normalisation cohort (see the cohort-size rows)
N_CAL = 1500  # calibration strangers (>= 15/alpha at 1%), people disjoint from the normalisation cohort
CHOSEN_POOL = "shift"  # stricter of the cohort and leave-one-person-out thresholds (see REPORT.md)
N_CAL_TUNE = 1000  # half A is smaller: fewer calibration strangers while tuning


def combined_threshold(cohort_scores: np.ndarray, lopo_scores: np.ndarray, max_false_accept: float) -> float:
    """A rule that lost: the stricter of the cohort's and the gallery's own (leave-one-person-out) thresholds,
    LOPO used only once it has enough scores to certify the rate."""
    t = cal.threshold_for(cohort_scores, max_false_accept)
    own = cal.threshold_for(lopo_scores, max_false_accept) if len(lopo_scores) else float("inf")
    return max(t, own) if np.isfinite(own) else t


def unit_vectors(npz: Path) -> dict[str, np.ndarray]:
    with np.load(npz, allow_pickle=False) as d:
        v = d["plain"].astype(np.float64) + d["mirror"]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return dict(zip(d["paths"].tolist(), v))


def lfw_people(lfw: Path) -> dict[str, list[str]]:
    return {p.name: [str(x.resolve()) for x in sorted(p.glob("*.jpg"))] for p in sorted(lfw.iterdir()) if p.is_dir()}


@dataclass
class Half:
    """People of one half: rows 0..n_enrol-1 can be enrolled (>= 4 photos first, then 2-3 photos)."""

    n4: int  # people with >= 4 photos (rows 0..n4-1)
    n_enrol: int
    enrol: list[list[str]]  # per enrollable person
    probes: list[str]
    probe_owner: np.ndarray
    firsts: list[str]  # first photo of every person of the half (stranger candidates)
    first_owner: np.ndarray


def build_half(people: dict[str, list[str]], names: list[str]) -> Half:
    p4 = [n for n in names if len(people[n]) >= 4]
    p23 = [n for n in names if 2 <= len(people[n]) <= 3]
    p1 = [n for n in names if len(people[n]) == 1]
    order = p4 + p23 + p1
    enrol = [people[n][:3] for n in p4] + [people[n][:1] for n in p23]
    probes, owner = [], []
    for i, n in enumerate(p4 + p23):
        rest = people[n][3:13] if i < len(p4) else people[n][1:]
        probes += rest
        owner += [i] * len(rest)
    return Half(
        len(p4),
        len(p4) + len(p23),
        enrol,
        probes,
        np.array(owner),
        [people[n][0] for n in order],
        np.arange(len(order)),
    )


def cohort_split(
    people: dict[str, list[str]], names: list[str], n_cal: int, cap: int = 10
) -> tuple[list[str], list[str]]:
    """(normalisation cohort, calibration strangers), disjoint by person: the first `n_cal` people in a
    fixed hash order give their first photo as calibration strangers; everyone else gives up to `cap`
    photos to the normalisation cohort, every person's first photo before anyone's second."""
    names = sorted(names, key=lambda n: stable_fraction("cohort-order:" + n))
    cal_people, stats_people = names[:n_cal], names[n_cal:]
    stats = [people[n][r] for r in range(cap) for n in stats_people if r < len(people[n])]
    return stats, [people[n][0] for n in cal_people]


@dataclass
class Setting:
    name: str
    enrol: dict[str, np.ndarray]
    query: dict[str, np.ndarray]
    cohort: dict[str, np.ndarray]


class World:
    """Every score one (setting, half, method) needs, computed once; galleries are column subsets."""

    def __init__(
        self, half: Half, s: Setting, cohort: tuple[list[str], list[str]], side: str, top_frac: float, n_stats: int
    ) -> None:
        stack = lambda src, ps: np.array([src[p] for p in ps])
        stats = [p for p in cohort[0] if p in s.cohort][:n_stats]
        k_stats, k_cal = stack(s.cohort, stats), stack(s.cohort, [p for p in cohort[1] if p in s.cohort])
        top_k = cal.top_k_for(len(k_stats), top_frac)
        faces = [stack(s.enrol, ps) for ps in half.enrol]
        c = np.array([f.mean(0) for f in faces])
        self.centroids = c / np.linalg.norm(c, axis=1, keepdims=True)
        self.faces = np.concatenate(faces)
        self.face_owner = np.repeat(np.arange(half.n_enrol), [len(f) for f in faces])
        self.k_stats, self.k_cal, self.top_k = k_stats, k_cal, top_k
        pst = cal.person_stats(self.centroids, k_stats, top_k) if side in ("z", "s") else None
        self.pst = pst
        qside = side in ("t", "s")

        def norm(x: np.ndarray) -> np.ndarray:
            return cal.normalise_scores(
                x @ self.centroids.T, pst, cal.cohort_stats(x, k_stats, top_k) if qside else None
            )

        self.probes = norm(stack(s.query, half.probes))
        self.firsts = norm(stack(s.query, half.firsts))
        self.raw_queries = np.r_[stack(s.query, half.probes), stack(s.query, half.firsts)] @ self.centroids.T
        self.lopo = norm(self.faces)
        self.lopo[np.arange(len(self.faces)), self.face_owner] = -np.inf
        self.cal = norm(k_cal)
        self.half = half


def top2(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arg = m.argmax(axis=1)
    best = m[np.arange(len(m)), arg]
    if m.shape[1] < 2:
        return arg, best, np.full(len(m), -np.inf)
    return arg, best, np.partition(m, m.shape[1] - 2, axis=1)[:, -2]


def gate(best: np.ndarray, second: np.ndarray, margin: float) -> np.ndarray:
    return best if margin <= 0 else np.where(best - second >= margin, best, -np.inf)


def draws(half: Half, size: int, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        if size <= half.n4:
            out.append(np.sort(rng.choice(half.n4, size, replace=False)))
        else:
            extra = rng.choice(np.arange(half.n4, half.n_enrol), size - half.n4, replace=False)
            out.append(np.sort(np.r_[np.arange(half.n4), extra]))
    return out


def evaluate(w: World, members: np.ndarray, pool: str, margin: float, thresholds: dict[float, float] | None):
    """FAR and known accuracy for one gallery (members) at every alpha; thresholds=None -> per-gallery."""
    h = w.half
    is_member = np.zeros(h.n_enrol + len(h.firsts), bool)
    is_member[members] = True
    known = is_member[h.probe_owner]
    arg, best, second = top2(w.probes[known][:, members])
    right = members[arg] == h.probe_owner[known]
    kscore = gate(best, second, margin)
    strangers = ~is_member[h.first_owner]
    _, sb, ss = top2(w.firsts[strangers][:, members])
    sscore = gate(sb, ss, margin)
    if thresholds is None:
        parts = []
        if pool in ("both", "cohort"):
            parts.append(gate(*top2(w.cal[:, members])[1:], margin))
        if pool in ("both", "lopo") and len(members) > 1:
            rows = is_member[w.face_owner]
            parts.append(gate(*top2(w.lopo[rows][:, members])[1:], margin))
        if pool == "shift":  # cohort tail, moved up by how much closer the gallery's own strangers are
            a1, t1, t2 = top2(w.cal[:, members])
            rows = is_member[w.face_owner]
            lopo = w.lopo[rows][:, members].max(axis=1) if len(members) > 1 else np.zeros(0)
            local = np.searchsorted(members, w.face_owner[rows])
            shift = cal.domain_shift(a1, t1, t2, lopo, local, len(members))
            thresholds = {a: cal.threshold_for(t1 + shift, a) for a in ALPHAS}
        elif pool == "max":  # each source must hold on its own: the stricter of the two thresholds
            coh = gate(*top2(w.cal[:, members])[1:], margin)
            lopo = (
                gate(*top2(w.lopo[is_member[w.face_owner]][:, members])[1:], margin)
                if len(members) > 1
                else np.zeros(0)
            )
            thresholds = {a: combined_threshold(coh, lopo, a) for a in ALPHAS}
        else:
            pooled = np.concatenate(parts) if parts else np.zeros(0)
            thresholds = {a: cal.threshold_for(pooled, a) for a in ALPHAS}
    return {a: (float(np.mean(sscore >= t)), float(np.mean(right & (kscore >= t))), t) for a, t in thresholds.items()}


def size_table(w: World, rng: np.random.Generator, sizes=(1, 3, 10, 30, 100)) -> list[tuple[int, dict[float, float]]]:
    """A fixed threshold per gallery size (today's recipe, for normalised scores): quantile of pooled
    strangers' best scores over random galleries of the tuning half."""
    h, table = w.half, []
    for size in sizes:
        pooled = []
        for members in draws(h, min(size, h.n4), rng, 20):
            is_member = np.zeros(len(h.firsts), bool)
            is_member[members] = True
            pooled.append(w.firsts[~is_member[h.first_owner]][:, members].max(axis=1))
        table.append((size, {a: float(np.quantile(np.concatenate(pooled), 1 - a)) for a in ALPHAS}))
    return table


def interp(table, size: int) -> dict[float, float]:
    xs = np.log([s for s, _ in table])
    return {a: float(np.interp(np.log(size), xs, [t[a] for _, t in table])) for a in ALPHAS}


def run(w: World, method: dict, sizes=SIZES, table=None, baseline=None) -> dict:
    rng = np.random.default_rng(SEED)
    out = {}
    for size in sizes:
        if size > w.half.n_enrol:
            continue
        res = []
        for members in draws(w.half, size, rng, DRAWS[size]):
            if baseline is not None:
                th = {0.05: baseline.identify_for(size), 0.005: baseline.identify_for(size, video=True)}
            elif table is not None:
                th = interp(table, size)
            else:
                th = None
            res.append(evaluate(w, members, method.get("pool", "both"), method.get("margin", 0.0), th))
        out[size] = {
            a: {
                "far": float(np.mean([r[a][0] for r in res])),
                "far_p90": float(np.quantile([r[a][0] for r in res], 0.9)),
                "known": float(np.mean([r[a][1] for r in res])),
                "threshold": float(np.mean([r[a][2] for r in res])),
            }
            for a in res[0]
        }
    return out


def worst_ratio(result: dict) -> float:
    return max(v["far"] / a for per in result.values() for a, v in per.items())


def fmt(result: dict) -> str:
    cells = []
    for size, per in result.items():
        cells.append(f"{size}:" + "/".join(f"{v['far'] * 100:.1f}%({v['known']:.3f})" for a, v in sorted(per.items())))
    return "  ".join(cells)


def cost(top_k: int) -> dict:
    """Seconds for the per-person statistics, the gallery threshold and one query at 10^5 people."""
    rng = np.random.default_rng(0)
    unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(
        rng.normal(size=(n, 128)).astype(np.float32)
    )
    people, k_stats, k_cal, faces = unit(100_000), unit(N_STATS), unit(N_CAL), unit(2000)
    t = time.perf_counter()
    pst = cal.person_stats(people, k_stats, top_k)
    t_stats = time.perf_counter() - t
    t = time.perf_counter()
    cal.stranger_scores(people, pst, faces[:0], np.zeros(0, int), k_cal, k_stats, top_k)
    t_cal = time.perf_counter() - t
    t = time.perf_counter()  # leave-one-person-out on a sample of 2000 enrolled faces
    cal.stranger_scores(people, pst, faces, rng.integers(0, len(people), len(faces)), k_cal[:0], k_stats, top_k)
    t_lopo = time.perf_counter() - t
    q = unit(1)
    t = time.perf_counter()
    for _ in range(100):
        cal.cohort_stats(q, k_stats, top_k)
    t_query = (time.perf_counter() - t) / 100
    return {
        "people": len(people),
        "person_stats_s": round(t_stats, 2),
        "cohort_stranger_scores_s": round(t_cal, 2),
        "lopo_2000_faces_s": round(t_lopo, 2),
        "query_stats_ms": round(t_query * 1000, 3),
        "store_bytes_per_person": 8,
        "cohort_file_bytes_float16": (N_STATS + N_CAL) * 128 * 2,
    }


def machine() -> dict:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "threads": int(os.environ["OPENBLAS_NUM_THREADS"]),
        "numpy": np.__version__,
    }


def protocol_row(w: World, members: np.ndarray, th: dict[float, float] | None, pool: str = CHOSEN_POOL) -> dict:
    """The open-set protocol on one gallery: calibrated FAR/known, and the best known accuracy any
    threshold could reach at <= each FAR (the ranking's quality, whatever the calibration)."""
    h = w.half
    res = evaluate(w, members, pool, 0.0, th)
    known = h.probe_owner < len(members)
    p = w.probes[known][:, members]
    strangers = ~np.isin(h.first_owner, members)
    sb = np.sort(w.firsts[strangers][:, members].max(axis=1))
    good = np.sort(p.max(axis=1)[p.argmax(axis=1) == h.probe_owner[known]])
    out = {}
    for a in res:
        t = sb[min(len(sb) - 1, int(np.ceil((1 - a) * len(sb))))]  # oracle: the a-quantile of these very strangers
        out[a] = {"oracle_known": float((len(good) - np.searchsorted(good, t, "right")) / known.sum())}
    return {
        "calibrated": {a: {"far": v[0], "known": v[1]} for a, v in res.items()},
        **{f"oracle@{a}": v for a, v in out.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lfw", type=Path)
    parser.add_argument("--quick", action="store_true", help="tuning + main rows only")
    args = parser.parse_args()
    t0 = time.time()
    people = lfw_people(args.lfw or find_shared() / "faces" / "lfw")
    clean = unit_vectors(next(p for p in sorted(cache_dir().glob("lfw-dlib-resnet-*.npz")) if p.stem.count("-") == 3))
    styles: dict[str, dict[str, np.ndarray]] = {}
    missed: dict[str, int] = {}
    for p in sorted(cache_dir().glob("lfw-dlib-resnet-*-*.npz")):  # <style>.npz and <style>.extra.npz merge
        style = p.name[len("lfw-dlib-resnet-") :].split(".")[0]
        styles.setdefault(style, {}).update(unit_vectors(p))
        with np.load(p, allow_pickle=False) as d:
            missed[style] = missed.get(style, 0) + int((~d["detected"]).sum())
    a_names = [n for n in people if stable_fraction(n) < 0.5]
    b_names = [n for n in people if stable_fraction(n) >= 0.5]
    # A: galleries/strangers for tuning from 60% of the >= 4-photo people and 30% of the others; the rest
    # of A is the tuning cohort (so that it is about the size of the shipped one)
    in_tune = {n: stable_fraction("cohort:" + n) < (0.6 if len(people[n]) >= 4 else 0.3) for n in a_names}
    a_tune = build_half(people, [n for n in a_names if in_tune[n]])
    a_cohort = cohort_split(people, [n for n in a_names if not in_tune[n]], N_CAL_TUNE)
    b = build_half(people, b_names)
    b_cohort = cohort_split(people, a_names, N_CAL)
    try:
        from facerec.embedders.registry import get_spec

        baseline = get_spec("dlib-resnet").thresholds
    except ImportError:  # pragma: no cover
        baseline = None
    rows: list[tuple[str, str]] = []
    figures: dict = {
        "protocol": {
            "b_people_4plus": b.n4,
            "b_people_enrollable": b.n_enrol,
            "b_probes": len(b.probes),
            "b_first_photos": len(b.firsts),
            "a_tune_people_4plus": a_tune.n4,
            "a_tune_first_photos": len(a_tune.firsts),
            "a_cohort_stats": len(a_cohort[0]),
            "b_cohort_stats_available": len(b_cohort[0]),
            "calibration_cohort": N_CAL,
            "calibration_cohort_tuning": N_CAL_TUNE,
            "draws": DRAWS,
        },
        "tuning": {},
        "report": {},
    }

    # --- tuning on half A (clean photos only) ---------------------------------------------------------
    s_clean = Setting("clean", clean, clean, clean)
    cands = (
        [("raw", 0.0, 0.0), ("z", 0.025, 0.0), ("t", 0.025, 0.0)]
        + [("s", f, 0.0) for f in (0.005, 0.01, 0.025, 0.05, 0.1, 1.0)]
        + [("s", 0.025, m) for m in (0.25, 0.5)]
    )
    tune_sizes = (1, 3, 10, 30, 100)
    best_choice = None
    for side, frac, margin in cands:
        w = World(a_tune, s_clean, a_cohort, side, frac, N_STATS)
        r = run(w, {"pool": CHOSEN_POOL, "margin": margin}, tune_sizes)
        name = "A raw" if side == "raw" else f"A {side}-norm top {frac:.1%}{f' margin {margin}' if margin else ''}"
        ratio, acc = worst_ratio(r), float(np.mean([r[s][a]["known"] for s in r for a in ALPHAS]))
        figures["tuning"][name] = {"worst_far_ratio": ratio, "mean_known": acc, "by_size": r}
        rows.append((name, f"worst FAR/nominal {ratio:.2f} mean known {acc:.4f} | {fmt(r)}"))
        # the family is fixed by design: a query side is what can follow a change of photo style (raw
        # and person-only rows are measured for the record); among those, FAR <= 1.5x, best known
        if side in ("t", "s") and ratio <= 1.5 and (best_choice is None or acc > best_choice[0]):
            best_choice = (acc, side, frac, margin)
    figures["tuning"]["chosen"] = {
        "side": best_choice[1],
        "top_fraction": best_choice[2],
        "margin": best_choice[3],
        "a_cohort_stats_used": min(N_STATS, len(a_cohort[0])),
    }
    rows.append(
        (
            "A chosen (query-side family, FAR <= 1.5x, best known)",
            f"{best_choice[1]}-norm top {best_choice[2]:.1%} margin "
            f"{best_choice[3]}  (calibration.DEFAULT_TOP_FRACTION = {cal.DEFAULT_TOP_FRACTION})",
        )
    )
    frac = cal.DEFAULT_TOP_FRACTION
    snorm_table = size_table(World(a_tune, s_clean, a_cohort, "s", frac, N_STATS), np.random.default_rng(SEED))

    # --- report on half B ------------------------------------------------------------------------------
    settings = [Setting("clean", clean, clean, clean)]
    figures["styles"] = {}
    for style, vec in styles.items():
        common = [p for p in vec if p in clean]
        figures["styles"][style] = {
            "photos": len(vec),
            "faces_not_found": missed[style],
            "cosine_to_clean_mean": float(np.mean([vec[p] @ clean[p] for p in common])),
        }
        has_cohort = all(p in vec for p in b_cohort[1]) and sum(p in vec for p in b_cohort[0]) >= N_STATS
        settings += [Setting(f"{style} probes", clean, vec, clean), Setting(f"{style} all", vec, vec, clean)]
        if has_cohort:
            settings += [
                Setting(f"{style} probes + {style} cohort", clean, vec, vec),
                Setting(f"{style} all + {style} cohort", vec, vec, vec),
            ]
    methods = [
        ("today: raw, size table (5% / 0.5% watch)", "raw", {}, "baseline"),
        ("raw, per-gallery quantile", "raw", {"pool": "both"}, None),
        ("raw, quantile LOPO only", "raw", {"pool": "lopo"}, None),
        ("raw, quantile cohort only", "raw", {"pool": "cohort"}, None),
        ("Z-norm, per-gallery quantile", "z", {"pool": "both"}, None),
        ("T-norm, per-gallery quantile", "t", {"pool": "both"}, None),
        ("s-norm, size table from A", "s", {}, "table"),
        ("s-norm, quantile cohort only", "s", {"pool": "cohort"}, None),
        ("raw, max(cohort, LOPO) quantile", "raw", {"pool": "max"}, None),
        ("s-norm, per-gallery quantile (pooled)", "s", {"pool": "both"}, None),
        ("s-norm, max(cohort, LOPO) quantile", "s", {"pool": "max"}, None),
        ("raw, cohort quantile + LOPO shift", "raw", {"pool": "shift"}, None),
        ("s-norm, cohort quantile + LOPO shift [chosen]", "s", {"pool": "shift"}, None),
    ]
    for s in settings:
        figures["report"][s.name] = {}
        worlds = {}
        for name, side, method, kind in methods:
            if args.quick and s.name != "clean" and side not in ("s", "raw"):
                continue
            if side not in worlds:
                worlds[side] = World(b, s, b_cohort, side, frac, N_STATS)
            r = run(
                worlds[side],
                method,
                table=snorm_table if kind == "table" else None,
                baseline=baseline if kind == "baseline" else None,
            )
            figures["report"][s.name][name] = r
            rows.append((f"B {s.name}: {name}", fmt(r)))
        members = np.arange(b.n4)  # the open-set protocol on half B: all 296 people, one gallery
        proto = {
            "s-norm per-gallery [chosen]": protocol_row(worlds["s"], members, None),
            "s-norm pooled": protocol_row(worlds["s"], members, None, "both"),
            "raw per-gallery": protocol_row(worlds["raw"], members, None, "both"),
        }
        if baseline is not None:
            proto["today"] = protocol_row(
                worlds["raw"],
                members,
                {0.005: baseline.identify_for(b.n4, video=True), 0.05: baseline.identify_for(b.n4)},
            )
        figures["report"][s.name]["open_set_protocol"] = proto
        # a big gallery searches raw cosines in its index, then normalises only the top candidates:
        # how often is the normalised winner among the raw top 10 / 20 (all B people, 831)?
        w = worlds["s"]
        norm_best = np.r_[w.probes, w.firsts].argmax(axis=1)
        order = np.argsort(-w.raw_queries, axis=1)
        figures["report"][s.name]["rerank"] = {
            f"top{k}": float(np.mean((order[:, :k] == norm_best[:, None]).any(axis=1))) for k in (5, 10, 20)
        }
        rows.append(
            (
                f"B {s.name}: normalised winner in raw top 5/10/20 of {b.n_enrol}",
                json.dumps(figures["report"][s.name]["rerank"]),
            )
        )
        for k, v in proto.items():
            rows.append(
                (
                    f"B {s.name}: protocol {b.n4} people, {k}",
                    "  ".join(
                        f"@{a:g}: FAR {v['calibrated'][a]['far']:.3f} known {v['calibrated'][a]['known']:.4f} "
                        f"(oracle {v[f'oracle@{a}']['oracle_known']:.4f})"
                        for a in v["calibrated"]
                    ),
                )
            )

    # --- cohort size (and whether the shipped clean cohort transfers) ----------------------------------
    figures["cohort_size"] = {}
    for s in settings:
        for n in (500, 1000, 2000, 2500):
            if n > sum(p in s.cohort for p in b_cohort[0]) or (args.quick and "+" in s.name):
                continue
            r = run(World(b, s, b_cohort, "s", frac, n), {"pool": CHOSEN_POOL})
            figures["cohort_size"][f"{s.name} N={n}"] = r
            rows.append(
                (f"normalisation cohort {n} (+{N_CAL}) {s.name}", f"worst FAR/nominal {worst_ratio(r):.2f} | {fmt(r)}")
            )

    # --- the module itself computes what was measured (one gallery, checked) -----------------------------
    w = World(b, settings[0], b_cohort, "s", frac, N_STATS)
    members = draws(b, 30, np.random.default_rng(1), 1)[0]
    rows_ = np.isin(w.face_owner, members)
    owners = np.searchsorted(members, w.face_owner[rows_])
    pst = cal.Stats(w.pst.mean[members], w.pst.std[members])
    direct = cal.stranger_scores(w.centroids[members], pst, w.faces[rows_], owners, w.k_cal, w.k_stats, w.top_k)
    fast = np.r_[w.cal[:, members].max(1), w.lopo[rows_][:, members].max(1)]
    assert np.allclose(np.sort(direct), np.sort(fast)), "calibration.stranger_scores disagrees with the bench"

    figures["cost"] = cost(cal.top_k_for(N_STATS))
    rows.append(("cost at 10^5 people", json.dumps(figures["cost"])))
    rows += [(f"style {k}", json.dumps(v)) for k, v in figures["styles"].items()]
    figures["seconds"] = round(time.time() - t0, 1)
    m = machine()
    print(
        f"Issue 13 open-set calibration, dlib-resnet, cells = size:FAR(known) at 1%/5% [today: 0.5%/5%]  "
        f"({m['cpu']}, {m['threads']} thread, {m['cores']} cores)"
    )
    width = max(len(n) for n, _ in rows)
    for n, v in rows:
        print(f"  {n:<{width}}  {v}")
    print(json.dumps({"bench": "issue13-openset", **figures, "machine": m}))


if __name__ == "__main__":
    main()
