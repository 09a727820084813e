"""Turning a detected face into the input a model expects. Knows nothing about where the face came from."""

from __future__ import annotations

import cv2
import numpy as np


def facenet_chip(image: np.ndarray, box: tuple[float, float, float, float], *, size: int = 160, margin: int = 14) -> np.ndarray:
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
