"""Turning a detected face into the input a model expects. Knows nothing about where the face came from."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def facenet_chip(
    image: np.ndarray, box: tuple[float, float, float, float], *, size: int = 160, margin: int = 14
) -> np.ndarray:
    """The crop facenet-pytorch's InceptionResnetV1 was evaluated with.

    Same geometry as facenet_pytorch.extract_face: `margin` is in output pixels, so the box grows by
    margin/(size-margin) of its own size, is clamped to the image and resized to size x size.
    Returns RGB uint8 (size, size, 3).
    """
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    grow_x = margin * (x2 - x1) / (size - margin) / 2
    grow_y = margin * (y2 - y1) / (size - margin) / 2
    left, top = int(max(x1 - grow_x, 0)), int(max(y1 - grow_y, 0))
    right, bottom = int(min(x2 + grow_x, width)), int(min(y2 + grow_y, height))
    # A box that lies (almost) outside the image still yields a chip: keep at least one pixel.
    right, bottom = max(right, min(left + 1, width)), max(bottom, min(top + 1, height))
    left, top = min(left, right - 1), min(top, bottom - 1)
    crop = image[top:bottom, left:right]
    shrinking = crop.shape[0] > size or crop.shape[1] > size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


# Where MTCNN's five landmarks (left eye, right eye, nose, left and right mouth corner) fall, on average,
# inside the 150x150 chips that dlib's get_face_chip(size=150, padding=0.25) cuts from its own landmarks
# (measured on LFW). Warping MTCNN's points onto these gives the chips dlib's ResNet was trained on;
# tests/test_align_dlib.py checks it against dlib's own chips.
DLIB_TEMPLATE_150 = np.array(
    [[48.00, 46.09], [102.29, 46.05], [74.91, 78.38], [50.86, 105.64], [98.82, 105.67]], np.float64
)
# MTCNN's eyes land within ~2 px of the template, nose and mouth within 4-6 px: weight the fit by
# reliability (inverse variance, roughly) so the noisier points pull less.
LANDMARK_WEIGHTS = np.array([1.0, 1.0, 0.25, 0.25, 0.25])


def similarity_transform(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The 2x3 rotation+uniform scale+translation that maps src onto dst in weighted least squares (Umeyama)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s, d = src - mu_s, dst - mu_d
    cov = (d * w[:, None]).T @ s
    u, sigma, vt = np.linalg.svd(cov)
    e = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ e @ vt
    scale = np.trace(np.diag(sigma) @ e) / (w @ (s**2).sum(axis=1))
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_d - scale * rotation @ mu_s
    return matrix


def aligned_scale(
    landmarks: Sequence[Sequence[float]] | np.ndarray,
    template: np.ndarray = DLIB_TEMPLATE_150,
    size: int = 150,
    weights: np.ndarray = LANDMARK_WEIGHTS,
) -> float:
    """How many chip pixels one source pixel becomes in `aligned_chip`: how much a face was enlarged or shrunk."""
    matrix = similarity_transform(np.asarray(landmarks, np.float64), template * (size / 150.0), weights)
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def facenet_scale(box: tuple[float, float, float, float], *, size: int = 160, margin: int = 14) -> float:
    """`aligned_scale` for `facenet_chip`: the box grows by the margin and is resized to size x size."""
    return (size - margin) / max(box[2] - box[0], 1.0)


def aligned_chip(
    image: np.ndarray,
    landmarks: Sequence[Sequence[float]] | np.ndarray,
    template: np.ndarray = DLIB_TEMPLATE_150,
    size: int = 150,
    weights: np.ndarray = LANDMARK_WEIGHTS,
) -> np.ndarray:
    """A size x size chip with the face's landmarks warped onto the template.

    Big faces are first halved with a Gaussian pyramid (as dlib does), so shrinking by much more
    than 2x does not alias. Returns RGB uint8.
    """
    matrix = similarity_transform(np.asarray(landmarks, np.float64), template * (size / 150.0), weights)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    source = image
    if scale < 0.5:
        # Only the region that lands in the chip needs shrinking: crop it (with slack), then halve.
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse.T
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 4
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 4
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, image.shape[1]), min(y1, image.shape[0])
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            source = image[y0:y1, x0:x1]
            matrix = matrix.copy()
            matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
            while scale < 0.5 and min(source.shape[:2]) >= 4:
                source = cv2.pyrDown(source)
                matrix[:, :2] *= 2.0
                scale *= 2.0
    return cv2.warpAffine(
        np.ascontiguousarray(source), matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
