"""A picture of the contact sheet, to look at rather than trust: a small real run rendered by headless Chromium.

    python bench/cluster_sheet.py [--png sheet.png] [--people 6] [--photos 8] [--strangers 12]

It links (never copies) photos of a few LFW people and some one-photo strangers into a temporary folder,
runs `facerec cluster`'s path (MTCNN + dlib-resnet on CPU, facerec.discover.cluster_photos) against a
gallery that knows one more person, writes the contact sheet and screenshots it. `screenshot()` alone
renders any HTML file.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from _common import find_shared


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium found; install it (apt-get install -y chromium)")


def screenshot(page: Path, png: Path, *, width: int = 1200, height: int = 1600, timeout: float = 120.0) -> Path:
    """Render `page` headless at width x height and save the PNG (the visible top of a long page)."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            Path(page).resolve().as_uri(),
        ]
        subprocess.run(command, check=True, timeout=timeout, capture_output=True)
    if not png.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot to {png}")
    return png


def small_run(lfw: Path, work: Path, *, people: int, photos: int, strangers: int) -> Path:
    """Cluster a small real folder under `work` the way `facerec cluster` does, against a gallery that knows
    one more person (so the 'known' row shows too); returns the contact sheet's path."""
    from facerec import FaceRecognizer
    from facerec.discover import cluster_photos

    folders = sorted(p for p in lfw.iterdir() if p.is_dir())
    many = [f for f in folders if len(list(f.glob("*.jpg"))) >= photos][::37][:people]
    singles = [f for f in folders if len(list(f.glob("*.jpg"))) == 1][::101][:strangers]
    album = work / "album"
    album.mkdir(parents=True)
    for folder in many:
        for photo in sorted(folder.glob("*.jpg"))[:photos]:
            (album / photo.name).symlink_to(photo)
    for folder in singles:
        photo = next(folder.glob("*.jpg"))
        (album / photo.name).symlink_to(photo)
    known = next(f for f in folders if len(list(f.glob("*.jpg"))) >= photos + 3 and f not in many)
    known_photos = sorted(known.glob("*.jpg"))
    (work / "enroll" / known.name).mkdir(parents=True)
    for photo in known_photos[:3]:
        (work / "enroll" / known.name / photo.name).symlink_to(photo)
    for photo in known_photos[3 : 3 + photos // 2]:
        (album / photo.name).symlink_to(photo)
    rec = FaceRecognizer(work / "gallery", model="dlib-resnet", device="cpu", progress=True)
    rec.enroll(work / "enroll")
    run = cluster_photos(rec.session, album, out=work / "out")
    result = run.result
    print(
        f"{result.photos} photos: {len(result.clusters)} groups {[c.size for c in result.clusters]}, "
        f"{len(result.known)} known, {len(result.unclustered)} unclustered, {len(result.problems)} problems"
    )
    return run.sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path)
    parser.add_argument("--png", type=Path, default=Path(tempfile.gettempdir()) / "facerec-sheet.png")
    parser.add_argument("--people", type=int, default=6)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--strangers", type=int, default=12)
    parser.add_argument("--keep", type=Path, help="keep the run (album, state, sheet) in this folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="facerec-sheet-")) if args.keep is None else args.keep
    try:
        page = small_run(
            args.lfw or find_shared() / "faces" / "lfw",
            work,
            people=args.people,
            photos=args.photos,
            strangers=args.strangers,
        )
        print(f"sheet: {page}\nscreenshot: {screenshot(page, args.png)}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
