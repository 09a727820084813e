"""Calibrating the identification threshold: LFW open-set protocol, every decision rule, a table and a JSON line.

    python bench/openset.py [--model dlib-resnet] [--max-far 0.05] [--threads 2]

The protocol (facerec.lfw.open_set_protocol): people with >= 4 photos enroll their first 3 and probe up to
10 more; the first photo of everyone with fewer photos is a stranger. For each rule, the threshold is the
one with the best known-person accuracy at no more than --max-far stranger false accepts. To show it is
not tuned to the data it is measured on, people are also split in two halves by a fixed hash: the
threshold chosen on one half is measured on the other (the 'held-out' columns).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import find_shared, print_json, print_table, set_threads


def person_scores(probes: np.ndarray, gallery: np.ndarray, labels: np.ndarray, people: int, rule: str) -> np.ndarray:
    """(probes, people) similarity under a rule: nearest enrolled face, or the person's centroid."""
    if rule == "centroid":
        centroids = np.zeros((people, gallery.shape[1]))
        np.add.at(centroids, labels, gallery)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        return probes @ centroids.T
    sims = probes @ gallery.T
    out = np.full((len(probes), people), -np.inf)
    for person in range(people):
        out[:, person] = sims[:, labels == person].max(axis=1)
    return out


def euclid_scores(probes: np.ndarray, gallery: np.ndarray, labels: np.ndarray, people: int, rule: str) -> np.ndarray:
    """Negative Euclidean distance on raw descriptors (higher = closer), nearest face or centroid."""
    if rule == "centroid":
        centroids = np.zeros((people, gallery.shape[1]))
        np.add.at(centroids, labels, gallery)
        centroids /= np.bincount(labels, minlength=people)[:, None]
        gallery, labels = centroids, np.arange(people)
    d = np.sqrt(np.maximum((probes**2).sum(1)[:, None] + (gallery**2).sum(1)[None] - 2 * probes @ gallery.T, 0))
    out = np.full((len(probes), people), -np.inf)
    for person in range(people):
        out[:, person] = -d[:, labels == person].min(axis=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="dlib-resnet")
    parser.add_argument("--weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-far", type=float, default=0.05)
    parser.add_argument("--lfw", type=Path)
    args = parser.parse_args()
    machine = set_threads(args.threads)

    from facerec import FacePipeline
    from facerec.evaluate import choose_open_set_threshold, open_set_sweep
    from facerec.lfw import embed_photos, open_set_protocol, stable_fraction

    lfw = args.lfw or find_shared() / "faces" / "lfw"
    protocol = open_set_protocol(lfw)
    names = sorted(protocol.enrolled)
    index = {n: i for i, n in enumerate(names)}
    gallery_paths = [p for n in names for p in protocol.enrolled[n]]
    labels = np.array([index[n] for n in names for _ in protocol.enrolled[n]])
    pipeline = FacePipeline.load(args.model, weights=args.weights, device="cpu")
    embedder = pipeline.embedder
    vectors = embed_photos(gallery_paths + protocol.probes, pipeline, progress=True)
    g_rows, p_rows = vectors.rows(gallery_paths), vectors.rows(protocol.probes)
    truth = np.array([index[t] if t is not None else -1 for t in protocol.truth])
    is_known = truth >= 0
    half = np.array([stable_fraction(t or p.parent.name) < 0.5 for t, p in zip(protocol.truth, protocol.probes)])

    rows, figures = (
        [],
        {
            "model": embedder.spec.name,
            "people_enrolled": len(names),
            "faces_enrolled": len(gallery_paths),
            "known_probes": int(is_known.sum()),
            "stranger_probes": int((~is_known).sum()),
            "max_far": args.max_far,
            "rules": {},
        },
    )
    for flip in (False, True):
        unit = vectors.vectors(flip)
        raw = (vectors.plain + vectors.mirror) / 2 if flip else vectors.plain
        for metric in ("cosine", "euclidean raw"):
            for rule in ("nearest", "centroid"):
                if metric == "cosine":
                    scores = person_scores(unit[p_rows], unit[g_rows], labels, len(names), rule)
                else:
                    scores = euclid_scores(raw[p_rows], raw[g_rows], labels, len(names), rule)
                order = np.argsort(-scores, axis=1)
                best, second = order[:, 0], order[:, 1]
                best_score = scores[np.arange(len(scores)), best]
                margin = best_score - scores[np.arange(len(scores)), second]
                right = best == truth
                for min_margin in (0.0, 0.02, 0.05):
                    if metric != "cosine" and min_margin:
                        continue
                    gated = np.where(margin >= min_margin, best_score, -np.inf)
                    chosen = choose_open_set_threshold(gated, right, is_known, args.max_far)
                    held = []
                    for part in (half, ~half):
                        pick = choose_open_set_threshold(
                            gated[part], right[part], is_known[part], args.max_far
                        ).threshold
                        t, acc, far = open_set_sweep(gated[~part], right[~part], is_known[~part])
                        i = min(np.searchsorted(t, pick), len(t) - 1)
                        held.append((acc[i], far[i]))
                    name = f"{metric}, {rule}{', flip' if flip else ''}{f', margin {min_margin}' if min_margin else ''}"
                    sign = 1 if metric == "cosine" else -1
                    rows.append(
                        (
                            name,
                            f"known {chosen.known_accuracy:.4f}  FAR {chosen.false_accept_rate:.4f}  "
                            f"threshold {sign * chosen.threshold:.3f}  held-out known "
                            f"{np.mean([h[0] for h in held]):.4f} FAR {np.mean([h[1] for h in held]):.4f}",
                        )
                    )
                    figures["rules"][name] = {
                        "known_accuracy": chosen.known_accuracy,
                        "false_accept_rate": chosen.false_accept_rate,
                        "threshold": sign * chosen.threshold,
                        "held_out_known_accuracy": float(np.mean([h[0] for h in held])),
                        "held_out_false_accept_rate": float(np.mean([h[1] for h in held])),
                    }
    rows.append(("faces not found", f"{vectors.missed} photos (aligned with mean LFW landmarks)"))

    # The shipped rule's threshold by gallery size: a stranger's best score grows with the number of
    # people it is compared with, so a small gallery can name people at a lower threshold for the same
    # false-accept rate. For each size, random sub-galleries of that many enrolled people; every probe
    # of someone not in the sub-gallery is a stranger; the threshold is the (1 - max_far) quantile of
    # the strangers' best scores, pooled over the draws.
    unit = vectors.vectors(embedder.spec.flip)
    scores = person_scores(unit[p_rows], unit[g_rows], labels, len(names), "centroid")
    rng = np.random.default_rng(0)
    by_size = []
    for size in (1, 2, 5, 10, 20, 50, 100, 200, 400, len(names)):
        draws = 40 if size < len(names) else 1
        stranger_best, known_draws = [], []
        for _ in range(draws):
            member = np.zeros(len(names), bool)
            member[rng.choice(len(names), size, replace=False)] = True
            sub = np.where(member[None, :], scores, -np.inf)
            best, arg = sub.max(axis=1), sub.argmax(axis=1)
            enrolled = is_known & member[np.clip(truth, 0, None)]
            stranger_best.append(best[~enrolled])
            known_draws.append((best[enrolled], (arg == truth)[enrolled]))
        threshold = float(np.quantile(np.concatenate(stranger_best), 1 - args.max_far))
        far = float(np.mean(np.concatenate(stranger_best) >= threshold))
        known_acc = float(np.mean(np.concatenate([right & (best >= threshold) for best, right in known_draws])))
        by_size.append([size, round(threshold, 4)])
        rows.append(
            (
                f"threshold for {size} people",
                f"{threshold:.4f}  (strangers named {far:.3f}, known people named right {known_acc:.3f})",
            )
        )
    figures["identify_by_gallery_size"] = by_size
    print_table(
        f"LFW open-set identification, {embedder.spec.name}: {len(names)} people enrolled, "
        f"{int(is_known.sum())} known / {int((~is_known).sum())} stranger probes, FAR <= {args.max_far}",
        rows,
        machine,
    )
    print_json("openset", figures, machine)


if __name__ == "__main__":
    main()
