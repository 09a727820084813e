"""End to end through the command line, on real faces from ../shared, with the random test weights.

The weights do not recognise people (accuracy comes with a pretrained offline model); these tests prove
what the plumbing must do: the same photo finds itself, galleries persist, errors are one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from facerec.cli import main

KNOWN_PEOPLE = {
    "alex_lacamoire": 1,
    "angelina_jolie": 1,
    "biden": 2,
    "kate_siegel": 1,
    "kit_harington": 2,
    "lin_manuel_miranda": 1,
    "obama": 2,
    "paul_rudd": 1,
    "rose_leslie": 2,
    "shea_whigham": 1,
}


def run(*args: str, expect: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.exit_code, result.output, result.stderr, result.exception)
    assert "Traceback" not in result.output + result.stderr
    return result


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_enroll_reports_people_and_is_incremental(tmp_path, shared, weights):
    gallery = tmp_path / "g"
    first = json.loads(
        run(
            "enroll",
            shared / "faces/known",
            "--gallery",
            gallery,
            "--weights",
            weights,
            "--model",
            "vggface2",
            "--json",
        ).stdout
    )
    assert first["added"] == KNOWN_PEOPLE
    assert first["faces_added"] == 14 and first["faces_total"] == 14 and first["people_total"] == 10
    assert first["failed"] == [] and first["skipped"] == []
    # Loose file layout: the png named after the person.
    assert first["added"]["lin_manuel_miranda"] == 1

    again = json.loads(run("enroll", shared / "faces/known", "--gallery", gallery, "--json").stdout)
    assert again["faces_added"] == 0 and again["faces_total"] == 14
    assert len(again["skipped"]) == 14
    assert all(s["reason"].startswith("already enrolled as ") for s in again["skipped"])

    text = run("enroll", shared / "faces/known", "--gallery", gallery).stdout
    assert "enrolled 0 faces" in text and "gallery now holds 10 people, 14 faces" in text


def test_identify_json_schema_and_self_match(known_gallery, shared):
    result = run(
        "identify",
        shared / "faces/known/paul_rudd/1.jpg",
        shared / "faces/nofaces/dogs.jpg",
        "--gallery",
        known_gallery,
        "--json",
        "--top-k",
        "2",
    )
    rudd, dogs = json_lines(result.stdout)
    assert rudd["image"].endswith("paul_rudd/1.jpg") and len(rudd["faces"]) == 1
    face = rudd["faces"][0]
    assert set(face) == {"box", "score", "name", "similarity", "match_score", "candidates"}
    assert len(face["box"]) == 4 and face["box"][0] < face["box"][2] and face["box"][1] < face["box"][3]
    assert face["score"] > 0.95
    assert face["name"] == "paul_rudd" and face["similarity"] > 0.999
    assert face["candidates"][0]["name"] == "paul_rudd" and len(face["candidates"]) == 2
    assert face["candidates"][1]["similarity"] < face["similarity"]
    assert rudd["threshold"] == pytest.approx(0.5) and "not calibrated" in rudd["operating_point"]
    assert face["match_score"] == face["similarity"]  # uncalibrated: the decision compares cosines
    assert dogs["faces"] == []


def test_identify_threshold_makes_unknown(known_gallery, shared):
    path = shared / "faces/unknown/obama_and_biden.jpg"
    named = json_lines(run("identify", path, "--gallery", known_gallery, "--json", "--threshold", "-1").stdout)[0]
    assert len(named["faces"]) == 3 and all(f["name"] != "unknown" for f in named["faces"])
    strict = json_lines(run("identify", path, "--gallery", known_gallery, "--json", "--threshold", "1").stdout)[0]
    assert [f["name"] for f in strict["faces"]] == ["unknown"] * 3
    assert all(f["similarity"] < 1 for f in strict["faces"])
    text = run("identify", path, "--gallery", known_gallery, "--threshold", "1").stdout
    assert text.count("unknown (closest ") == 3


def test_identify_folder_with_bad_files_goes_on_and_fails(tmp_path, known_gallery, shared):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(shared / "faces/known/kate_siegel/1.jpg", folder / "a_kate.jpg")
    (folder / "b_notes.jpg").write_text("not an image")
    (folder / "c_empty.png").write_bytes(b"")
    result = run("identify", folder, tmp_path / "missing.jpg", "--gallery", known_gallery, "--json", expect=1)
    lines = json_lines(result.stdout)
    assert [Path(line["image"]).name for line in lines] == ["a_kate.jpg", "b_notes.jpg", "c_empty.png", "missing.jpg"]
    assert lines[0]["faces"][0]["name"] == "kate_siegel"
    assert all("error" in line for line in lines[1:])
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("facerec: error: ") for e in errors)
    assert "b_notes.jpg" in errors[0] and "c_empty.png" in errors[1] and "missing.jpg" in errors[2]


def test_annotate_writes_copies(tmp_path, known_gallery, shared):
    out = tmp_path / "annotated"
    run(
        "identify",
        shared / "faces/unknown/kit_with_rose.jpg",
        shared / "faces/nofaces",
        "--gallery",
        known_gallery,
        "--annotate",
        out,
    )
    assert sorted(p.name for p in out.iterdir()) == ["dogs.jpg", "kit_with_rose.jpg"]
    from facerec.images import read_image

    original = read_image(shared / "faces/unknown/kit_with_rose.jpg")
    drawn = read_image(out / "kit_with_rose.jpg")
    assert drawn.shape == original.shape
    assert abs(drawn.astype(int) - original.astype(int)).mean() > 0.5  # boxes were drawn


def test_people_forget_info(gallery_copy):
    people = json.loads(run("people", "--gallery", gallery_copy, "--json").stdout)
    assert {p["name"]: p["faces"] for p in people["people"]} == KNOWN_PEOPLE

    assert json.loads(run("forget", "obama", "--gallery", gallery_copy, "--json").stdout) == {
        "name": "obama",
        "faces_removed": 2,
    }
    people = json.loads(run("people", "--gallery", gallery_copy, "--json").stdout)
    assert "obama" not in {p["name"] for p in people["people"]}
    result = run("forget", "obama", "--gallery", gallery_copy, expect=1)
    assert "no person named 'obama'" in result.stderr

    info = json.loads(run("info", "--gallery", gallery_copy, "--json", "--device", "cpu").stdout)
    assert {"gallery", "model", "people", "faces", "device", "versions", "thresholds"} <= set(info)
    assert info["model"] == "vggface2" and info["people"] == 9 and info["faces"] == 12 and info["device"] == "cpu"
    assert info["index"] == "exact (FAISS IndexFlatIP)"  # a small gallery; tests/test_index.py covers the other kind
    assert "facerec" in run("info", "--gallery", gallery_copy).stdout


def test_forgotten_person_is_not_found_again(gallery_copy, shared):
    run("forget", "obama", "--gallery", gallery_copy)
    face = json_lines(
        run("identify", shared / "faces/known/obama/obama.jpg", "--gallery", gallery_copy, "--json").stdout
    )[0]["faces"][0]
    assert "obama" not in [c["name"] for c in face["candidates"]]
    assert face["similarity"] < 0.999


def test_gallery_persists_across_processes(known_gallery, shared):
    """A fresh interpreter (no model cache) reads the gallery and its remembered weights."""
    env = {**os.environ, "FACEREC_DOWNLOAD_URL": "http://127.0.0.1:9/"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "facerec.cli",
            "identify",
            str(shared / "faces/known/shea_whigham/1.jpg"),
            "--gallery",
            str(known_gallery),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["faces"][0]["name"] == "shea_whigham"


def test_identify_without_gallery(tmp_path, shared):
    result = run("identify", shared / "faces/known/obama/obama.jpg", "--gallery", tmp_path / "none", expect=2)
    assert "no gallery at" in result.stderr and "facerec enroll" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "none").exists()


def test_gallery_refuses_other_model_and_weights(gallery_copy, shared, other_weights):
    result = run("enroll", shared / "faces/known", "--gallery", gallery_copy, "--model", "casia-webface", expect=2)
    assert "built with model vggface2, not casia-webface" in result.stderr
    result = run(
        "identify",
        shared / "faces/known/obama/obama.jpg",
        "--gallery",
        gallery_copy,
        "--weights",
        other_weights,
        expect=2,
    )
    assert "built with other weights" in result.stderr and "--weights" in result.stderr


def test_offline_download_fails_with_one_line(tmp_path, shared, monkeypatch):
    monkeypatch.setenv("FACEREC_MODELS", str(tmp_path / "models"))
    result = run("enroll", shared / "faces/known", "--gallery", tmp_path / "g", "--model", "vggface2", expect=2)
    message = result.stderr.strip()
    assert message.count("\n") == 0
    assert "cannot download 20180402-114759-vggface2.pt" in message
    assert str(tmp_path / "models" / "20180402-114759-vggface2.pt") in message
    assert not (tmp_path / "g").exists() and not list((tmp_path / "models").glob("*"))


def test_weights_that_are_not_a_model(tmp_path, shared):
    import torch

    bogus = tmp_path / "bogus.pt"
    torch.save({"w": torch.zeros(3)}, bogus)
    result = run(
        "enroll",
        shared / "faces/known",
        "--gallery",
        tmp_path / "g",
        "--weights",
        bogus,
        "--model",
        "vggface2",
        expect=2,
    )
    assert "bogus.pt" in result.stderr and "InceptionResnetV1" in result.stderr
    result = run(
        "enroll",
        shared / "faces/known",
        "--gallery",
        tmp_path / "g",
        "--weights",
        tmp_path / "nope.pt",
        "--model",
        "vggface2",
        expect=2,
    )
    assert "nope.pt does not exist" in result.stderr


def test_enroll_bad_inputs_keep_good_photos(tmp_path, shared, weights):
    photos = tmp_path / "photos"
    (photos / "José Álvarez").mkdir(parents=True)
    shutil.copy(shared / "faces/known/paul_rudd/1.jpg", photos / "José Álvarez/1.jpg")
    (photos / "broken").mkdir()
    data = (shared / "faces/known/obama/obama.jpg").read_bytes()
    (photos / "broken/truncated.jpg").write_bytes(data[: len(data) // 3])
    (photos / "broken/empty.jpg").write_bytes(b"")
    (photos / "broken/text.png").write_text("hello")
    from PIL import Image

    Image.new("RGB", (1, 1)).save(photos / "broken/tiny.png")
    shutil.copy(shared / "faces/nofaces/dogs.jpg", photos / "dogs.jpg")
    shutil.copy(shared / "faces/groups/friends_cast.jpg", photos / "friends.jpg")
    gallery = tmp_path / "g"
    result = run(
        "enroll", photos, "--gallery", gallery, "--weights", weights, "--model", "vggface2", "--json", expect=1
    )
    report = json.loads(result.stdout)
    assert report["added"] == {"José Álvarez": 1}
    failed = {Path(f["path"]).name: f["reason"] for f in report["failed"]}
    assert set(failed) == {"truncated.jpg", "empty.jpg", "text.png", "tiny.png"}
    assert all(name in reason for name, reason in failed.items())
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert skipped["dogs.jpg"] == "no face found"
    assert skipped["friends.jpg"].startswith("ambiguous")
    people = json.loads(run("people", "--gallery", gallery, "--json").stdout)["people"]
    assert people == [{"name": "José Álvarez", "faces": 1}]


@pytest.mark.parametrize("layout", ["missing", "file", "empty"])
def test_enroll_unusable_folder(tmp_path, weights, layout):
    target = tmp_path / "photos"
    if layout == "file":
        target.write_text("x")
    elif layout == "empty":
        target.mkdir()
    result = run("enroll", target, "--gallery", tmp_path / "g", "--weights", weights, "--model", "vggface2", expect=1)
    assert str(target) in result.stderr and result.stderr.count("\n") == 1


def test_enroll_into_unwritable_place(tmp_path, shared, weights):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run(
        "enroll",
        shared / "faces/known",
        "--gallery",
        blocker / "g",
        "--weights",
        weights,
        "--model",
        "vggface2",
        expect=1,
    )
    assert "cannot create gallery folder" in result.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = run(
        "enroll", shared / "faces/known", "--gallery", other, "--weights", weights, "--model", "vggface2", expect=1
    )
    assert "is not empty" in result.stderr and (other / "notes.txt").read_text() == "mine"


def test_device_cuda_without_gpu(tmp_path, shared, weights):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run(
        "enroll",
        shared / "faces/known",
        "--gallery",
        tmp_path / "g",
        "--weights",
        weights,
        "--model",
        "vggface2",
        "--device",
        "cuda",
        expect=2,
    )
    assert "no CUDA GPU" in result.stderr


def _without_root_file_powers() -> None:
    """Run as root but let file modes apply: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (Linux)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_read_only_gallery(tmp_path, known_gallery, shared):
    """Enroll into a gallery we may not write: one line, nothing changed; identify still works."""
    gallery = tmp_path / "g"
    shutil.copytree(known_gallery, gallery)
    for path in [*gallery.iterdir(), gallery]:
        path.chmod(0o500 if path.is_dir() else 0o400)
    before = {p.name: p.read_bytes() for p in gallery.iterdir()}
    env = {**os.environ, "FACEREC_DOWNLOAD_URL": "http://127.0.0.1:9/"}
    as_user = {"preexec_fn": _without_root_file_powers} if os.geteuid() == 0 else {}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "facerec.cli", *map(str, args), "--gallery", str(gallery)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            **as_user,
        )

    try:
        enroll = cli("enroll", shared / "faces/known")
        assert enroll.returncode == 1, enroll.stderr
        assert enroll.stderr.startswith("facerec: error: cannot write to gallery") and enroll.stderr.count("\n") == 1
        identify = cli("identify", shared / "faces/known/angelina_jolie/1.jpg", "--json")
        assert identify.returncode == 0, identify.stderr
        assert json.loads(identify.stdout)["faces"][0]["name"] == "angelina_jolie"
        forget = cli("forget", "obama")
        assert forget.returncode == 1 and "cannot write to gallery" in forget.stderr
        assert {p.name: p.read_bytes() for p in gallery.iterdir()} == before
    finally:
        gallery.chmod(0o700)
