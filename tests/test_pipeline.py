"""FacePipeline, the gallery-free path: real photos of ../shared through the real dlib-resnet model."""

from __future__ import annotations

import numpy as np
import pytest

from facerec import FacePipeline
from facerec.errors import ImageError


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.load("dlib-resnet", device="cpu")


def test_faces_of_a_photo_come_with_unit_vectors(pipeline, shared):
    image = pipeline.read(shared / "faces/unknown/kit_with_rose.jpg")
    found = pipeline.faces(image)
    assert len(found) == 2 and found[0].face.area > found[1].face.area  # largest first
    vectors = np.stack([f.vector for f in found])
    assert vectors.shape == (2, 128) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors, pipeline.vectors(image, [f.face for f in found]), atol=1e-6)  # deterministic
    assert pipeline.faces(pipeline.read(shared / "faces/nofaces/dogs.jpg")) == []


def test_main_face_is_the_enrollment_rule(pipeline, shared):
    face, why = pipeline.main_face(pipeline.read(shared / "faces/known/paul_rudd/1.jpg"))
    assert face is not None and why == "" and face.score > 0.95
    none, why = pipeline.main_face(pipeline.read(shared / "faces/nofaces/dogs.jpg"))
    assert none is None and why == "no face found"
    # A group photo has no one main face.
    none, why = pipeline.main_face(pipeline.read(shared / "faces/groups/friends_cast.jpg"))
    assert none is None and why.startswith("ambiguous")


def test_load_photo_hashes_and_skips_known_photos(pipeline, shared, tmp_path):
    path = shared / "faces/known/paul_rudd/1.jpg"
    photo = pipeline.load_photo(path)
    assert photo.image is not None and len(photo.sha256) == 64
    assert pipeline.load_photo(path, skip={photo.sha256}).image is None  # known: hashed, never decoded
    (tmp_path / "not.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="not.jpg"):
        pipeline.load_photo(tmp_path / "not.jpg")


def test_face_at_finds_an_enrolled_box_again(pipeline, shared):
    image = pipeline.read(shared / "faces/unknown/kit_with_rose.jpg")
    faces = pipeline.detect(image)
    shifted = tuple(v + 3 for v in faces[1].box)
    assert pipeline.face_at(image, shifted) == faces[1]
    assert pipeline.face_at(image, (0.0, 0.0, 5.0, 5.0)) is None


def test_same_person_is_closer_than_another(pipeline, shared):
    def vector(path):
        image = pipeline.read(shared / path)
        face, _ = pipeline.main_face(image)
        return pipeline.vectors(image, [face])[0]

    obama, obama2, biden = (
        vector(p) for p in ("faces/known/obama/obama.jpg", "faces/unknown/obama1.jpg", "faces/known/biden/biden.jpg")
    )
    assert obama @ obama2 > 0.94 > obama @ biden


def test_a_smaller_minimum_face_is_a_new_pipeline_on_the_same_models(pipeline):
    video = pipeline.with_min_face(40)
    assert video.detector.min_face_size == 40 and pipeline.detector.min_face_size == 20
    assert video.embedder is pipeline.embedder
