"""Two photos, one question: the same person or not? Uses the model's verification (pairs) threshold."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Settings
from .detect import Detector, choose_main_face
from .embedders import Embedder
from .errors import NoFaceError
from .images import read_image


@dataclass
class VerifyResult:
    same: bool
    similarity: float
    threshold: float
    model: str
    faces: list[dict] = field(default_factory=list)  # per photo: image, box, score


def verify(
    image_a: str | Path,
    image_b: str | Path,
    embedder: Embedder,
    detector: Detector,
    *,
    threshold: float | None = None,
    settings: Settings | None = None,
) -> VerifyResult:
    """Compare the main face of each photo (the clearly largest confident one)."""
    settings = settings or Settings.from_env()
    chips, faces = [], []
    for path in (image_a, image_b):
        image = read_image(path, max_pixels=settings.max_image_pixels)
        face, why = choose_main_face(detector.detect(image), settings.enroll_min_score, settings.enroll_dominance)
        if face is None:
            raise NoFaceError(f"{path}: {why}")
        chips.append(embedder.chip(image, face))
        faces.append({"image": str(path), "box": [round(v, 1) for v in face.box], "score": round(face.score, 4)})
    a, b = embedder.embed(np.stack(chips))
    similarity = float(np.clip(a @ b, -1.0, 1.0))
    limit = embedder.spec.thresholds.verify if threshold is None else threshold
    return VerifyResult(similarity >= limit, round(similarity, 4), limit, embedder.spec.name, faces)
