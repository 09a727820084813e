"""Enroll a folder of people, then name the faces in other photos: the Python API in a few lines.

    python samples/enroll_and_identify.py ../shared/faces/known ../shared/faces/unknown/kit_with_rose.jpg

Options: --gallery DIR (default ./sample-gallery), --model NAME (default auto: vggface2 when its weights
can be had, else the offline dlib-resnet), --weights FILE (a weights file instead of the models folder or
a download), --threshold T.
"""

from __future__ import annotations

import argparse

from facerec import FacerecError, FaceRecognizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo_dir")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--gallery", default="sample-gallery")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--weights")
    parser.add_argument("--threshold", type=float)
    args = parser.parse_args()

    recognizer = FaceRecognizer(args.gallery, model=args.model, weights=args.weights, progress=True)
    try:
        report = recognizer.enroll(args.photo_dir)
        print(f"{report.faces_added} faces added; the gallery holds {report.people_total} people")
        for image in args.images:
            result = recognizer.identify(image, threshold=args.threshold)
            for face in result.faces:
                print(f"{image}: {face.name} (similarity {face.similarity:.3f}) at {face.box}")
            if not result.faces:
                print(f"{image}: no faces")
    except FacerecError as exc:
        print(f"error: {exc}")
        return 1
    finally:
        recognizer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
