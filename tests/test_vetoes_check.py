"""'Not this person' (facerec reject) and the gallery self-check (facerec check), on real photos with dlib-resnet."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facerec.cli import main
from facerec.gallery import FaceRecord, Gallery, GalleryMeta


def run(*args: object, expect: int = 0) -> dict:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.stderr)
    assert "Traceback" not in result.output + result.stderr
    return json.loads(result.stdout.splitlines()[-1]) if expect == 0 and "--json" in args else {"err": result.stderr}


def names(gallery: Path, photo: Path) -> list[str]:
    return [f["name"] for f in run("identify", photo, "--gallery", gallery, "--json")["faces"]]


@pytest.fixture
def gallery(tmp_path, shared) -> Path:
    path = tmp_path / "g"
    run("enroll", shared / "faces/known", "--gallery", path, "--model", "dlib-resnet", "--json")
    return path


def test_a_reject_vetoes_that_face_persists_and_goes_with_forget(gallery, shared):
    unknown = shared / "faces/unknown"
    assert names(gallery, unknown / "obama-480p.jpg") == ["obama"]
    done = run("reject", unknown / "obama-480p.jpg", "--not", "obama", "--gallery", gallery, "--json")
    assert done["was_named"] == "obama" and done["vetoes"] == 1
    # Each CLI call is its own gallery snapshot: the veto is read back from the database.
    assert names(gallery, unknown / "obama-480p.jpg") == ["unknown"]
    assert names(gallery, unknown / "obama-720p.jpg") == ["unknown"]  # the same photo, larger: near-identical
    assert names(gallery, unknown / "obama_small.jpg") == ["unknown"]  # and smaller
    assert names(gallery, unknown / "obama1.jpg") == ["obama"]  # another photo of him (0.965 alike): still named
    # A veto for somebody else in a two-person photo leaves the other name alone.
    assert sorted(names(gallery, unknown / "kit_with_rose.jpg")) == ["kit_harington", "rose_leslie"]
    run("forget", "obama", "--gallery", gallery, "--json")
    db = sqlite3.connect(gallery / "gallery.sqlite")
    assert db.execute("SELECT count(*) FROM vetoes").fetchone() == (0,)
    db.close()
    assert (
        "no person named 'obama'"
        in run("reject", unknown / "obama1.jpg", "--not", "obama", "--gallery", gallery, expect=1)["err"]
    )


def test_reject_needs_one_face_to_mean(gallery, shared):
    err = run("reject", shared / "faces/groups/friends_cast.jpg", "--not", "obama", "--gallery", gallery, expect=1)
    assert "faces and none is taken for obama" in err["err"]
    assert (
        "no face found"
        in run("reject", shared / "faces/nofaces/dogs.jpg", "--not", "obama", "--gallery", gallery, expect=1)["err"]
    )


def test_vetoes_follow_the_weights_across_adapt_and_rollback(tmp_path):
    """One row per weights: the adapted model's vectors are added beside the base model's in the
    re-embedding transaction, and a rollback finds the base ones untouched."""
    meta = GalleryMeta.new("dlib-resnet", 4, Path("/w.dat"), "b" * 64)
    face = FaceRecord("ann", "/p/1.jpg", "h1", (0, 0, 9, 9), 0.99)
    with Gallery.open_for_write(tmp_path / "g", create=meta) as g:
        g.add([face], np.array([[1, 0, 0, 0]], np.float32))
        g.add_veto(FaceRecord("ann", "/p/x.jpg", "hx", (1, 1, 8, 8), 0.9), np.array([0, 1, 0, 0], np.float32))
        assert [r.source for r in g.veto_records(missing_for="a" * 64)] == ["/p/x.jpg"]
        adapted = GalleryMeta("dlib-resnet", 4, "/a.pt", "a" * 64, meta.created)
        ids, vectors = g.vectors()
        g.replace_vectors(
            ids,
            vectors,
            adapted,
            keep_base=(ids, vectors),
            vetoes=[(r, np.array([0, 0, 1, 0], np.float32)) for r in g.veto_records("a" * 64)],
        )
        assert g.veto_records(missing_for="a" * 64) == []
    with Gallery.open(tmp_path / "g") as g:
        assert np.array_equal(g.vetoes("a" * 64)["ann"], [[0, 0, 1, 0]])
        assert np.array_equal(g.vetoes("b" * 64)["ann"], [[0, 1, 0, 0]])  # the base model's, for a rollback


def test_check_flags_a_mislabelled_photo_and_reports_figures(tmp_path, shared):
    photos = tmp_path / "photos"
    known = shared / "faces/known"
    for person in ("obama", "kit_harington", "rose_leslie", "biden"):
        (photos / person).mkdir(parents=True)
        for photo in sorted((known / person).iterdir()):
            if person == "biden" and photo.name == "biden2.jpg":
                (photos / "obama" / photo.name).symlink_to(photo)  # Biden filed as Obama
            else:
                (photos / person / photo.name).symlink_to(photo)
    gallery = tmp_path / "g"
    run("enroll", photos, "--gallery", gallery, "--model", "dlib-resnet", "--json")
    report = run("check", "--gallery", gallery, "--json")
    assert report["people"] == 4 and report["faces"] == 8 and "calibrated" in report["operating_point"]
    assert 0 <= report["known_accuracy"] <= 1 and 0 <= report["stranger_false_accepts"] <= 1
    closer = [f for f in report["flags"] if f["kind"] == "closer to another person"]
    assert [Path(f["source"]).name for f in closer] == ["biden2.jpg"] and "to biden" in closer[0]["detail"]
    assert [f["person"] for f in report["flags"] if f["kind"] == "one photo"] == ["biden"]
    text = CliRunner().invoke(main, ["check", "--gallery", str(gallery)])
    assert "closer to another person: obama:" in text.stdout and "biden2.jpg" in text.stdout


def test_calibrate_on_own_strangers(gallery, shared, tmp_path):
    """Photos of people in no gallery become the gallery's cohort: the operating point says so, and the
    threshold moves to what those strangers show; too few faces change nothing."""
    strangers = tmp_path / "strangers"
    strangers.mkdir()
    people = sorted(p for p in (shared / "faces/lfw").iterdir() if p.is_dir())[::20][:240]
    for person in people:
        photo = sorted(person.glob("*.jpg"))[0]
        (strangers / photo.name).symlink_to(photo)
    before = run("info", "--gallery", gallery, "--json")["thresholds"]
    done = run("calibrate", "--strangers", strangers, "--gallery", gallery, "--json")
    assert done["faces"] >= 200 and done["normalisation"] > 0 and done["calibration"] > 0 and done["warning"]
    shown = run("info", "--gallery", gallery, "--json")
    after = shown["thresholds"]
    assert "own strangers" in after["identify_operating_point"] and "shipped" in before["identify_operating_point"]
    assert not any("LFW cohort" in warning for warning in shown["warnings"])  # these strangers are the deployment's
    assert after["identify"] != before["identify"]
    few = tmp_path / "few"
    few.mkdir()
    (few / "one.jpg").symlink_to(sorted(people[0].glob("*.jpg"))[0])
    assert "nothing was changed" in run("calibrate", "--strangers", few, "--gallery", gallery, expect=1)["err"]
    assert "own strangers" in run("info", "--gallery", gallery, "--json")["thresholds"]["identify_operating_point"]
