"""Ctrl-C and bad settings through the real `facerec` process: every long command × with and without --json.

Each interrupted command exits 130 with one line on stderr and no traceback; whatever it printed on stdout
before is whole (with --json, every line parses); a gallery it was changing is left as it was or whole.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_adapt import orl_folder

ENV = {**os.environ, "FACEREC_DOWNLOAD_URL": "http://127.0.0.1:9/"}


def facerec(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "facerec.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or ENV,
    )


def interrupt(proc: subprocess.Popen, *, after_lines: int = 0, after_s: float = 0.0, times: int = 1) -> tuple[str, str]:
    """SIGINT (`times` times, as an impatient person does) once `after_lines` lines are on stdout and
    `after_s` seconds have passed; (stdout, stderr)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    start = time.monotonic()
    while (len(lines) < after_lines or time.monotonic() - start < after_s) and proc.poll() is None:
        assert time.monotonic() - start < 300, "the command never got going"
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be interrupted: {proc.stderr.read()}"
    for _ in range(times):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    err = proc.stderr.read()
    proc.wait(timeout=120)
    reader.join(timeout=10)
    return "".join(lines), err


def check_interrupted(proc: subprocess.Popen, out: str, err: str, as_json: bool) -> None:
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("facerec: error: interrupted"), err
    if as_json:
        for line in out.splitlines():
            json.loads(line)


@pytest.fixture(scope="module")
def dlib_gallery(tmp_path_factory, shared) -> Path:
    from facerec import FaceRecognizer

    root = tmp_path_factory.mktemp("interrupts")
    gallery = root / "g"
    FaceRecognizer(gallery, model="dlib-resnet", device="cpu").enroll(orl_folder(shared, root / "photos", 6, 5))
    return gallery


def gallery_rows(gallery: Path) -> tuple[list, list]:
    import sqlite3

    db = sqlite3.connect(f"file:{gallery / 'gallery.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT key, value FROM meta").fetchall(), db.execute(
            "SELECT id, vector FROM faces"
        ).fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(("as_json", "times"), [(False, 1), (True, 1), (True, 2)])
def test_ctrl_c_during_identify(dlib_gallery, shared, as_json, times):
    lfw = sorted((shared / "faces" / "lfw").glob("A*"))[:60]
    proc = facerec("identify", *lfw, "--gallery", dlib_gallery, *(["--json"] if as_json else []))
    out, err = interrupt(proc, after_lines=1, times=times)
    check_interrupted(proc, out, err, as_json)
    assert out.strip(), "results printed before the interruption are kept"


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_during_adapt_changes_nothing(dlib_gallery, tmp_path, as_json):
    before = gallery_rows(dlib_gallery)
    env = {**ENV, "FACEREC_MODELS": str(tmp_path / "models")}
    proc = facerec("adapt", "--gallery", dlib_gallery, "--epochs", "200", *(["--json"] if as_json else []), env=env)
    out, err = interrupt(proc, after_s=5.0)
    check_interrupted(proc, out, err, as_json)
    assert gallery_rows(dlib_gallery) == before


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_during_eval_keeps_the_cache_usable(shared, tmp_path, as_json):
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    args = ("eval", "lfw", shared / "faces" / "lfw", "--model", "dlib-resnet", *(["--json"] if as_json else []))
    proc = facerec(*args, env=env)
    out, err = interrupt(proc, after_s=6.0)
    check_interrupted(proc, out, err, as_json)
    assert not out.strip()  # no figures: the run did not finish
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # no half-written cache file


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_during_enroll_reports_what_was_kept(shared, tmp_path, as_json):
    lfw = tmp_path / "photos"
    for person in sorted((shared / "faces" / "lfw").glob("B*"))[:80]:
        (lfw / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[:2]:
            (lfw / person.name / photo.name).symlink_to(photo)
    gallery = tmp_path / "g"
    env = {**ENV, "FACEREC_BATCH_SIZE": "2"}
    proc = facerec(
        "enroll", lfw, "--gallery", gallery, "--model", "dlib-resnet", *(["--json"] if as_json else []), env=env
    )
    deadline = time.monotonic() + 300
    while not (gallery / "gallery.sqlite").exists() or not gallery_rows(gallery)[1]:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    out, err = interrupt(proc)
    check_interrupted(proc, out, err, as_json)
    kept = len(gallery_rows(gallery)[1])
    if as_json:
        report = json.loads(out.splitlines()[-1])
        assert report["interrupted"] and report["faces_added"] == report["faces_total"] == kept
    else:
        assert f"gallery now holds {report_people(out)} people, {kept} faces" in out


def report_people(text: str) -> int:
    return int(text.split("gallery now holds ")[1].split(" people")[0])


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("FACEREC_WORKERS", "two", "is not a whole number"),
        ("FACEREC_BATCH_SIZE", "0", "is out of range"),
        ("FACEREC_LOCK_TIMEOUT", "soon", "is not a number"),
        ("FACEREC_MIN_FACE_SCORE", "1.5", "is out of range"),
    ],
)
def test_a_malformed_setting_is_one_line_naming_the_variable(tmp_path, shared, variable, value, words):
    proc = subprocess.run(
        [sys.executable, "-m", "facerec.cli", "identify", shared / "faces/unknown/obama1.jpg", "--gallery", tmp_path],
        capture_output=True,
        text=True,
        env={**ENV, variable: value},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"facerec: error: {variable}={value!r} {words}")


def test_every_setting_is_read_from_the_environment(monkeypatch, tmp_path):
    from dataclasses import fields

    from facerec.config import CHOICES, ENVIRONMENT, Settings

    assert {f.name for f in fields(Settings)} == {"models_dir", *ENVIRONMENT}
    defaults = Settings(models_dir=tmp_path)
    # The lowest value each accepts, or a choice that is not its default: never its default, so a setting that
    # ignored its variable would show.
    values = {
        name: str(kind(low)) if kind is not str else CHOICES[name][-1] if name in CHOICES else "http://mirror.example/"
        for name, (_, kind, low, _) in ENVIRONMENT.items()
    }
    for name, (variable, _, _, _) in ENVIRONMENT.items():
        monkeypatch.setenv(variable, values[name])
    monkeypatch.setenv("FACEREC_MODELS", str(tmp_path))
    settings = Settings.from_env()
    assert settings.models_dir == tmp_path
    for name, (_, kind, _, _) in ENVIRONMENT.items():
        assert getattr(settings, name) == kind(values[name]) != getattr(defaults, name), name


LAZY = """
import sys
sys.modules["torch"] = None  # any `import torch` now fails
from facerec.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize(
    "command", [["--help"], ["people"], ["info", "--json"], ["forget", "s1"], ["people", "--json"]]
)
def test_commands_that_need_no_model_import_no_torch(dlib_gallery, tmp_path, command):
    import shutil

    gallery = tmp_path / "g"
    shutil.copytree(dlib_gallery, gallery)
    args = command if command == ["--help"] else [*command, "--gallery", str(gallery)]
    proc = subprocess.run([sys.executable, "-c", LAZY, *args], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    if command == ["info", "--json"]:
        info = json.loads(proc.stdout)
        assert info["people"] == 6 and info["thresholds"]["identify"] > 0.9 and info["versions"]["torch"]
