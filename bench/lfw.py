"""LFW 10-fold verification accuracy through facerec's pipeline, for each decision rule: a table and a JSON line.

    python bench/lfw.py [--model dlib-resnet] [--threads 2] [--lfw DIR]

Rules measured on the same cached descriptors: cosine similarity of unit vectors or Euclidean distance of
raw descriptors, each with and without test-time flip (mean of the chip's and its mirror's descriptors).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _common import find_shared, print_json, print_table, set_threads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="dlib-resnet")
    parser.add_argument("--weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lfw", type=Path)
    args = parser.parse_args()
    machine = set_threads(args.threads)

    from facerec import FacePipeline
    from facerec.evaluate import read_pairs, ten_fold
    from facerec.lfw import embed_photos

    lfw = args.lfw or find_shared() / "faces" / "lfw"
    pairs = read_pairs(lfw / "pairs.txt", lfw)
    pipeline = FacePipeline.load(args.model, weights=args.weights, device="cpu")
    embedder = pipeline.embedder
    photos = list(dict.fromkeys(p for pair in pairs for p in (pair.a, pair.b)))
    start = time.perf_counter()
    vectors = embed_photos(photos, pipeline, progress=True)
    embed_s = time.perf_counter() - start
    a, b = vectors.rows([p.a for p in pairs]), vectors.rows([p.b for p in pairs])
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])

    variants = {}
    for flip in (False, True):
        unit = vectors.vectors(flip)
        raw = (vectors.plain + vectors.mirror) / 2 if flip else vectors.plain
        variants[f"cosine{' + flip' if flip else ''}"] = ((unit[a] * unit[b]).sum(axis=1), 1)
        variants[f"euclidean raw{' + flip' if flip else ''}"] = (-np.linalg.norm(raw[a] - raw[b], axis=1), -1)

    rows, figures = (
        [],
        {
            "model": embedder.spec.name,
            "pairs": len(pairs),
            "photos": len(photos),
            "faces_not_found": vectors.missed,
            "embed_s": round(embed_s, 1),
            "rules": {},
        },
    )
    for name, (scores, sign) in variants.items():
        result = ten_fold(scores, same, folds)
        threshold = sign * result.threshold
        rows.append(
            (
                name,
                f"{result.accuracy:.4f} ± {result.accuracy_std:.4f}   threshold {threshold:.3f}   "
                f"TAR@FAR=1e-3 {result.tar_at_far['1e-3']:.4f}",
            )
        )
        figures["rules"][name] = {
            "accuracy": result.accuracy,
            "std": result.accuracy_std,
            "threshold": threshold,
            "tar_at_far_1e-3": result.tar_at_far["1e-3"],
        }
    rows.append(("faces not found", f"{vectors.missed} of {len(photos)} photos (aligned with mean LFW landmarks)"))
    print_table(f"LFW 10-fold, {embedder.spec.name}, {len(pairs)} pairs", rows, machine)
    print_json("lfw", figures, machine)


if __name__ == "__main__":
    main()
