"""Real recognition, offline: the dlib-resnet model (rebuilt in PyTorch from face_recognition_models) on real faces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from facerec.cli import main


def run(*args, expect: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.stderr, result.exception)
    return result


@pytest.fixture(scope="module")
def dlib_gallery(tmp_path_factory, shared) -> tuple[Path, CliRunner]:
    gallery = tmp_path_factory.mktemp("dlib") / "g"
    result = run("enroll", shared / "faces/known", "--gallery", gallery, "--json")
    # --model auto, offline (the tests refuse downloads): says it chose dlib-resnet, and why.
    assert "using dlib-resnet (works offline)" in result.stderr
    assert json.loads(result.stdout)["faces_total"] == 14
    return gallery


def identify_json(gallery: Path, *paths: Path) -> dict[str, dict]:
    result = run("identify", *paths, "--gallery", gallery, "--json")
    return {Path(r["image"]).name: r for r in map(json.loads, result.stdout.splitlines())}


def identify(gallery: Path, *paths: Path) -> dict[str, list[str]]:
    return {name: sorted(f["name"] for f in r["faces"]) for name, r in identify_json(gallery, *paths).items()}


def test_every_labelled_face_is_named(dlib_gallery, shared):
    unknown = shared / "faces/unknown"
    results = identify_json(dlib_gallery, unknown)
    names = {name: sorted(f["name"] for f in r["faces"]) for name, r in results.items()}
    obama_photos = [n for n in names if n.startswith("obama") and n != "obama_and_biden.jpg"] + ["32bit.png"]
    assert len(obama_photos) == 10
    for photo in obama_photos:
        assert names[photo] == ["obama"], (photo, names[photo])
    # The operating point in force: 5% of strangers, calibrated to this gallery against the shipped cohort.
    point = results["obama1.jpg"]["operating_point"]
    assert point.startswith("at most 0.05 of strangers named, calibrated to this gallery"), point
    info = json.loads(run("info", "--gallery", dlib_gallery, "--json").stdout)
    assert info["thresholds"]["identify"] == results["obama1.jpg"]["threshold"] and info["thresholds"]["calibrated"]
    assert info["thresholds"]["watch"] > info["thresholds"]["identify"]  # video names at 1%: stricter
    assert names["obama_and_biden.jpg"] == ["biden", "obama", "unknown"]
    assert names["kit_with_rose.jpg"] == ["kit_harington", "rose_leslie"]
    assert names["alex_lacamoire1.jpg"] == ["alex_lacamoire"]
    assert names["johnsnow_test1.jpg"] == ["kit_harington"]


def test_crowds_name_nobody_twice(dlib_gallery, shared):
    """One name per person per photo: in the crowd photos (hundreds of strangers) no enrolled person is
    given to two faces, and only a few strangers are named at all."""
    results = identify_json(dlib_gallery, shared / "faces/groups")
    for image, result in results.items():
        named = [f["name"] for f in result["faces"] if f["name"] != "unknown"]
        assert len(named) == len(set(named)), (image, named)
    selfie = results["worlds_largest_selfie.jpg"]["faces"]
    assert len(selfie) > 200 and sum(f["name"] != "unknown" for f in selfie) <= 0.05 * len(selfie)


def test_a_stricter_operating_point_names_fewer(dlib_gallery, shared):
    photos = [shared / "faces/unknown/obama_partial_face2.jpg", shared / "faces/groups/worlds_largest_selfie.jpg"]
    loose = run("identify", *photos, "--gallery", dlib_gallery, "--json", "--max-false-accept", "0.05")
    strict = run("identify", *photos, "--gallery", dlib_gallery, "--json", "--max-false-accept", "0.001")
    loose_r, strict_r = (list(map(json.loads, r.stdout.splitlines())) for r in (loose, strict))
    assert strict_r[0]["threshold"] > loose_r[0]["threshold"] and "at most 0.001" in strict_r[0]["operating_point"]
    count = lambda rs: sum(f["name"] != "unknown" for r in rs for f in r["faces"])
    assert count(strict_r) < count(loose_r)


def test_strangers_are_unknown(dlib_gallery, shared):
    names = identify(dlib_gallery, shared / "faces/groups/friends_cast.jpg")
    assert names["friends_cast.jpg"] == ["unknown"] * 6


def test_verify(shared):
    known = shared / "faces/known"
    same = json.loads(run("verify", known / "obama/obama.jpg", known / "obama/obama2.jpg", "--json").stdout)
    assert same["same"] is True and same["model"] == "dlib-resnet" and same["similarity"] > same["threshold"]
    other = json.loads(run("verify", known / "obama/obama.jpg", known / "biden/biden.jpg", "--json").stdout)
    assert other["same"] is False and other["similarity"] < other["threshold"]
    assert "different people" in run("verify", known / "obama/obama.jpg", known / "biden/biden.jpg").stdout
    result = run("verify", known / "obama/obama.jpg", shared / "faces/nofaces/dogs.jpg", expect=1)
    assert "dogs.jpg: no face found" in result.stderr


def test_lfw_subset_accuracy(tmp_path, shared, monkeypatch):
    """Two folds of 300 LFW pairs (the first 150 same and 150 different pairs of folds 1 and 2)."""
    lfw = shared / "faces/lfw"
    lines = (lfw / "pairs.txt").read_text().splitlines()[1:]
    subset = lines[0:150] + lines[300:450] + lines[600:750] + lines[900:1050]
    (tmp_path / "pairs.txt").write_text("2 150\n" + "\n".join(subset) + "\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plot = tmp_path / "roc.png"
    report = json.loads(run("eval", "lfw", lfw, "--pairs", tmp_path / "pairs.txt", "--json", "--plot", plot).stdout)
    assert report["pairs"] == 600 and report["model"] == "dlib-resnet"
    assert report["accuracy"] >= 0.97, report
    assert report["faces_not_found"] <= 2
    assert plot.stat().st_size > 10_000
    again = run("eval", "lfw", lfw, "--pairs", tmp_path / "pairs.txt")  # from the cache
    assert f"accuracy {report['accuracy']:.4f}" in again.stdout


@pytest.mark.parametrize(
    ("batch_size", "embedded", "committed"), [(None, [8, 6], [14]), (3, [3, 3, 3, 3, 2], [3, 3, 3, 3, 2])]
)
def test_enroll_embeds_while_detecting_and_commits_batch_size_faces(
    tmp_path, shared, weights, monkeypatch, batch_size, embedded, committed
):
    """Enroll embeds every EMBED_PHOTOS photos' faces as they come (so embedding overlaps detection) and
    commits FACEREC_BATCH_SIZE faces per transaction (what an interrupted run keeps)."""
    from facerec import FaceRecognizer
    from facerec import enroll as enroll_module
    from facerec.gallery import Gallery

    if batch_size is not None:
        monkeypatch.setenv("FACEREC_BATCH_SIZE", str(batch_size))
    calls: dict[str, list[int]] = {"embedded": [], "committed": []}
    stored_vectors, add = enroll_module.stored_vectors, Gallery.add

    def spy_stored(view, pipeline, chips, views):
        calls["embedded"].append(len(chips))
        return stored_vectors(view, pipeline, chips, views)

    def spy_add(self, records, vectors):
        calls["committed"].append(len(records))
        return add(self, records, vectors)

    monkeypatch.setattr(enroll_module, "stored_vectors", spy_stored)
    monkeypatch.setattr(Gallery, "add", spy_add)
    report = FaceRecognizer(tmp_path / "g", model="vggface2", weights=weights, device="cpu").enroll(
        shared / "faces" / "known"
    )
    assert report.faces_added == report.faces_total == 14
    assert calls == {"embedded": embedded, "committed": committed}
