"""Settings with defaults, each overridable from the environment (FACEREC_*), read when asked for.

Nothing here is read at import time, so tests and notebooks can change the environment freely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def default_models_dir() -> Path:
    """Where weights and adapted checkpoints live.

    FACEREC_MODELS wins; in a source checkout (editable install) it is the project's own `models/`;
    otherwise a per-user data folder, so a pip-installed facerec never writes into site-packages.
    """
    env = os.environ.get("FACEREC_MODELS")
    if env:
        return Path(env).expanduser()
    checkout_models = _PACKAGE_DIR.parent / "models"
    if (checkout_models / "README.md").is_file():
        return checkout_models
    return _data_home() / "facerec" / "models"


def default_gallery_dir() -> Path:
    """FACEREC_GALLERY, else a per-user data folder."""
    env = os.environ.get("FACEREC_GALLERY")
    return Path(env).expanduser() if env else _data_home() / "facerec" / "gallery"


@dataclass(frozen=True)
class Settings:
    """Tunable behaviour; `Settings.from_env()` applies FACEREC_* overrides."""

    models_dir: Path
    # Base URL of a mirror holding the weight files under their usual names (air-gapped sites).
    download_url: str | None = None
    download_timeout_s: float = 15.0
    # Images with more pixels than this are refused before decoding (decompression bombs).
    max_image_pixels: int = 120_000_000
    # Images are downscaled so their longer side is at most this before detection.
    detect_max_side: int = 1600
    min_face_size: int = 20
    # Detections below this probability are not reported as faces.
    min_face_score: float = 0.90
    # When choosing "the" face of an enrollment photo, detections below this are ignored:
    # MTCNN's large low-confidence boxes are often torsos or hair.
    enroll_min_score: float = 0.95
    # An enrollment photo's largest face must be this many times the area of the next one.
    enroll_dominance: float = 2.0
    batch_size: int = 32
    # Threads that read, decode and detect ahead of the embedding in enroll and identify.
    workers: int = 2
    lock_timeout_s: float = 30.0

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        return cls(
            models_dir=default_models_dir(),
            download_url=env.get("FACEREC_DOWNLOAD_URL") or None,
            download_timeout_s=float(env.get("FACEREC_DOWNLOAD_TIMEOUT", cls.download_timeout_s)),
            max_image_pixels=int(env.get("FACEREC_MAX_IMAGE_PIXELS", cls.max_image_pixels)),
            detect_max_side=int(env.get("FACEREC_DETECT_MAX_SIDE", cls.detect_max_side)),
            batch_size=int(env.get("FACEREC_BATCH_SIZE", cls.batch_size)),
            workers=int(env.get("FACEREC_WORKERS", cls.workers)),
            lock_timeout_s=float(env.get("FACEREC_LOCK_TIMEOUT", cls.lock_timeout_s)),
        )
