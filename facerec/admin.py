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
from .decision import identify_policy
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
    spec = get_spec(meta.model)
    photo, video = (identify_policy(meta, len(counts), video=v) for v in (False, True))
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
            "identify": round(photo.threshold, 4),
            "watch": round(video.threshold, 4),
            "verify": spec.thresholds.verify,
            "rule": spec.thresholds.rule,
            "source": photo.source,
        },
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
