"""Build the background cohort that facerec ships for a model: faces of LFW people never used to report.

    python bench/make_cohort.py [--model dlib-resnet]

Half A of the LFW people (facerec.lfw.stable_fraction(name) < 0.5) — the half every calibration choice was
tuned on — gives the cohort; half B is kept for reporting (bench/calibration.py). Within A, the first 1500
people in a fixed hash order give their first photo as calibration strangers; the others give up to 10
photos each (every person's first photo before anyone's second) to a 2000-face normalisation cohort. The
two are disjoint by person: a stranger whose own photo is among the normalisation faces would look less
strange than a real one. Stored as float16 unit vectors with their provenance, about 0.9 MB.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from _common import PROJECT_ROOT, find_shared, set_threads

N_NORMALISATION = 2000
N_CALIBRATION = 1500


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="dlib-resnet")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)

    from facerec import FacePipeline
    from facerec.lfw import embed_photos, lfw_photos, stable_fraction

    lfw = find_shared() / "faces" / "lfw"
    people = {name: photos for name, photos in lfw_photos(lfw).items() if stable_fraction(name) < 0.5}
    order = sorted(people, key=lambda name: stable_fraction("cohort-order:" + name))
    calibration_people, normalisation_people = order[:N_CALIBRATION], order[N_CALIBRATION:]
    calibration = [people[name][0] for name in calibration_people]
    normalisation = [people[n][r] for r in range(10) for n in normalisation_people if r < len(people[n])]
    normalisation = normalisation[:N_NORMALISATION]
    pipeline = FacePipeline.load(args.model, device="cpu")
    vectors = embed_photos(calibration + normalisation, pipeline, progress=True)
    unit = vectors.vectors(flip=pipeline.embedder.spec.flip).astype(np.float16)
    target = PROJECT_ROOT / "facerec" / "embedders" / "cohorts" / f"{args.model}.npz"
    provenance = {
        "model": args.model,
        "weights_sha256": pipeline.embedder.weights_sha256,
        "source": "Labeled Faces in the Wild (deep-funneled), http://vis-www.cs.umass.edu/lfw/; released by its "
        "authors for research use. Only vectors are stored, no image.",
        "people": "LFW half A (facerec.lfw.stable_fraction(name) < 0.5), never used to report a figure",
        "calibration": f"{len(calibration)} first photos of {len(calibration_people)} people",
        "normalisation": f"{len(normalisation)} photos of other half-A people, at most 10 each",
        "made_by": "bench/make_cohort.py",
    }
    with open(target, "wb") as f:
        np.savez_compressed(
            f,
            calibration=unit[: len(calibration)],
            normalisation=unit[len(calibration) :],
            provenance=np.array(json.dumps(provenance)),
        )
    print(
        f"{target}: {len(calibration)} calibration + {len(normalisation)} normalisation vectors, "
        f"{target.stat().st_size / 2**20:.2f} MB"
    )


if __name__ == "__main__":
    main()
