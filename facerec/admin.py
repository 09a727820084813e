"""Looking after a gallery: who is in it, forgetting someone, and what a bug report needs to know.

None of this loads a model or imports torch: it reads the gallery and the installed package versions.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import __version__
from .config import Settings
from .decision import calibrate_gallery, identify_policy
from .embedders.registry import get_spec
from .errors import InputError
from .gallery import Gallery


def people(gallery_path: Path) -> dict[str, int]:
    with Gallery.open(gallery_path) as gallery:
        return gallery.people()


def forget(gallery_path: Path, name: str, settings: Settings) -> int:
    """Remove a person and all their vectors; returns how many faces were removed."""
    with Gallery.open_for_write(gallery_path, lock_timeout=settings.lock_timeout_s) as gallery:
        removed = gallery.remove_person(name)
    if removed == 0:
        raise InputError(f"no person named {name!r} in gallery {gallery_path}; see `facerec people`")
    return removed


def rename(gallery_path: Path, old: str, new: str, settings: Settings, *, merge: bool = False) -> int:
    """Rename a person, or merge them into another (`merge`); returns how many faces now carry the new name."""
    with Gallery.open_for_write(gallery_path, lock_timeout=settings.lock_timeout_s) as gallery:
        return gallery.rename_person(old, new, merge=merge)


def _finite(value: float) -> float | None:
    return round(value, 4) if value != float("inf") else None


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def info(gallery_path: Path, settings: Settings, device: str) -> dict[str, Any]:
    """Where things are, which model, thresholds and versions, how big the gallery is."""
    with Gallery.open(gallery_path) as gallery:
        counts = gallery.people()
        meta = gallery.meta
        index_kind = gallery.index_kind
        calibrated = calibrate_gallery(gallery)
    spec = get_spec(meta.model)
    photo, video = (identify_policy(meta, len(counts), video=v, calibrated=calibrated) for v in (False, True))
    warnings = []
    if calibrated is None:
        warnings.append("not calibrated (no cohort for this model's weights): thresholds are LFW's, by gallery size")
    elif not calibrated.cohort.deployment and (len(counts) <= 3 or calibrated.result.shift > 0):
        why = f"only {len(counts)} people" if len(counts) <= 3 else "its own strangers score higher than LFW's"
        warnings.append(
            f"calibrated on the shipped LFW cohort only and {why}: the false-accept rate may be higher "
            "on photos unlike LFW"
        )
    return {
        "gallery": str(gallery_path.resolve()),
        "model": spec.name,
        "model_description": spec.description,
        "weights": meta.weights_path,
        "weights_sha256": meta.weights_sha256,
        "adapted": meta.describe_adaptation(),
        "dim": spec.dim,
        # As asked for: 'auto' runs on the GPU when PyTorch sees one (info itself never loads torch).
        "device": device,
        "thresholds": {
            "identify": _finite(photo.threshold),
            "watch": _finite(video.threshold),
            "identify_operating_point": photo.source,
            "watch_operating_point": video.source,
            "calibrated": calibrated is not None,
            "verify": spec.thresholds.verify,
            "rule": spec.thresholds.rule,
        },
        "people_with_one_photo": sum(1 for c in counts.values() if c == 1),
        "warnings": warnings,
        "people": len(counts),
        "faces": sum(counts.values()),
        "index": index_kind,
        "created": meta.created,
        "format_version": meta.format_version,
        "models_dir": str(settings.models_dir),
        "versions": {
            "facerec": __version__,
            "python": platform.python_version(),
            **{
                name: _package_version(name)
                for name in ("torch", "facenet-pytorch", "faiss-cpu", "opencv-python", "numpy")
            },
        },
    }
