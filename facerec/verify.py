"""Two photos, one question: the same person or not? Uses the model's verification (pairs) threshold."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .decision import verify_threshold
from .errors import NoFaceError
from .pipeline import FacePipeline


@dataclass
class VerifyResult:
    same: bool
    similarity: float
    threshold: float
    model: str
    faces: list[dict[str, Any]] = field(default_factory=list)  # per photo: image, box, score

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(
    image_a: str | Path, image_b: str | Path, pipeline: FacePipeline, *, threshold: float | None = None
) -> VerifyResult:
    """Compare the main face of each photo (the clearly largest confident one)."""
    chips, faces = [], []
    for path in (image_a, image_b):
        image = pipeline.read(path)
        face, why = pipeline.main_face(image)
        if face is None:
            raise NoFaceError(f"{path}: {why}")
        chips.append(pipeline.chip(image, face))
        faces.append({"image": str(path), "box": [round(v, 1) for v in face.box], "score": round(face.score, 4)})
    a, b = pipeline.embed(chips)
    similarity = float(np.clip(a @ b, -1.0, 1.0))
    limit = verify_threshold(pipeline.model, threshold)
    return VerifyResult(similarity >= limit, round(similarity, 4), limit, pipeline.model, faces)
