"""The gallery's metadata, typed: what model and weights made its vectors, and what adapting changed.

Stored as key/value rows in the gallery database; this module is the only code that knows the keys.
Everything else reads and writes a `GalleryMeta`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..decision import ScoreMap
from ..errors import GalleryMismatchError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Adaptation:
    """An adapted gallery's record: the base weights to return to, how the checkpoint was made and
    measured (`record`: fingerprint, created, before, after, people, photos, general_check, source), the
    adapted model's score scale, and for a camera adaptation whose faces are joined with their camera views
    how to make a view (`camera_view.CameraView.to_record`), so that faces enrolled later are stored alike."""

    base_weights_path: str
    base_weights_sha256: str
    record: dict[str, Any]
    score_map: ScoreMap
    camera_view: dict[str, Any] | None = None


@dataclass(frozen=True)
class GalleryMeta:
    model: str
    dim: int
    weights_path: str
    weights_sha256: str
    created: str
    format_version: int = FORMAT_VERSION
    adaptation: Adaptation | None = None

    @classmethod
    def new(cls, model: str, dim: int, weights_path: Path, weights_sha256: str) -> GalleryMeta:
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(model, dim, str(weights_path), weights_sha256, created)

    @property
    def base_weights(self) -> tuple[str, str]:
        """(path, SHA-256) of the base model's weights: the adapted gallery's base, else its own."""
        if self.adaptation is not None:
            return self.adaptation.base_weights_path, self.adaptation.base_weights_sha256
        return self.weights_path, self.weights_sha256

    def adapted(self, weights_path: Path, weights_sha256: str, adaptation: Adaptation) -> GalleryMeta:
        return replace(self, weights_path=str(weights_path), weights_sha256=weights_sha256, adaptation=adaptation)

    def on_base(self) -> GalleryMeta:
        path, sha = self.base_weights
        return replace(self, weights_path=path, weights_sha256=sha, adaptation=None)

    # -- storage ---------------------------------------------------------------------------------
    @classmethod
    def from_rows(cls, rows: dict[str, str], gallery: Path) -> GalleryMeta:
        version = int(rows.get("format_version", "0"))
        if version != FORMAT_VERSION:
            raise GalleryMismatchError(
                f"gallery {gallery} has format version {version}; this facerec reads version {FORMAT_VERSION}: "
                "use the facerec release that wrote it, or enroll again into a new gallery"
            )
        adaptation = None
        if "adapted" in rows:
            adaptation = Adaptation(
                rows["base_weights_path"],
                rows["base_weights_sha256"],
                json.loads(rows["adapted"]),
                ScoreMap(**json.loads(rows["score_map"])),
                json.loads(rows["camera_view"]) if rows.get("camera_view") else None,
            )
        return cls(
            rows["model"],
            int(rows["dim"]),
            rows["weights_path"],
            rows["weights_sha256"],
            rows.get("created", ""),
            version,
            adaptation,
        )

    def to_rows(self) -> dict[str, str | None]:
        """Key/value rows; None deletes a key (an adaptation undone)."""
        adaptation = self.adaptation
        return {
            "format_version": str(self.format_version),
            "model": self.model,
            "dim": str(self.dim),
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "created": self.created,
            "base_weights_path": adaptation.base_weights_path if adaptation else None,
            "base_weights_sha256": adaptation.base_weights_sha256 if adaptation else None,
            "adapted": json.dumps(adaptation.record) if adaptation else None,
            "score_map": json.dumps(asdict(adaptation.score_map)) if adaptation else None,
            "camera_view": json.dumps(adaptation.camera_view) if adaptation and adaptation.camera_view else None,
        }

    def describe_adaptation(self) -> dict[str, Any] | None:
        """What `facerec info` shows about an adapted gallery, or None for one on its base model."""
        if self.adaptation is None:
            return None
        return {
            **self.adaptation.record,
            "checkpoint": self.weights_path,
            "base_weights": self.adaptation.base_weights_path,
        }
