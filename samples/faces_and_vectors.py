"""Faces and their vectors without a gallery: FacePipeline, the path every facerec command shares.

    python samples/faces_and_vectors.py ../shared/faces/unknown/kit_with_rose.jpg ../shared/faces/known/rose_leslie

Prints every face of each image (box, detection score) and, for each pair of faces across the images,
their cosine similarity: 1.0 is the same photo, the model's verify threshold separates people.
Options: --model NAME (default dlib-resnet, which works offline), --weights FILE.
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

from facerec import FacePipeline, FacerecError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--model", default="dlib-resnet")
    parser.add_argument("--weights")
    args = parser.parse_args()
    paths = [p for raw in args.images for p in (sorted(Path(raw).iterdir()) if Path(raw).is_dir() else [Path(raw)])]
    try:
        pipeline = FacePipeline.load(args.model, weights=args.weights)
        found = []
        for path in paths:
            faces = pipeline.faces(pipeline.read(path))
            print(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
            for n, face in enumerate(faces):
                print(f"  #{n} box {[round(v) for v in face.box]} score {face.score:.3f}")
                found.append((f"{path.name}#{n}", face.vector))
    except FacerecError as exc:
        print(f"error: {exc}")
        return 1
    for (a, va), (b, vb) in combinations(found, 2):
        print(f"{a} ~ {b}: {float(va @ vb):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
