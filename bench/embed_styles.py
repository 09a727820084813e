"""Embed LFW photos re-rendered in another photo style, through facerec's own pipeline.

    python bench/embed_styles.py --style web-small; python bench/embed_styles.py --style web-small --extra
    python bench/embed_styles.py --style tiny-noisy --b-only

Styles (applied in memory; no image is written to disk):
  web-small   Gaussian blur 0.8 px, downscale to half size (face ~55 px instead of ~110), JPEG quality 25
  tiny-noisy  downscale to a third (face ~37 px), Gaussian pixel noise sigma 6, JPEG quality 20

Photos: every B-half photo the open-set protocol of bench/calibration.py can use (first 13 of each B person)
plus the first photo of each A-half person (the background cohort, to test whether a clean cohort
transfers). Detection/alignment/embedding are facerec.lfw.central_chips + Embedder.views, exactly as
facerec.lfw.embed_photos does, through a FacePipeline whose `read` degrades each photo after decoding.
Output: facerec's cache folder (facerec.lfw.cache_dir()), lfw-dlib-resnet-<style>.npz with paths (absolute
LFW path), plain, mirror, detected: the layout of facerec's own LFW cache.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from _common import find_shared


def degrade(rgb: np.ndarray, style: str, seed: int) -> np.ndarray:
    img = Image.fromarray(rgb)
    w, h = img.size
    if style == "web-small":
        img = img.filter(ImageFilter.GaussianBlur(0.8)).resize((w // 2, h // 2), Image.BILINEAR)
        quality = 25
    elif style == "tiny-noisy":
        img = img.resize((w // 3, h // 3), Image.BILINEAR)
        noisy = np.asarray(img, np.float32) + np.random.default_rng(seed).normal(0, 6, (h // 3, w // 3, 3))
        img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        quality = 20
    else:
        raise ValueError(style)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return np.ascontiguousarray(np.asarray(Image.open(buf).convert("RGB")))


def photo_list(lfw: Path) -> list[str]:
    from facerec.lfw import lfw_photos, stable_fraction

    photos = lfw_photos(lfw)
    b = [str(p.resolve()) for n, ps in photos.items() if stable_fraction(n) >= 0.5 for p in ps[:13]]
    a = [str(ps[0].resolve()) for n, ps in photos.items() if stable_fraction(n) < 0.5]
    return b + a


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--style", default="web-small", choices=["web-small", "tiny-noisy"])
    parser.add_argument("--lfw", type=Path)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--b-only", action="store_true", help="only the B-half photos (no cohort)")
    parser.add_argument("--extra", action="store_true", help="the rest of the 3000-vector normalisation cohort")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from facerec import FacePipeline
    from facerec.lfw import cache_dir, central_chips, stable_fraction

    lfw = args.lfw or find_shared() / "faces" / "lfw"
    base = FacePipeline.load("dlib-resnet", device="cpu")

    class Restyled(FacePipeline):
        def read(self, path: str | Path) -> np.ndarray:
            return degrade(super().read(path), args.style, seed=int(stable_fraction(str(path)) * 2**31))

    pipeline = Restyled(base.embedder, base.detector, base.settings)
    paths = photo_list(lfw)
    if args.b_only:
        paths = [p for p in paths if stable_fraction(Path(p).parent.name) >= 0.5]
    if args.extra:  # normalisation-cohort photos beyond each A person's first (calibration.cohort_split)
        import calibration as bench

        people = bench.lfw_people(lfw)
        stats, _ = bench.cohort_split(people, [n for n in people if stable_fraction(n) < 0.5], bench.N_CAL)
        have = set(paths)
        paths = [p for p in stats[:3000] if p not in have]
    paths = paths[: args.limit] if args.limit else paths
    out = args.out or cache_dir() / f"lfw-dlib-resnet-{args.style}{'.extra' if args.extra else ''}.npz"
    plain, mirror, detected = [], [], []
    start = time.time()
    for i in range(0, len(paths), 512):
        chips, found = central_chips(paths[i : i + 512], pipeline, workers=1)
        a, b = pipeline.embedder.views(chips)
        plain.append(a), mirror.append(b), detected.append(found)
        missed = int((~np.concatenate(detected)).sum())
        print(f"{i + len(chips)}/{len(paths)} {time.time() - start:.0f}s missed {missed}", flush=True)
    np.savez(
        out,
        paths=np.array(paths),
        plain=np.concatenate(plain).astype(np.float32),
        mirror=np.concatenate(mirror).astype(np.float32),
        detected=np.concatenate(detected),
    )
    print("saved", out, len(paths), "photos", f"{time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
