"""Killing enroll part way never leaves a gallery that fails to load or disagrees with its index."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facerec.gallery import Gallery


@pytest.fixture
def lfw_people(tmp_path, shared) -> Path:
    """A photo folder of 12 LFW people (symlinks into ../shared, nothing copied)."""
    root = tmp_path / "photos"
    root.mkdir()
    lfw = shared / "faces" / "lfw"
    people = [p for p in sorted(lfw.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= 4][:12]
    for person in people:
        (root / person.name).symlink_to(person, target_is_directory=True)
    return root


def start_enroll(photos: Path, gallery: Path, weights: Path) -> subprocess.Popen:
    env = {**os.environ, "FACEREC_BATCH_SIZE": "2", "FACEREC_DOWNLOAD_URL": "http://127.0.0.1:9/"}
    return subprocess.Popen(
        [sys.executable, "-m", "facerec.cli", "enroll", str(photos), "--gallery", str(gallery), "--weights", str(weights), "--model", "vggface2", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def committed_faces(gallery: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{gallery / 'gallery.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM faces").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def wait_for(proc: subprocess.Popen, gallery: Path, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = committed_faces(gallery)
        if n >= at_least or proc.poll() is not None:
            return n
        time.sleep(0.05)
    proc.kill()
    pytest.fail("enroll made no progress")


def assert_consistent(gallery: Path) -> int:
    with Gallery.open(gallery) as g:
        ids = [r[0] for r in g._db.execute("SELECT id FROM faces ORDER BY id")]
        hashes = [r[0] for r in g._db.execute("SELECT sha256 FROM faces")]
        assert g._index.ntotal == len(ids) == g.count
        assert len(set(hashes)) == len(hashes)
        return len(ids)


def test_sigkill_during_enroll_then_rerun_finishes(lfw_people, tmp_path, weights):
    gallery = tmp_path / "g"
    seen = []
    for target in (1, 7, 15):
        proc = start_enroll(lfw_people, gallery, weights)
        wait_for(proc, gallery, committed_faces(gallery) + target)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(assert_consistent(gallery))
    assert seen == sorted(seen) and seen[-1] > 0
    proc = start_enroll(lfw_people, gallery, weights)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    import json

    report = json.loads(out)
    assert report["faces_total"] == assert_consistent(gallery)
    assert report["faces_total"] == seen[-1] + report["faces_added"]
    photos = sum(1 for _ in lfw_people.glob("*/*.jpg"))
    skipped_now = [s for s in report["skipped"] if not s["reason"].startswith("already enrolled")]
    assert report["faces_total"] + len(skipped_now) == photos


def test_ctrl_c_keeps_finished_batches(lfw_people, tmp_path, weights):
    gallery = tmp_path / "g"
    proc = start_enroll(lfw_people, gallery, weights)
    wait_for(proc, gallery, 4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    kept = assert_consistent(gallery)
    assert kept >= 4
    assert f"index-" in " ".join(p.name for p in gallery.iterdir())
