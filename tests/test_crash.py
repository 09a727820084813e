"""Killing enroll or adapt part way never leaves a gallery that fails to load or disagrees with its index;
concurrent writers and readers are kept apart by the gallery lock."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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
        [
            sys.executable,
            "-m",
            "facerec.cli",
            "enroll",
            str(photos),
            "--gallery",
            str(gallery),
            "--weights",
            str(weights),
            "--model",
            "vggface2",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
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
        assert g._faces.index.ntotal == len(ids) == g.count
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
    assert "index-" in " ".join(p.name for p in gallery.iterdir())


@pytest.fixture
def many_photos(tmp_path, shared) -> Path:
    """200 LFW photos: the first 5 of the first 40 people with at least 5 (links into ../shared)."""
    root = tmp_path / "many"
    lfw = shared / "faces" / "lfw"
    people = [p for p in sorted(lfw.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= 5][:40]
    for person in people:
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[:5]:
            (root / person.name / photo.name).symlink_to(photo)
    return root


def test_twenty_kills_at_random_moments_over_a_growing_gallery(many_photos, tmp_path, weights):
    """Kills land anywhere: during start-up, model loading, detection, a commit or an index save."""
    import random

    rng = random.Random(6)
    gallery = tmp_path / "g"
    sizes = []
    for kill in range(20):
        proc = start_enroll(many_photos, gallery, weights)
        if kill % 2:  # a few commits in, then a little later: lands in detection, a commit or an index save
            wait_for(proc, gallery, committed_faces(gallery) + rng.randint(1, 8))
            time.sleep(rng.uniform(0.0, 0.3))
        else:  # any time from the start: start-up, model load, the first photos
            time.sleep(rng.uniform(0.3, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (gallery / "gallery.sqlite").exists():
            sizes.append(assert_consistent(gallery))
    assert sizes == sorted(sizes) and len(set(sizes)) >= 5, sizes  # it grew, kill after kill
    proc = start_enroll(many_photos, gallery, weights)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    import json

    report = json.loads(out)
    assert report["faces_total"] == assert_consistent(gallery) == sizes[-1] + report["faces_added"]
    skipped_now = [s for s in report["skipped"] if not s["reason"].startswith("already enrolled")]
    assert report["faces_total"] + len(skipped_now) == 200


ADAPT_KEPT = """
import sys
import facerec.adapt
from dataclasses import replace
from facerec import FaceRecognizer
facerec.adapt.decide = lambda before, after, max_drop: (True, "kept by the test")
FaceRecognizer(sys.argv[1], device="cpu").adapt(options=replace(facerec.adapt.AdaptOptions(), epochs=1))
"""


def test_kills_during_adapt_leave_the_base_or_the_adapted_gallery(tmp_path, shared, monkeypatch):
    """Each kill leaves the gallery wholly on its base model (vectors bit-identical) or wholly adapted."""
    import random

    from facerec import FaceRecognizer
    from test_adapt import orl_folder, vectors_and_meta

    monkeypatch.setenv("FACEREC_MODELS", str(tmp_path / "models"))
    gallery = tmp_path / "g"
    FaceRecognizer(gallery, model="dlib-resnet", device="cpu").enroll(orl_folder(shared, tmp_path / "photos", 6, 4))
    base_vectors, base_meta = vectors_and_meta(gallery)
    # One whole run, timed, so that the kills spread over this machine's run time whatever its load.
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", ADAPT_KEPT, str(gallery)], check=True, capture_output=True)
    whole = time.monotonic() - start
    assert FaceRecognizer(gallery, device="cpu").rollback().restored == len(base_vectors)
    rng = random.Random(5)
    outcomes = set()
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", ADAPT_KEPT, str(gallery)], stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.2, 1.2) * whole)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_consistent(gallery)
        vectors, meta = vectors_and_meta(gallery)
        if "adapted" in meta:
            assert Path(meta["weights_path"]).is_file() and not np.allclose(vectors, base_vectors, atol=1e-3)
            with Gallery.open(gallery) as g:
                assert np.array_equal(g.vectors("base_vectors")[1], base_vectors)
            outcomes.add("adapted")
            assert FaceRecognizer(gallery, device="cpu").rollback().restored == len(base_vectors)
        else:
            assert np.array_equal(vectors, base_vectors) and meta["weights_sha256"] == base_meta["weights_sha256"]
            outcomes.add("base")
    assert outcomes == {"base", "adapted"}, outcomes  # kills landed both before and after the switch


def test_concurrent_enrolls_wait_for_each_other_and_identify_reads_meanwhile(tmp_path, shared, weights, many_photos):
    import json

    first, second = tmp_path / "first", tmp_path / "second"
    people = sorted(many_photos.iterdir())
    for target, chosen in ((first, people[:12]), (second, people[8:20])):  # 4 people in both
        target.mkdir()
        for person in chosen:
            (target / person.name).symlink_to(person, target_is_directory=True)
    gallery = tmp_path / "g"
    procs = [start_enroll(folder, gallery, weights) for folder in (first, second)]
    answers = 0
    while any(p.poll() is None for p in procs):
        if (gallery / "gallery.sqlite").exists():
            probe = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "facerec.cli",
                    "identify",
                    str(next(people[0].iterdir())),
                    "--gallery",
                    str(gallery),
                    "--weights",
                    str(weights),
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert probe.returncode == 0, probe.stderr
            assert json.loads(probe.stdout)["faces"], probe.stdout
            answers += 1
    results = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    reports = [json.loads(out) for out, _ in results]
    assert answers >= 1
    total = assert_consistent(gallery)
    assert total == sum(r["faces_added"] for r in reports)  # the shared people were enrolled once
    already = sum(s["reason"].startswith("already enrolled") for r in reports for s in r["skipped"])
    with Gallery.open(gallery) as g:
        shared_faces = sum(count for name, count in g.people().items() if name in {p.name for p in people[8:12]})
    assert already == shared_faces >= 16  # the 4 people in both folders, skipped by whichever enroll came second


def test_a_writer_that_cannot_get_the_lock_says_the_gallery_is_busy(known_gallery, tmp_path, shared, weights):
    import shutil

    gallery = tmp_path / "g"
    shutil.copytree(known_gallery, gallery)
    with Gallery.open_for_write(gallery):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "facerec.cli",
                "enroll",
                str(shared / "faces" / "known"),
                "--gallery",
                str(gallery),
                "--weights",
                str(weights),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "FACEREC_LOCK_TIMEOUT": "0.5"},
        )
    assert proc.returncode == 1 and "is busy: another facerec process is writing to it" in proc.stderr


def _file_size_limit(limit: int):
    """For a child process: writes past `limit` bytes fail with EFBIG (as on a full disk) instead of killing it."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_during_enroll_keeps_the_previous_gallery(known_gallery, tmp_path, many_photos, weights):
    import json
    import shutil

    gallery = tmp_path / "g"
    shutil.copytree(known_gallery, gallery)
    before = assert_consistent(gallery)
    limit = (gallery / "gallery.sqlite").stat().st_size + 24 * 1024  # room for a few batches, then "full"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facerec.cli",
            "enroll",
            str(many_photos),
            "--gallery",
            str(gallery),
            "--weights",
            str(weights),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FACEREC_BATCH_SIZE": "4"},
        preexec_fn=_file_size_limit(limit),
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"cannot write to gallery {gallery}" in err and "nothing of this batch was kept" in err
    kept = assert_consistent(gallery)
    assert before < kept < before + 200  # the batches before the disk filled are kept, whole
    proc = start_enroll(many_photos, gallery, weights)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out)["faces_total"] == assert_consistent(gallery)
