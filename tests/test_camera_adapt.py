"""`facerec adapt --target`: the camera measured and synthesised, the distillation, the gate, and the command.

Units first, on real LFW chips: damage of a known size is read back, grey/noise/JPEG are measured, the gain
interval is what it says. Then small real runs (CPU, one or two epochs): the distillation loss falls and
damaged held-out faces land nearer their clean vectors; --target from a folder and a video; the inputs that
must change nothing; and the kept path with an exact rollback.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facerec import FaceRecognizer
from facerec.adapt import Scores, camera_gate
from facerec.camera import Camera, DetailScale, Look, Observation, jpeg_quality, noise_level
from facerec.camera_view import CameraView, Scene, as_camera_shows, join, scene, view_key
from facerec.cli import main
from facerec.cohort import CAMERA_STRANGERS_FILE, gallery_cohort
from facerec.decision import ScoreMap
from facerec.distil import DistilOptions, Held, OpenSet, damaged_probes, distil, gain_interval
from facerec.gallery import Gallery
from facerec.lfw import lfw_photos
from facerec.pipeline import FacePipeline


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shrink(source: Path, target: Path, longer_side: int) -> Path:
    """A photo as a distant camera shows it: shrunk so its longer side is `longer_side` px, enlarged back."""
    image = cv2.imread(str(source))
    height, width = image.shape[:2]
    scale = longer_side / max(height, width)
    small = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    target.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target), cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))
    return target


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.load("dlib-resnet", device="cpu")


@pytest.fixture(scope="module")
def lfw_people(shared: Path) -> dict[str, list[Path]]:
    photos = lfw_photos(shared / "faces" / "lfw")
    return {person: files for person, files in photos.items() if len(files) >= 6}


@pytest.fixture(scope="module")
def clean(pipeline, lfw_people) -> tuple[np.ndarray, np.ndarray, list[Scene]]:
    """Chips of 4 photos each of 8 LFW people, their labels, and the faces in their photos."""
    chips, labels, scenes = [], [], []
    for label, files in enumerate(list(lfw_people.values())[:8]):
        for path in files[:4]:
            image = pipeline.read(path)
            face = max(pipeline.detect(image), key=lambda f: f.score)
            chips.append(pipeline.chip(image, face))
            labels.append(label)
            scenes.append(scene(image, face))
    return np.stack(chips), np.array(labels), scenes


def observed(chips: np.ndarray, pipeline: FacePipeline, scenes: list[Scene]) -> list[Observation]:
    return [Observation(c, pipeline.embedder.face_width(s.face), 0.0, None) for c, s in zip(chips, scenes)]


# -- measuring and synthesising ------------------------------------------------------------------------
def test_damage_of_a_known_width_is_read_back(clean, pipeline):
    chips, _, scenes = clean
    scale = DetailScale.fit(chips)
    rng = np.random.default_rng(0)
    sharp = Camera.measure(observed(chips, pipeline, scenes), scale, "g")
    assert sharp.summary().face_width_px[1] > 60  # LFW faces are about 100 px wide in the chip
    assert sharp.worse_than(sharp) == []
    for width in (14.0, 30.0):
        camera = Camera((Look(width, False, 0.0, None, 128.0, 40.0),), "test")
        damaged = as_camera_shows(scenes, camera, pipeline, 0.0, rng)
        measured = Camera.measure(observed(damaged, pipeline, scenes), scale, "t")
        median = measured.summary().face_width_px[1]
        assert 0.7 * width < median < 1.35 * width, (width, median)
        assert measured.worse_than(sharp) and "px of detail" in measured.worse_than(sharp)[0]


def test_grey_noise_and_jpeg_are_measured(clean, pipeline, shared):
    chips, _, scenes = clean
    scale = DetailScale.fit(chips)
    ir = Camera((Look(500.0, True, 0.0, None, 100.0, 30.0),), "ir")
    grey = as_camera_shows(scenes, ir, pipeline, 0.0, np.random.default_rng(1))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    measured = Camera.measure(observed(grey, pipeline, scenes), scale, "ir").summary()
    assert measured.grey_share == 1.0 and abs(measured.brightness - 100) < 8 and abs(measured.contrast - 30) < 6

    photo = cv2.cvtColor(cv2.imread(str(shared / "faces" / "known" / "obama" / "obama.jpg")), cv2.COLOR_BGR2GRAY)
    quiet = noise_level(photo)
    noisy = np.clip(photo + np.random.default_rng(2).normal(0, 8.0, photo.shape), 0, 255).astype(np.uint8)
    assert quiet < 3.0 and 6.0 < noise_level(noisy) < 10.0

    for quality in (30, 75):
        ok, data = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok and abs(jpeg_quality(data.tobytes()) - quality) <= 2
    ok, png = cv2.imencode(".png", photo)
    assert jpeg_quality(png.tobytes()) is None


def test_gain_interval_resamples_photos_not_copies():
    rng = np.random.default_rng(0)
    right_before = rng.random(25) < 0.5
    right_after = right_before | (rng.random(25) < 0.5)
    before, after = np.repeat(right_before, 4), np.repeat(right_after, 4)  # 4 copies of each of 25 photos
    photo = np.repeat(np.arange(25), 4)
    gain, low, high = gain_interval(before, after, photo)
    assert gain == pytest.approx((right_after.sum() - right_before.sum()) / 25) and 0 < low < gain < high
    alone = gain_interval(before, after, np.arange(100))  # as if the copies were independent photos
    assert alone[2] - alone[1] < 0.7 * (high - low)  # they are not: the honest interval is wider
    same = gain_interval(before, before, np.arange(100))
    assert same == (0.0, 0.0, 0.0)
    assert all(np.isnan(v) for v in gain_interval(before[:0], after[:0], np.arange(0)))


def test_named_right_is_measured_at_the_operating_point_the_strangers_set():
    rng = np.random.default_rng(0)
    correct = rng.random(160) < 0.9
    before = OpenSet(correct, rng.normal(0.6, 0.1, 160), rng.normal(0.45, 0.1, 300))
    named = before.named(0.05)
    assert named.sum() == np.sum(correct & (before.best > np.sort(before.strangers)[285]))  # ceil(0.95 * 301)
    assert 0 < named.sum() < correct.sum() and not named[~correct].any()
    # Every score moved alike (another model's scale): the same probes named.
    assert (OpenSet(correct, before.best + 0.2, before.strangers + 0.2).named(0.05) == named).all()
    # The camera's strangers pushed away from the gallery: more probes clear the operating point.
    assert OpenSet(correct, before.best, before.strangers - 0.1).named(0.05).sum() > named.sum()
    assert not OpenSet(correct, before.best, before.strangers[:10]).named(0.05).any()  # 10 certify no 5%


@pytest.mark.parametrize(
    ("after", "gain", "kept", "said"),
    [
        (Scores(0.90, 0.99, 0.98, 0.70), (0.10, 0.04, 0.16), True, "named right 0.6000 -> 0.7000"),
        (Scores(0.90, 0.99, 0.98, 0.70), (0.10, -0.01, 0.20), False, "not above their noise"),
        (Scores(0.90, 0.97, 0.98, 0.70), (0.10, 0.04, 0.16), False, "clean check dropped by 0.0200"),
        (Scores(0.90, 0.99, 0.96, 0.70), (0.10, 0.04, 0.16), False, "clean photos dropped by 0.0200"),
    ],
)
def test_camera_gate_needs_a_gain_above_its_noise_and_no_clean_loss(after, gain, kept, said):
    decided, reason = camera_gate(Scores(0.80, 0.99, 0.98, 0.60), after, gain, 0.01)
    assert decided is kept and said in reason


def test_score_map_of_a_camera_maps_onto_damaged_strangers():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(12, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    labels = np.arange(12) // 2
    plain = ScoreMap.measure(base, base, labels)
    assert plain.mean == pytest.approx(plain.base_mean)
    damaged = ScoreMap.measure(base, base, labels, probes=base * 0.5)
    assert damaged.mean == pytest.approx(plain.base_mean * 0.5, abs=1e-6)


# -- distillation --------------------------------------------------------------------------------------
def test_distillation_loss_falls_and_a_student_that_got_worse_is_not_returned(pipeline, clean):
    """On a tiny set with a high learning rate the student fits its training copies (the loss falls) while
    fresh damage of the same photos is identified worse: early stopping must then return the base network
    itself, weight for weight. Whether distillation helps is bench/adapt.py's to measure, on enough photos."""
    import torch

    chips, labels, scenes = clean
    base = pipeline.embedder
    camera = Camera((Look(16.0, False, 0.0, None, 120.0, 40.0),), "16 px")
    rng = np.random.default_rng(2)
    damaged = np.stack([as_camera_shows(scenes, camera, pipeline, 0.0, rng) for _ in range(2)])
    fresh = damaged_probes(scenes, labels, camera, pipeline, 0.0, copies=1, seed=7)
    options = DistilOptions(epochs=2, lr=1e-4, batch_size=16, patience=5)
    result = distil(base, chips, labels, damaged, Held(chips, labels, fresh), options, progress=False)
    assert len(result.losses) == 2 and result.losses[-1] < result.losses[0]
    assert len(result.val_accuracy) == 3 and result.val_accuracy[0] == 1.0
    if result.best_epoch == 0:
        for mine, theirs in zip(result.module.state_dict().values(), base.module.state_dict().values()):
            assert torch.equal(mine, theirs)
    else:
        assert result.val_accuracy[result.best_epoch] >= result.val_accuracy[0]


# -- the command ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lfw_gallery(tmp_path_factory, lfw_people) -> tuple[Path, Path, Path]:
    """A gallery of 8 LFW people (4 clean photos each), and a target folder: 12 other people's photos as a
    camera 40 px across shows them. Returns (gallery, enrolled photos, target)."""
    root = tmp_path_factory.mktemp("camera")
    people = list(lfw_people.items())
    for person, files in people[:8]:
        (root / "photos" / person).mkdir(parents=True)
        for path in files[:4]:
            (root / "photos" / person / path.name).symlink_to(path)
    for person, files in people[8:20]:
        shrink(files[0], root / "target" / f"{person}.png", 40)
    FaceRecognizer(root / "gallery", model="dlib-resnet", device="cpu").enroll(root / "photos")
    return root / "gallery", root / "photos", root / "target"


def _copy(gallery: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(gallery, tmp_path / "gallery")
    return tmp_path / "gallery"


def test_target_folder_is_measured_trained_on_and_gated(lfw_gallery, tmp_path, monkeypatch):
    gallery = _copy(lfw_gallery[0], tmp_path)
    monkeypatch.setenv("FACEREC_MODELS", str(tmp_path / "models"))
    before = digest(gallery / "gallery.sqlite")
    args = ["adapt", "--gallery", str(gallery), "--target", str(lfw_gallery[2]), "--epochs", "1", "--dry-run"]
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    target, clean = report["camera"]["target"], report["camera"]["gallery"]
    assert target["faces"] >= 10 and target["face_width_px"][1] < 30 < clean["face_width_px"][1]
    assert report["epochs_run"] == 1 and len(report["gain"]) == 3 and report["gain"][1] <= report["gain"][0]
    assert report["before"]["named"] is None and report["after"]["named"] is None  # too few faces to set it
    assert report["general_check"].startswith("identification among 2 people held back")
    assert report["kept"] is False  # --dry-run keeps nothing, whatever the gate said
    assert digest(gallery / "gallery.sqlite") == before and not (tmp_path / "models" / "adapted").exists()


def test_target_video_is_sampled_and_measured(pipeline, shared, tmp_path, clean):
    from facerec.target import read_target

    capture = cv2.VideoCapture(str(shared / "video" / "obama_podium.mp4"))
    writer = cv2.VideoWriter(str(tmp_path / "far.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (854, 480))
    for _ in range(60):  # 2 s
        ok, frame = capture.read()
        assert ok
        writer.write(cv2.resize(cv2.resize(frame, (214, 120), interpolation=cv2.INTER_AREA), (854, 480)))
    writer.release()
    capture.release()
    found = read_target(str(tmp_path / "far.avi"), pipeline)
    assert found.kind == "video" and found.pictures == 4  # two frames a second
    assert len(found.observations) >= 3
    camera = Camera.measure(found.observations, DetailScale.fit(clean[0]), "video")
    assert camera.summary().face_width_px[1] < 0.6 * np.median([o.chip_width for o in found.observations])


@pytest.mark.parametrize(
    "make_target, message",
    [
        (lambda shared, tmp, photos: shared / "faces" / "nofaces", "no face found in 1 photos"),
        (lambda shared, tmp, photos: photos, "nothing to adapt to"),
        (lambda shared, tmp, photos: _garbage_video(tmp), "cannot open video source"),
        (lambda shared, tmp, photos: tmp / "missing.mp4", "no such file or folder"),
    ],
    ids=["no-faces", "no-worse", "unreadable-video", "missing"],
)
def test_bad_targets_change_nothing(lfw_gallery, shared, tmp_path, monkeypatch, make_target, message):
    gallery = _copy(lfw_gallery[0], tmp_path)
    monkeypatch.setenv("FACEREC_MODELS", str(tmp_path / "models"))
    before = digest(gallery / "gallery.sqlite")
    target = make_target(shared, tmp_path, lfw_gallery[1])
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(main, ["adapt", "--gallery", str(gallery), "--target", str(target), *extra])
        assert result.exit_code != 0 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert digest(gallery / "gallery.sqlite") == before and not (tmp_path / "models" / "adapted").exists()


def _garbage_video(folder: Path) -> Path:
    path = folder / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


def test_kept_camera_model_is_used_shown_and_rolled_back_exactly(lfw_gallery, lfw_people, tmp_path, monkeypatch):
    """The keeping mechanics of a camera adaptation with camera views: the gallery's faces, and a person
    enrolled after adapting, are stored joined with their views exactly as the record says to make them; the
    target's faces become the gallery's camera strangers (the operating points are calibrated on them);
    rollback gives back the base vectors, embeds the later person with the base model and drops the camera
    strangers. Whether an adaptation earns keeping is measured by bench/adapt.py."""
    import facerec.adapt

    gallery = _copy(lfw_gallery[0], tmp_path)
    models = tmp_path / "models"
    monkeypatch.setenv("FACEREC_MODELS", str(models))
    monkeypatch.setattr(facerec.adapt, "camera_gate", lambda before, after, gain, max_drop: (True, "kept by the test"))
    monkeypatch.setattr(facerec.adapt, "MIN_STRANGERS", 10)  # the target holds 12 faces
    with Gallery.open(gallery) as g:
        base_vectors = g.vectors()[1].copy()
    args = ["adapt", "--gallery", str(gallery), "--target", str(lfw_gallery[2]), "--face-size", "16", "--grey"]
    args += ["--epochs", "1", "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--views", "on", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["kept"] and report["camera"]["target"]["grey_share"] == 1.0
    assert report["camera"]["target"]["face_width_px"][1] == 16.0 and report["camera"]["views"]["used"]
    assert report["camera"]["operating_points"] == "calibrated on the camera's own faces (12 strangers, raw cosine)"
    # The gate photos named right at the operating point 12 faces set: none certified at 5%, so none named.
    assert report["before"]["named"] == report["after"]["named"] == 0.0
    with np.load(gallery / CAMERA_STRANGERS_FILE) as strangers:
        assert json.loads(str(strangers["provenance"]))["weights_sha256"] == digest(Path(report["checkpoint"]))
        assert len(strangers["normalisation"]) == 0 and len(strangers["calibration"]) == 12
    camera_cohort = gallery_cohort(gallery, digest(Path(report["checkpoint"])))
    assert camera_cohort is not None and camera_cohort.raw and camera_cohort.deployment
    later = tmp_path / "later"
    person, files = list(lfw_people.items())[30]
    (later / person).mkdir(parents=True)
    (later / person / files[0].name).symlink_to(files[0])
    FaceRecognizer(gallery, device="cpu").enroll(later)
    (found,) = FaceRecognizer(gallery, device="cpu").identify_paths([files[1]], top_k=1)
    top = found.faces[0].candidates[0]
    assert top.score == pytest.approx(top.similarity)  # raw cosines against the camera's own faces
    with Gallery.open(gallery) as g:  # on the checkpoint now (whose weights may equal the base: best epoch 0)
        assert g.meta.weights_path == report["checkpoint"] and g.meta.adaptation is not None
        assert g.meta.adaptation.record["camera"]["target"]["grey_share"] == 1.0
        assert g.meta.adaptation.camera_view is not None
        view = CameraView.from_record(g.meta.adaptation.camera_view)
        ids, stored = g.vectors()
        records = dict(g.records())
    assert view.camera.summary().grey_share == 1.0 and view.copies == 4
    adapted = FacePipeline.load("dlib-resnet", weights=Path(report["checkpoint"]), device="cpu")
    for face_id in (int(ids[0]), int(ids[-1])):  # a face stored when adapting, and the one enrolled since
        record = records[face_id]
        image = adapted.read(record.source)
        face = adapted.face_at(image, record.box)
        assert face is not None
        views = view.face_views(image, face, view_key(record.sha256, record.box), adapted)[:, None]
        expected = view.vectors(adapted.embedder, adapted.chip(image, face)[None], views)[0]
        assert float(expected @ stored[list(ids).index(face_id)]) > 0.9999, record.source
        plain = adapted.embed([adapted.chip(image, face)])[0]
        assert float(plain @ stored[list(ids).index(face_id)]) < 0.999  # joined, not the plain vector
    info = CliRunner().invoke(main, ["info", "--gallery", str(gallery)])
    assert info.exit_code == 0 and "camera" in info.output and "16 px" in info.output, info.output
    assert "joined with their view" in info.output and "the adapted camera's faces" in info.output
    result = CliRunner().invoke(main, ["adapt", "--rollback", "--gallery", str(gallery), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["re_embedded"] == 1 and not (gallery / CAMERA_STRANGERS_FILE).exists()
    with Gallery.open(gallery) as g:
        assert g.meta.adaptation is None and np.array_equal(g.vectors()[1][:-1], base_vectors)
        base = FacePipeline.load("dlib-resnet", device="cpu")
        image = base.read(files[0])
        assert float(base.vectors(image, [base.main_face(image)[0]])[0] @ g.vectors()[1][-1]) > 0.9999


def test_camera_views_are_seeded_by_their_face_and_joined_alike(clean, pipeline):
    chips, _, scenes = clean
    view = CameraView(Camera((Look(14.0, True, 3.0, 60, 120.0, 40.0),), "test"), 0.5, copies=2)
    keys = [view_key(f"photo{i}", s.face.box) for i, s in enumerate(scenes[:3])]
    together = view.views(scenes[:3], keys, pipeline)
    assert together.shape == (2, 3, *chips.shape[1:])
    alone = view.views(scenes[2:3], keys[2:3], pipeline)
    assert np.array_equal(alone[:, 0], together[:, 2])  # a face's view does not depend on the others viewed
    assert not np.array_equal(together[0, 2], together[1, 2])  # its copies differ
    assert not np.array_equal(view.views(scenes[2:3], ["other"], pipeline), alone)
    assert np.array_equal(together[..., 0], together[..., 1])  # grey, as the camera is
    assert CameraView.from_record(json.loads(json.dumps(view.to_record()))) == view

    clean_vectors = pipeline.embed(chips[:3])
    same = join(clean_vectors, np.stack([clean_vectors, clean_vectors]))
    assert np.allclose(same, clean_vectors, atol=1e-6)
    joined = view.vectors(pipeline.embedder, chips[:3], together)
    assert np.allclose(np.linalg.norm(joined, axis=1), 1.0, atol=1e-5)
    damaged = pipeline.embed(together.reshape(-1, *chips.shape[1:])).reshape(2, 3, -1)
    assert np.all((joined * clean_vectors).sum(axis=1) > (damaged * clean_vectors).sum(axis=2).mean(axis=0))
