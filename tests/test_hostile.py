"""Hostile input: a corpus of bad files, generated here, fed to `identify` and `enroll` as real processes.

Each file must give a one-line message naming it (or a plain "no faces"), never a traceback, a hang or a
huge allocation: the processes run under a time limit and their peak memory is measured.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Files that must come out as an error (the rest of the corpus may decode: scrambled pixels are still pixels).
MUST_FAIL = (
    "truncated-2.",
    "zero-bytes",
    "text-named",
    "bomb-",
    "loop-",
    "self.jpg",
    "broken-link",
    "folder.jpg",
    "fifo.jpg",
    "html.png",
    "video.jpg",
    "random-bytes",
    "one-pixel",
    "thin-",
    "absurd-chunk",
    "jpeg-signature",
)
FORMATS = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "tif": "TIFF", "webp": "WEBP", "ppm": "PPM"}


def _png_chunk(kind: bytes, body: bytes, length: int | None = None) -> bytes:
    return (
        struct.pack(">I", len(body) if length is None else length)
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body))
    )


def _png(width: int, height: int, extra: bytes = b"", idat: bytes | None = None) -> bytes:
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    pixels = idat if idat is not None else zlib.compress(b"\x00" + b"\x80" * 3 * width)
    return b"\x89PNG\r\n\x1a\n" + header + extra + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


def build_corpus(folder: Path, shared: Path) -> list[Path]:
    """At least 50 bad or odd files; returns the ones that are regular files or links (what a user would pass)."""
    folder.mkdir(parents=True)
    face = Image.open(shared / "faces" / "known" / "obama" / "obama.jpg").convert("RGB")
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    for ext, fmt in FORMATS.items():
        buffer = io.BytesIO()
        face.save(buffer, fmt)
        good = buffer.getvalue()
        for share in (0.02, 0.5, 0.9):
            files[f"truncated-{int(share * 100)}.{ext}"] = good[: max(1, int(len(good) * share))]
        corrupt = np.frombuffer(good, np.uint8).copy()
        corrupt[rng.integers(16, len(corrupt), 64)] = rng.integers(0, 256, 64, dtype=np.uint8)
        files[f"corrupt.{ext}"] = corrupt.tobytes()
        files[f"zero-bytes.{ext}"] = b""
        files[f"text-named.{ext}"] = b"this is not an image\n" * 10
    files["png-named.jpg"] = _png(64, 64)  # wrong extension, good content: decodes
    files["bomb-50000x50000.png"] = _png(50000, 50000)
    files["bomb-50000x50000.gif"] = b"GIF89a" + struct.pack("<HH", 50000, 50000) + b"\x00\x00\x00" + b";"
    files["bomb-50000x50000.bmp"] = (
        b"BM"
        + struct.pack("<IHHI", 54, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, 50000, 50000, 1, 24, 0, 0, 0, 0, 0, 0)
    )
    files["bomb-50000x50000.jpg"] = (
        b"\xff\xd8\xff\xc0\x00\x11\x08"
        + struct.pack(">HH", 50000, 50000)
        + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xd9"
    )
    files["absurd-chunk.png"] = _png(64, 64, extra=_png_chunk(b"tEXt", b"k\x00v", length=0x7FFFFFF0))
    files["huge-text-chunk.png"] = _png(
        64, 64, extra=_png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * 50_000_000))
    )
    files["bad-crc.png"] = _png(64, 64)[:-5] + b"XXXX" + b"\x00"
    files["zlib-bomb.png"] = _png(64, 64, idat=zlib.compress(b"\x00" * 200_000_000))
    files["one-pixel.png"] = _png(1, 1)
    files["thin-1x100000.png"] = _png(1, 100000)
    files["random-bytes.jpg"] = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    files["jpeg-signature-then-noise.jpg"] = b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    files["html.png"] = b"<!doctype html><html><body>hello</body></html>"
    files["video.jpg"] = (shared / "video" / "obama_podium.mp4").read_bytes()[:2_000_000]
    for name, data in files.items():
        (folder / name).write_bytes(data)
    os.symlink("loop-b.jpg", folder / "loop-a.jpg")
    os.symlink("loop-a.jpg", folder / "loop-b.jpg")
    os.symlink("self.jpg", folder / "self.jpg")
    os.symlink("nowhere.jpg", folder / "broken-link.jpg")
    (folder / "folder.jpg").mkdir()
    os.mkfifo(folder / "fifo.jpg")
    unreadable = folder / "unreadable.jpg"
    unreadable.write_bytes(b"garbage that is no image")
    unreadable.chmod(0)
    bad_name = os.fsencode(str(folder)) + b"/not-utf8-\xff\xfe.jpg"
    with open(bad_name, "wb") as handle:
        handle.write(b"\xff\xd8 not really a jpeg")
    return sorted(folder.iterdir())


def run_limited(args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """A facerec process with a time limit; returns it and the peak memory (GiB) of the children so far."""
    env = {**os.environ, "FACEREC_DOWNLOAD_URL": "http://127.0.0.1:9/"}
    proc = subprocess.run([sys.executable, "-m", "facerec.cli", *args], capture_output=True, timeout=timeout, env=env)
    return proc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared) -> list[Path]:
    paths = build_corpus(tmp_path_factory.mktemp("hostile") / "corpus", shared)
    assert len(paths) >= 50
    return paths


def test_identify_names_every_bad_file_in_one_line(corpus, known_gallery, weights):
    proc, peak_gib = run_limited(
        ["identify", *map(os.fsdecode, corpus), "--gallery", str(known_gallery), "--weights", str(weights), "--json"],
        timeout=300,
    )
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    results = {Path(r["image"]).name: r for r in map(json.loads, proc.stdout.decode("utf-8", "replace").splitlines())}
    assert len(results) == len(corpus)
    errors = [line for line in stderr.splitlines() if line.startswith("facerec: error: ")]
    assert len(errors) == sum(r["error"] is not None for r in results.values()) and len(errors) >= 45
    for line in errors:
        assert len(line) < 400 and str(corpus[0].parent) in line, line
    for name, result in results.items():
        if name.startswith(MUST_FAIL):
            assert result["error"] and result["error"].startswith(result["image"]), (name, result)
        else:  # odd but decodable (pixels scrambled, CRC ignored, wrong extension): an ordinary answer
            assert result["error"] is not None or isinstance(result["faces"], list), (name, result)
    assert "over the limit" in results["bomb-50000x50000.png"]["error"]
    assert "Too many levels of symbolic links" in results["loop-a.jpg"]["error"]
    assert "not a regular file" in results["fifo.jpg"]["error"]
    assert peak_gib < 4, f"peak memory {peak_gib:.1f} GiB"


def test_enroll_skips_bad_files_and_keeps_a_good_gallery(tmp_path, shared, weights):
    photos = tmp_path / "photos"
    build_corpus(photos / "mallory", shared)
    (photos / "obama").mkdir()
    (photos / "obama" / "obama.jpg").symlink_to(shared / "faces" / "known" / "obama" / "obama.jpg")
    gallery = tmp_path / "gallery"
    proc, peak_gib = run_limited(
        ["enroll", str(photos), "--gallery", str(gallery), "--weights", str(weights), "--model", "vggface2", "--json"],
        timeout=300,
    )
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    report = json.loads(proc.stdout)
    assert report["added"]["obama"] == 1  # mallory's scrambled-but-decodable copies of a face may enroll too
    assert len(report["failed"]) + len(report["skipped"]) >= 50
    assert all(item["reason"].startswith(item["path"]) for item in report["failed"])
    from facerec.gallery import Gallery

    with Gallery.open(gallery) as g:
        assert g.count == report["faces_total"] == report["faces_added"]
    assert peak_gib < 4
