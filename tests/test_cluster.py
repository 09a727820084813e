"""facerec cluster's engine: the grouping on synthetic vectors, the folder run with a stand-in face finder
(fast, no model), and the real pipeline on real LFW photos (dlib-resnet on CPU, skipped without ../shared)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerec import cluster as engine
from facerec.cluster import (
    ClusterResult,
    PreviousGroup,
    VectorCache,
    assign_ids,
    cluster_folder,
    cluster_vectors,
    drop_small,
    group_faces,
)
from facerec.detect import Face
from facerec.sheet import write_contact_sheet

# --- synthetic vectors -------------------------------------------------------------------------------


def _people(
    rng: np.random.Generator, sizes: list[int], dim: int = 64, spread: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(len(sizes), dim))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    vectors = centres[truth] + rng.normal(size=(len(truth), dim)) * spread
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), truth


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_separate_people_become_separate_groups_and_strangers_stay_out():
    rng = np.random.default_rng(1)
    vectors, truth = _people(rng, [12, 8, 5, 1, 1, 1])
    labels = cluster_vectors(vectors, cut=0.8, min_faces=3)
    assert _same_partition(labels[truth < 3], truth[truth < 3])
    assert (labels[truth >= 3] == -1).all()
    assert labels[0] == 0  # the biggest group is group 0


def test_groups_below_min_faces_are_unclustered():
    rng = np.random.default_rng(2)
    vectors, truth = _people(rng, [2, 3])
    assert (cluster_vectors(vectors, cut=0.8, min_faces=3)[truth == 0] == -1).all()
    assert (cluster_vectors(vectors, cut=0.8, min_faces=2) >= 0).all()


def test_result_does_not_depend_on_face_order():
    rng = np.random.default_rng(3)
    vectors, _ = _people(rng, [20, 15, 10, 6, 3], spread=0.45)
    labels = cluster_vectors(vectors, cut=0.6)
    order = rng.permutation(len(vectors))
    shuffled = np.empty_like(labels)
    shuffled[order] = cluster_vectors(vectors[order], cut=0.6)
    assert _same_partition(labels, shuffled)


def test_matches_exact_average_linkage():
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    rng = np.random.default_rng(4)
    vectors, _ = _people(rng, [30, 20, 10, 10, 5, 5, 2, 1], spread=0.5)
    tree = hierarchy.linkage(vectors, "average", metric="cosine")
    for cut in (0.4, 0.55, 0.7):
        exact = drop_small(hierarchy.fcluster(tree, 1 - cut, "distance"), 1)
        assert _same_partition(engine.average_linkage(vectors, cut, neighbours=8), exact)


def test_a_chain_of_look_alikes_does_not_merge_two_people():
    # Two tight people joined by a path of in-between faces: single linkage (connected components) merges
    # them through the path, average linkage keeps them apart.
    rng = np.random.default_rng(5)
    a, b = np.eye(16)[0], np.eye(16)[1]
    steps = [a + (b - a) * t for t in np.linspace(0.1, 0.9, 9)]
    group_a = [a + rng.normal(size=16) * 0.05 for _ in range(10)]
    group_b = [b + rng.normal(size=16) * 0.05 for _ in range(10)]
    vectors = np.array(group_a + steps + group_b)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = cluster_vectors(vectors, cut=0.9, min_faces=3)
    assert labels[0] != labels[-1]
    assert len(set(labels[:10].tolist())) == 1 and len(set(labels[-10:].tolist())) == 1


def test_empty_and_single_inputs():
    assert cluster_vectors(np.zeros((0, 128), np.float32)).shape == (0,)
    assert cluster_vectors(np.eye(128, dtype=np.float32)[:1]).tolist() == [-1]
    with pytest.raises(ValueError):
        cluster_vectors(np.zeros(5))


def test_ids_follow_overlap_and_are_never_reused():
    previous = [
        PreviousGroup("g0001", {"a1", "a2", "a3", "a4"}, np.eye(4, dtype=np.float32)[0]),
        PreviousGroup("g0002", {"b1", "b2", "b3"}, np.eye(4, dtype=np.float32)[1]),
        PreviousGroup("g0003", {"c1", "c2", "c3"}, np.eye(4, dtype=np.float32)[2]),
    ]
    groups = [["b1", "b2", "b3", "b4"], ["a1", "a2", "a3"], ["a4", "x1", "x2"], ["y1", "y2", "y3"]]
    centroids = np.array([np.eye(4)[1], np.eye(4)[0], np.eye(4)[0], np.eye(4)[3]], np.float32)
    ids, next_number = assign_ids(groups, centroids, previous, 4, cut=0.9)
    # b keeps its id; a split in two keeps its id on the bigger part; c is gone and its id is not reused.
    assert ids == ["g0002", "g0001", "g0004", "g0005"]
    assert next_number == 6


def test_an_unmatched_group_takes_an_old_id_by_centroid():
    previous = [PreviousGroup("g0007", {"old1", "old2", "old3"}, np.eye(4, dtype=np.float32)[0])]
    ids, _ = assign_ids([["new1", "new2", "new3"]], np.eye(4, dtype=np.float32)[:1], previous, 8, cut=0.9)
    assert ids == ["g0007"]


def test_vector_cache_round_trip_and_other_model(tmp_path: Path):
    path = tmp_path / "vectors.npz"
    cache = VectorCache(path, "model-a")
    face = engine.CachedFace((1.0, 2.0, 30.0, 40.0), 0.99, ((1.0, 1.0),) * 5, np.arange(4, dtype=np.float32))
    cache.put("s1", [face, face])
    cache.put("s2", [])
    cache.save()
    again = VectorCache(path, "model-a")
    assert len(again.get("s1")) == 2 and again.get("s2") == [] and again.get("s3") is None
    assert again.get("s1")[1].box == face.box and np.array_equal(again.get("s1")[0].vector, face.vector)
    assert VectorCache(path, "model-b").get("s1") is None
    path.write_bytes(b"not an npz")
    assert VectorCache(path, "model-a").get("s1") is None  # a corrupt cache is rebuilt, never fatal


# --- the folder run with a stand-in face finder --------------------------------------------------------

_DIM = 32


def _write_photo(path: Path, person: int, variant: int) -> None:
    """A flat-colour 'photo' whose colour says who is in it (and a little which shot)."""
    rng = np.random.default_rng(person)
    base = rng.integers(0, 256, size=3)
    pixels = np.full((40, 40, 3), base, np.uint8)
    pixels[0, 0] = (variant * 7) % 256  # a different file content per variant
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


class FakeFaces:
    """faces_of: one face per photo whose vector is the person's direction (from the photo's colour) plus jitter."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray):
        self.calls += 1
        colour = image[20, 20].astype(np.int64)
        if (colour == 0).all():
            return []  # black photos hold no face
        seed = int(colour[0]) * 65536 + int(colour[1]) * 256 + int(colour[2])
        direction = np.random.default_rng(seed).normal(size=_DIM)
        jitter = np.random.default_rng(int(image[0, 0, 0])).normal(size=_DIM) * 0.1
        vector = direction / np.linalg.norm(direction) + jitter / np.sqrt(_DIM)
        face = Face(
            (5.0, 5.0, 35.0, 35.0), 0.99, ((12.0, 15.0), (28.0, 15.0), (20.0, 22.0), (14.0, 29.0), (26.0, 29.0))
        )
        return [(face, (vector / np.linalg.norm(vector)).astype(np.float32))]


def _run(photos: Path, state: Path, faces_of, **kwargs) -> ClusterResult:
    return cluster_folder(photos, faces_of, state, model="fake", cut=0.8, progress=False, workers=1, **kwargs)


def test_folder_run_groups_people_and_a_rerun_embeds_only_new_photos(tmp_path: Path):
    photos, state = tmp_path / "photos", tmp_path / "state"
    for person, count in ((1, 5), (2, 4), (3, 1)):
        for variant in range(count):
            _write_photo(photos / f"p{person}_{variant}.png", person, variant)
    finder = FakeFaces()
    first = _run(photos, state, finder)
    assert finder.calls == 10
    assert sorted(c.size for c in first.clusters) == [4, 5]
    assert len(first.unclustered) == 1 and first.problems == []
    assert {c.id for c in first.clusters} == {"g0001", "g0002"}
    by_person = {Path(c.faces[0].image).name[:2]: c.id for c in first.clusters}

    _write_photo(photos / "p1_9.png", 1, 9)  # a new photo of person 1
    for variant in range(3):
        _write_photo(photos / f"new/p4_{variant}.png", 4, variant)  # a new person
    second = _run(photos, state, finder)
    assert finder.calls == 14  # only the 4 new photos were embedded
    ids = {Path(c.faces[0].image).name[:2]: c.id for c in second.clusters}
    assert ids["p1"] == by_person["p1"] and ids["p2"] == by_person["p2"]
    assert ids["p4"] == "g0003"
    assert [c.size for c in second.clusters] == [6, 4, 3]  # biggest first


def test_an_out_folder_inside_the_photos_is_not_clustered_again(tmp_path: Path):
    for name in ("visible", "default"):
        photos = tmp_path / name
        for variant in range(4):
            _write_photo(photos / f"a{variant}.png", 1, variant)
        out = photos / "clusters" if name == "visible" else engine.default_out_dir(photos)
        for _ in range(2):
            result = _run(photos, out, FakeFaces())
            write_contact_sheet(result, out)
            assert result.photos == 4 and [c.size for c in result.clusters] == [4]


def test_to_dict_is_exactly_the_documented_shape(tmp_path: Path):
    photos = tmp_path / "photos"
    for variant in range(3):
        _write_photo(photos / f"a{variant}.png", 1, variant)
    _write_photo(photos / "b.png", 2, 0)
    result = _run(photos, tmp_path / "state", FakeFaces())
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"clusters", "unclustered", "known"}
    assert set(data["clusters"][0]) == {"id", "size", "faces"}
    assert data["clusters"][0]["size"] == 3
    assert set(data["clusters"][0]["faces"][0]) == {"image", "box", "score"}
    assert data["clusters"][0]["faces"][0]["box"] == [5.0, 5.0, 35.0, 35.0]
    assert len(data["unclustered"]) == 1 and data["known"] == []


def test_known_faces_are_named_and_kept_out_of_groups(tmp_path: Path):
    photos = tmp_path / "photos"
    for person in (1, 2):
        for variant in range(3):
            _write_photo(photos / f"p{person}_{variant}.png", person, variant)
    result = _run(
        photos,
        tmp_path / "state",
        FakeFaces(),
        name_vectors=lambda vectors: ["Ada" if i < 3 else None for i in range(len(vectors))],
    )
    assert [k.name for k in result.known] == ["Ada"] and len(result.known[0].faces) == 3
    assert len(result.clusters) == 1 and result.clusters[0].size == 3
    assert result.to_dict()["known"][0]["name"] == "Ada"


def test_empty_folder_no_faces_and_unreadable_files_are_reported_not_raised(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(empty, tmp_path / "s1", FakeFaces())
    assert result.clusters == [] and result.unclustered == [] and len(result.problems) == 1
    assert "no images" in result.problems[0].reason

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photos / "black.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (photos / "empty.png").write_bytes(b"")
    _write_photo(photos / "a.png", 1, 0)
    shutil.copy(photos / "a.png", photos / "copy_of_a.png")
    result = _run(photos, tmp_path / "s2", FakeFaces())
    reasons = {Path(p.image).name: p.reason for p in result.problems}
    assert set(reasons) == {"black.png", "broken.jpg", "empty.png", "copy_of_a.png"}
    assert reasons["black.png"] == "no face found" and "same content" in reasons["copy_of_a.png"]
    assert len(result.unclustered) == 1


def test_group_faces_gives_what_enrolling_needs(tmp_path: Path):
    photos, state = tmp_path / "photos", tmp_path / "state"
    for variant in range(3):
        _write_photo(photos / f"a{variant}.png", 1, variant)
    result = _run(photos, state, FakeFaces())
    faces = group_faces(state, result.clusters[0].id)
    assert sorted(f.image for f in faces) == sorted(f.image for f in result.clusters[0].faces)
    assert all(f.vector is not None and f.vector.shape == (_DIM,) and len(f.photo_sha256) == 64 for f in faces)
    with pytest.raises(engine.ClusterStateError):
        group_faces(state, "g9999")


def test_contact_sheet_has_every_group_and_an_enroll_ready_layout(tmp_path: Path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    for person, count in ((1, 4), (2, 3), (3, 1)):
        for variant in range(count):
            _write_photo(photos / f"p{person}_{variant}.png", person, variant)
    result = _run(photos, out, FakeFaces(), name_vectors=lambda v: [None] * (len(v) - 1) + ["Ada"])
    page = write_contact_sheet(result, out)
    text = page.read_text("utf-8")
    for group in result.clusters:
        assert f"id='{group.id}'" in text and f"facerec name {group.id} NAME" in text
        assert len(list((out / "groups" / group.id).glob("*.jpg"))) == group.size
    assert "Ada" in text and (out / "known" / "Ada").is_dir()
    assert text.count("data:image/jpeg;base64,") == 8  # every face, inlined
    assert "unclustered" in text
    # a second sheet replaces the groups folder rather than mixing in stale crops
    result.clusters = result.clusters[:1]
    write_contact_sheet(result, out)
    assert [p.name for p in (out / "groups").iterdir()] == [result.clusters[0].id]


# --- real photos through the real pipeline ---------------------------------------------------------


@pytest.fixture(scope="module")
def faces_of():
    from facerec import FacePipeline

    return engine.pipeline_faces_of(FacePipeline.load("dlib-resnet", device="cpu"))


def _lfw(shared: Path, name: str, count: int, start: int = 0) -> list[Path]:
    photos = sorted((shared / "faces" / "lfw" / name).glob("*.jpg"))[start : start + count]
    if len(photos) < count:
        pytest.skip(f"LFW {name} is not complete in {shared}")
    return photos


def test_two_people_and_a_stranger_cluster_apart_and_keep_ids(tmp_path: Path, shared: Path, faces_of):
    photos, state = tmp_path / "photos", tmp_path / "state"
    photos.mkdir()
    for src in _lfw(shared, "Colin_Powell", 4) + _lfw(shared, "Serena_Williams", 4) + _lfw(shared, "Aaron_Eckhart", 1):
        shutil.copy(src, photos / src.name)
    first = cluster_folder(photos, faces_of, state, model="dlib-resnet-test", progress=False, workers=1)
    assert len(first.clusters) == 2, first.to_dict()
    people = {c.id: {Path(f.image).name.rsplit("_", 1)[0] for f in c.faces} for c in first.clusters}
    assert sorted(map(sorted, people.values())) == [["Colin_Powell"], ["Serena_Williams"]]
    assert sorted(c.size for c in first.clusters) == [4, 4]
    # the stranger stays out (LFW photos may hold a bystander's face too: it stays out as well)
    assert "Aaron_Eckhart_0001.jpg" in {Path(f.image).name for f in first.unclustered}
    powell = next(g for g, names in people.items() if names == {"Colin_Powell"})

    for src in _lfw(shared, "Colin_Powell", 2, start=4) + _lfw(shared, "Junichiro_Koizumi", 3):
        shutil.copy(src, photos / src.name)
    second = cluster_folder(photos, faces_of, state, model="dlib-resnet-test", progress=False, workers=1)
    after = {c.id: {Path(f.image).name.rsplit("_", 1)[0] for f in c.faces} for c in second.clusters}
    assert after[powell] == {"Colin_Powell"} and next(c for c in second.clusters if c.id == powell).size == 6
    assert set(after) == set(people) | {"g0003"} and after["g0003"] == {"Junichiro_Koizumi"}

    page = write_contact_sheet(second, tmp_path / "out")
    text = page.read_text("utf-8")
    assert all(f"id='{gid}'" in text for gid in after)
    for group in second.clusters:
        assert len(list((tmp_path / "out" / "groups" / group.id).glob("*.jpg"))) == group.size


def test_real_photo_without_faces_and_a_group_photo(tmp_path: Path, shared: Path, faces_of):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(shared / "faces" / "nofaces" / "dogs.jpg", photos / "dogs.jpg")
    shutil.copy(shared / "faces" / "unknown" / "obama_and_biden.jpg", photos / "obama_and_biden.jpg")
    result = cluster_folder(photos, faces_of, tmp_path / "state", model="dlib-resnet-test", progress=False, workers=1)
    assert [(Path(p.image).name, p.reason) for p in result.problems] == [("dogs.jpg", "no face found")]
    assert len(result.unclustered) >= 3  # every face of a group photo, each alone


# --- the commands, as a user runs them -------------------------------------------------------------


def _cli(*args: object, expect: int = 0) -> dict:
    from click.testing import CliRunner

    from facerec.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.stderr)
    assert "Traceback" not in result.output + result.stderr
    return json.loads(result.stdout) if expect == 0 and "--json" in args else {"stderr": result.stderr}


def test_cluster_name_identify_rename_merge(tmp_path: Path, shared: Path):
    photos, gallery = tmp_path / "photos", tmp_path / "gallery"
    photos.mkdir()
    for src in _lfw(shared, "Colin_Powell", 4) + _lfw(shared, "Serena_Williams", 4) + _lfw(shared, "Aaron_Eckhart", 1):
        (photos / src.name).symlink_to(src)
    first = _cli("cluster", photos, "--gallery", gallery, "--json")
    assert len(first["clusters"]) == 2 and first["known"] == [] and Path(first["sheet"]).is_file()
    out = Path(first["out"])
    powell = next(c["id"] for c in first["clusters"] if "Colin_Powell" in c["faces"][0]["image"])
    named = _cli("name", powell, "Colin", "--out", out, "--gallery", gallery, "--json")
    assert named["added"] == 4 and named["people_total"] == 1
    assert _cli("name", powell, "Colin", "--out", out, "--gallery", gallery, "--json")["already"] == 4  # harmless twice

    # The named group is now a known person: identify names a new photo of him, and cluster reports him as known.
    new_photo = _lfw(shared, "Colin_Powell", 1, start=10)[0]
    found = _cli("identify", new_photo, "--gallery", gallery, "--json")
    assert [f["name"] for f in found["faces"]][:1] == ["Colin"]
    again = _cli("cluster", photos, "--gallery", gallery, "--json")
    assert [k["name"] for k in again["known"]] == ["Colin"] and len(again["known"][0]["faces"]) == 4, again["known"]
    assert [c["id"] for c in again["clusters"]] != [powell] and len(again["clusters"]) == 1
    serena = again["clusters"][0]["id"]
    _cli("name", serena, "Serena", "--out", out, "--gallery", gallery, "--json")

    # rename and merge keep every face; a rename onto an existing person is refused, not a silent merge.
    assert _cli("rename", "Colin", "Colin Powell", "--gallery", gallery, "--json")["faces"] == 4
    refused = _cli("rename", "Serena", "Colin Powell", "--gallery", gallery, expect=1)["stderr"]
    assert "already has a person named 'Colin Powell'" in refused and "facerec merge" in refused
    assert _cli("merge", "Serena", "Colin Powell", "--gallery", gallery, "--json")["faces"] == 4
    people = _cli("people", "--gallery", gallery, "--json")["people"]
    assert people == [{"name": "Colin Powell", "faces": 8}]
    assert "no group 'g9999'" in _cli("name", "g9999", "X", "--out", out, "--gallery", gallery, expect=1)["stderr"]
    assert "no such folder" in _cli("cluster", tmp_path / "nowhere", "--gallery", gallery, expect=1)["stderr"]
