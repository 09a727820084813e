"""The example programs in samples/ run as documented."""

from __future__ import annotations

import subprocess
import sys

from conftest import PROJECT_ROOT


def test_enroll_and_identify_sample(tmp_path, shared, weights):
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "samples" / "enroll_and_identify.py"), str(shared / "faces/known"),
         str(shared / "faces/known/alex_lacamoire/img1.jpg"), str(shared / "faces/nofaces/dogs.jpg"),
         "--gallery", str(tmp_path / "g"), "--weights", str(weights), "--model", "vggface2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "14 faces added; the gallery holds 10 people"
    assert "img1.jpg: alex_lacamoire (similarity 1.000)" in lines[1]
    assert lines[2].endswith("dogs.jpg: no faces")
