"""facerec.align's dlib template checked against dlib's own chips, and its maths checked on synthetic data.

`aligned_chip(image, mtcnn_landmarks)` is meant to reproduce `dlib.get_face_chip(img, shape, size=150,
padding=0.25)` cut from dlib's 5-point shape predictor on dlib's HOG boxes, the chips dlib's ResNet was
trained on. On real photos each dlib detection is paired with the MTCNN face that overlaps it most, and
both chips are compared:

* geometry: dlib's 5-point predictor run on both chips (the whole chip as its rectangle) must put its
  points in nearly the same places, with no systematic offset (which is what a wrong template shows as);
* descriptors: dlib's ResNet (facerec's port, equal to dlib's to 1e-6) must give nearly the same
  descriptor for both chips, far below dlib's same-person threshold 0.6, and our chip must always be
  closer to dlib's chip of the same face than to any other person's.

The real-photo tests need dlib's Python bindings (test-only: `pip install dlib-bin`) and skip without
them; the unit tests of `similarity_transform` and `aligned_chip` need only numpy and OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facerec.align import DLIB_TEMPLATE_150, LANDMARK_WEIGHTS, aligned_chip, similarity_transform

DLIB_MISSING = "dlib's Python bindings are not installed (test-only: `pip install dlib-bin`)"

# Photo under ../shared/faces -> who each dlib detection is, left to right (by dlib box's left edge).
# Several photos per person so "closer to the same face than to any other person" is a real test.
PHOTOS: dict[str, tuple[str, ...]] = {
    "known/obama/obama.jpg": ("obama",),
    "known/obama/obama2.jpg": ("obama",),
    "known/biden/biden.jpg": ("biden",),
    "known/biden/biden2.jpg": ("biden",),
    "known/kit_harington/john1.jpeg": ("kit",),
    "known/kit_harington/john2.jpeg": ("kit",),
    "known/rose_leslie/img1.jpg": ("rose",),
    "known/rose_leslie/img2.jpg": ("rose",),
    "unknown/obama_and_biden.jpg": ("biden", "obama", "girl"),  # the girl bottom right is a third person
    "unknown/kit_with_rose.jpg": ("rose", "kit"),
    "lfw/George_W_Bush/George_W_Bush_0001.jpg": ("bush",),
    "lfw/George_W_Bush/George_W_Bush_0002.jpg": ("bush",),
    "lfw/Colin_Powell/Colin_Powell_0001.jpg": ("powell",),
    "lfw/Colin_Powell/Colin_Powell_0002.jpg": ("powell",),
    "lfw/Serena_Williams/Serena_Williams_0001.jpg": ("serena",),
    "lfw/Serena_Williams/Serena_Williams_0002.jpg": ("serena",),
    "lfw/Tony_Blair/Tony_Blair_0001.jpg": ("blair",),  # head turned ~45 degrees: the hardest face here
    "lfw/Tony_Blair/Tony_Blair_0002.jpg": ("blair",),
}


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def one_torch_thread():
    """MTCNN and the ResNet with one thread: on 2 busy cores, 2 spinning threads are 10-30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def paired(shared: Path, tmp_path_factory, one_torch_thread) -> dict:
    """Every dlib face in PHOTOS with its MTCNN twin: both chips, dlib's points on both, both descriptors."""
    dlib = pytest.importorskip("dlib", reason=DLIB_MISSING)
    from facerec.detect import Detector
    from facerec.embedders.dlib_resnet import find_model_file, load_dlib_resnet
    from facerec.images import read_image

    model_file = find_model_file()
    predictor_file = model_file.parent / "shape_predictor_5_face_landmarks.dat"
    if not predictor_file.is_file():
        pytest.skip(f"{predictor_file} is missing (face_recognition_models ships it)")
    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_file))
    detector = Detector("cpu")  # facerec's own settings: these are the chips facerec really makes
    whole_chip = dlib.rectangle(0, 0, 149, 149)

    def points(chip: np.ndarray) -> np.ndarray:
        return np.array([(p.x, p.y) for p in predictor(chip, whole_chip).parts()], np.float64)

    labels, ious, ours, theirs = [], [], [], []
    for rel, people in PHOTOS.items():
        image = read_image(shared / "faces" / rel)
        boxes = sorted(hog(image, 0), key=lambda r: r.left())
        assert len(boxes) == len(people), f"{rel}: dlib found {len(boxes)} faces, expected {people}"
        faces = detector.detect(image)
        assert faces, f"{rel}: MTCNN found no face"
        for person, rect in zip(people, boxes):
            box = (rect.left(), rect.top(), rect.right(), rect.bottom())
            face = max(faces, key=lambda f: _iou(box, f.box))
            labels.append(person)
            ious.append(_iou(box, face.box))
            theirs.append(dlib.get_face_chip(image, predictor(image, rect), size=150, padding=0.25))
            ours.append(aligned_chip(image, face.landmarks))

    model = load_dlib_resnet(tmp_path_factory.mktemp("models"))
    with torch.inference_mode():
        ours_d = model(torch.from_numpy(np.stack(ours)).permute(0, 3, 1, 2).float()).numpy()
        theirs_d = model(torch.from_numpy(np.stack(theirs)).permute(0, 3, 1, 2).float()).numpy()
    return {
        "labels": np.array(labels),
        "ious": np.array(ious),
        "ours_points": np.stack([points(c) for c in ours]),
        "theirs_points": np.stack([points(c) for c in theirs]),
        # distance[i, j]: our chip of face i vs dlib's chip of face j
        "distance": np.linalg.norm(ours_d[:, None] - theirs_d[None], axis=2),
    }


def test_every_dlib_face_has_an_mtcnn_twin(paired: dict) -> None:
    # Measured: 21 faces, box IoU 0.60-0.78 (dlib's HOG square sits inside MTCNN's taller box). Below
    # 0.5 would mean the pairing picked a different face.
    assert len(paired["labels"]) >= 8
    assert paired["ious"].min() > 0.5, paired["ious"].round(2)


def test_dlib_landmarks_land_in_the_same_places_on_both_chips(paired: dict) -> None:
    offset = paired["theirs_points"] - paired["ours_points"]  # (faces, 5 points, xy), in chip pixels
    distance = np.linalg.norm(offset, axis=2)
    # dlib's points come back as whole pixels, so about 0.5 px of every figure below is rounding.
    # Measured (21 faces, 150 px chips), mean distance per point (dlib's order: eye corners of the eye on
    # the image's right, outer then inner; same for the eye on the left; base of the nose):
    # 3.00, 1.91, 2.71, 2.15, 2.39 px; worst single point 7.6 px (Tony Blair's turned head: dlib aligns
    # on eye corners and nose, facerec also on the mouth).
    per_point_mean = distance.mean(axis=0)
    assert per_point_mean.max() < 4.0, f"mean distance per point {per_point_mean.round(2)} px"
    # Measured: mean over the 5 points 5.2 px on Tony_Blair_0001, 4.7 px on the girl in obama_and_biden,
    # 1.2-3.4 px on the other 19 faces.
    per_face_mean = distance.mean(axis=1)
    assert per_face_mean.max() < 7.0, f"mean distance per face {per_face_mean.round(2)} px"
    # A template that is off shows as the same offset on every face, not as scatter. Measured mean signed
    # offset per point: at most 1.0 px in either axis (eye corners ~0.9 px higher on dlib's chips).
    bias = offset.mean(axis=0)
    assert np.abs(bias).max() < 2.0, f"systematic offset (dlib - facerec) per point {bias.round(2)} px"


def test_descriptors_of_both_chips_agree(paired: dict) -> None:
    same_face = np.diag(paired["distance"])
    # Measured: 0.10-0.20 on 20 of 21 faces (median 0.135, mean 0.144), 0.30 on Tony_Blair_0001 (head
    # turned ~45 degrees): all far below dlib's same-person threshold 0.6, and below the 0.34-0.56
    # between two different photos of one person.
    assert np.median(same_face) < 0.2, same_face.round(3)
    assert np.mean(same_face < 0.25) >= 0.9, same_face.round(3)
    assert same_face.max() < 0.4, same_face.round(3)


def test_our_chip_is_nearest_to_dlibs_chip_of_the_same_face(paired: dict) -> None:
    distance, labels = paired["distance"], paired["labels"]
    other_person = labels[:, None] != labels[None, :]
    nearest_other = np.where(other_person, distance, np.inf).min(axis=1)
    same_face = np.diag(distance)
    # Measured: the nearest other person's dlib chip is 0.65-0.84 away, the same face's 0.10-0.30;
    # the smallest gap on any face is 0.40.
    failures = [
        f"{labels[i]} #{i}: same face {same_face[i]:.3f}, other person {nearest_other[i]:.3f}"
        for i in range(len(labels))
        if same_face[i] >= nearest_other[i]
    ]
    assert not failures, failures


# ------------------------------------------------------------------------------------------
# Pure unit tests: no dlib, no photos.


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rotation = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rotation, [[tx], [ty]]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("weights", [None, LANDMARK_WEIGHTS])
@pytest.mark.parametrize(
    "angle, scale, tx, ty", [(0.0, 1.0, 0.0, 0.0), (17.0, 1.7, 12.0, -30.0), (-120.0, 0.3, 400.0, 5.5)]
)
def test_similarity_transform_recovers_a_known_transform(weights, angle, scale, tx, ty) -> None:
    src = DLIB_TEMPLATE_150 * 2.3 + [40.0, 70.0]
    truth = _similarity(angle, scale, tx, ty)
    found = similarity_transform(src, _apply(truth, src), weights)
    assert found.shape == (2, 3)
    np.testing.assert_allclose(found, truth, atol=1e-9)


def test_similarity_transform_never_reflects() -> None:
    src = DLIB_TEMPLATE_150.copy()
    mirrored = src * [-1.0, 1.0]  # a mirror image: the best similarity must still be a rotation
    found = similarity_transform(src, mirrored)
    assert np.linalg.det(found[:, :2]) > 0


def test_a_low_weight_outlier_pulls_less() -> None:
    src = DLIB_TEMPLATE_150.copy()
    truth = _similarity(10.0, 1.3, 5.0, -7.0)
    dst = _apply(truth, src)
    dst[2] += [12.0, 9.0]  # the nose is badly off

    def error_on_the_good_points(weights) -> float:
        fitted = _apply(similarity_transform(src, dst, weights), src)
        return float(np.linalg.norm(fitted[[0, 1, 3, 4]] - dst[[0, 1, 3, 4]], axis=1).max())

    full = error_on_the_good_points(np.ones(5))
    light = error_on_the_good_points(np.array([1.0, 1.0, 0.1, 1.0, 1.0]))
    ignored = error_on_the_good_points(np.array([1.0, 1.0, 0.0, 1.0, 1.0]))
    # Measured: 3.1 px unweighted, 0.38 px with weight 0.1, 0 with weight 0.
    assert full > 2.0  # unweighted, one bad point drags the others by pixels
    assert light < 0.5 * full
    assert ignored < 1e-9  # weight 0: the other four fit exactly


def _bright_spots(chip: np.ndarray) -> np.ndarray:
    """Intensity-weighted centres of the bright blobs in a chip, as (x, y) rows."""
    grey = chip.max(axis=2).astype(np.float64)
    mask = (grey > 0.3 * grey.max()).astype(np.uint8)
    count, label_image = cv2.connectedComponents(mask, connectivity=8)
    ys, xs = np.mgrid[: grey.shape[0], : grey.shape[1]]
    centres = []
    for k in range(1, count):
        w = grey * (label_image == k)
        centres.append(((w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()))
    return np.array(centres)


@pytest.mark.parametrize("angle", [0.0, 25.0])
def test_aligned_chip_shrinks_a_big_face_onto_the_template(angle: float) -> None:
    # A "face" 5x the chip's scale (so aligned_chip halves it twice with the pyramid before warping),
    # possibly tilted: white dots at the landmarks of a black image must come out on the template.
    placed = _apply(_similarity(angle, 5.0, 300.0, 150.0), DLIB_TEMPLATE_150)
    image = np.zeros((1400, 1300, 3), np.uint8)
    for x, y in placed:
        cv2.circle(image, (round(x), round(y)), 6, (255, 255, 255), -1, lineType=cv2.LINE_AA)
    chip = aligned_chip(image, placed)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    spots = _bright_spots(chip)
    assert len(spots) == 5, spots
    distance = np.linalg.norm(spots[:, None] - DLIB_TEMPLATE_150[None], axis=2)
    # each template point has its own dot within 2 px (measured: 0.14 px at most, at 0 and 25 degrees)
    assert np.all(distance.min(axis=0) < 2.0), distance.min(axis=0).round(2)
    assert len(set(distance.argmin(axis=0))) == 5


def test_aligned_chip_does_not_alias_when_shrinking() -> None:
    # A 1-pixel checkerboard shrunk 5x is mid-grey once low-passed; sampled directly it stays black and
    # white. That is what the pyramid is for.
    placed = _apply(_similarity(7.0, 5.0, 200.0, 200.0), DLIB_TEMPLATE_150)
    board = (np.indices((1300, 1300)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = np.repeat(board[:, :, None], 3, axis=2)
    chip = aligned_chip(image, placed).astype(np.float64)
    matrix = similarity_transform(placed, DLIB_TEMPLATE_150, LANDMARK_WEIGHTS)
    naive = cv2.warpAffine(image, matrix, (150, 150)).astype(np.float64)
    inner = (slice(10, 140), slice(10, 140))
    # Measured: aligned_chip gives a flat 128 (std 0); a direct warpAffine gives std 42.
    assert abs(chip[inner].mean() - 127.5) < 10
    assert chip[inner].std() < 0.2 * naive[inner].std(), (chip[inner].std(), naive[inner].std())
