"""Detection on real photos, and the geometry of the model crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerec.align import facenet_chip
from facerec.detect import Detector
from facerec.images import read_image
from facerec.stream import iou


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector("cpu")


def test_every_face_with_landmarks(detector, shared):
    faces = detector.detect(read_image(shared / "faces/groups/friends_cast.jpg"))
    assert len(faces) == 6
    assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
    for face in faces:
        assert face.score >= 0.9 and len(face.landmarks) == 5
        x1, y1, x2, y2 = face.box
        left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
        assert x1 <= left_eye[0] < right_eye[0] <= x2
        assert y1 <= left_eye[1] < nose[1] < mouth_left[1] <= y2


def test_no_face_in_dogs(detector, shared):
    assert detector.detect(read_image(shared / "faces/nofaces/dogs.jpg")) == []


def test_large_image_is_downscaled_and_boxes_map_back(shared):
    image = read_image(shared / "faces/known/obama/obama.jpg")
    big = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    assert max(big.shape) > 1600
    small_faces = Detector("cpu").detect(image)
    big_faces = Detector("cpu", max_side=1600).detect(big)
    assert len(small_faces) == len(big_faces) == 1
    scaled = [v / 4 for v in big_faces[0].box]
    assert iou(scaled, small_faces[0].box) > 0.85
    assert np.allclose(np.array(big_faces[0].landmarks) / 4, small_faces[0].landmarks, atol=6)


def test_min_face_size(shared):
    image = read_image(shared / "faces/unknown/obama-240p.jpg")
    faces = Detector("cpu").detect(image)
    assert len(faces) == 1 and faces[0].width < 80
    assert Detector("cpu", min_face_size=120).detect(image) == []


def test_boxes_cut_by_the_border_are_clamped(detector, shared):
    image = read_image(shared / "faces/unknown/obama_partial_face.jpg")
    faces = detector.detect(image)
    assert faces
    h, w = image.shape[:2]
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def test_facenet_chip_geometry():
    image = np.zeros((200, 300, 3), np.uint8)
    image[50:150, 100:200] = 255  # a white square where the "face" box is
    chip = facenet_chip(image, (100, 50, 200, 150), size=160, margin=0)
    assert chip.shape == (160, 160, 3) and chip.dtype == np.uint8
    assert chip.min() == 255  # no margin: the box fills the chip
    with_margin = facenet_chip(image, (100, 50, 200, 150), size=160, margin=32)
    border = with_margin[:10].mean()
    assert border == 0 and with_margin[80, 80].min() == 255  # margin shows the black surroundings
    edge = facenet_chip(image, (-50, -50, 20, 20), size=160, margin=14)
    assert edge.shape == (160, 160, 3)
    outside = facenet_chip(image, (400, 300, 450, 350), size=160, margin=14)
    assert outside.shape == (160, 160, 3)
