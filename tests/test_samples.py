"""The example programs in samples/ run as documented."""

from __future__ import annotations

import subprocess
import sys

from conftest import PROJECT_ROOT


def test_enroll_and_identify_sample(tmp_path, shared, weights):
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "samples" / "enroll_and_identify.py"),
            str(shared / "faces/known"),
            str(shared / "faces/known/alex_lacamoire/img1.jpg"),
            str(shared / "faces/nofaces/dogs.jpg"),
            "--gallery",
            str(tmp_path / "g"),
            "--weights",
            str(weights),
            "--model",
            "vggface2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "14 faces added; the gallery holds 10 people"
    assert "img1.jpg: alex_lacamoire (similarity 1.000)" in lines[1]
    assert lines[2].endswith("dogs.jpg: no faces")


def test_faces_and_vectors_sample(shared):
    """The gallery-free pipeline: both faces of a photo found, and each matches its own enrollment photo best."""
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "samples" / "faces_and_vectors.py"),
            str(shared / "faces/unknown/kit_with_rose.jpg"),
            str(shared / "faces/known/kit_harington"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("kit_with_rose.jpg: 2 faces")
    pairs = {line.split(": ")[0]: float(line.split(": ")[1]) for line in lines if " ~ " in line}
    assert len(pairs) == 6  # 4 faces, every pair once
    # Kit Harington is the larger face (#0, largest first): his two own photos match it and not Rose Leslie.
    for own in ("john1.jpeg#0", "john2.jpeg#0"):
        assert pairs[f"kit_with_rose.jpg#0 ~ {own}"] > 0.94 > pairs[f"kit_with_rose.jpg#1 ~ {own}"]
