"""Settings: every one typed, with a default, and overridable from the environment (FACEREC_*).

Nothing here is read at import time, so tests and notebooks can change the environment freely. A value
that cannot be used is a `SettingsError` naming the variable (the CLI exits 2), never a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import SettingsError

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
    """Tunable behaviour; `Settings.from_env()` applies the FACEREC_* overrides listed in `ENVIRONMENT`."""

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
    # facerec watch searches the whole frame this often (seconds of video or capture time) and only around
    # the faces it tracks in between: it bounds how late a face entering the view is found (regions.py).
    # With detection on every 2nd frame, 0.12 s is a full pass on every 2nd detection at 25 and 30 fps; at
    # 0.15 s a 30 fps camera got one on every 3rd, and the worst time to a name was 314 ms (bench/stream.py).
    watch_full_pass_s: float = 0.12
    # What runs the embedder on the CPU (facerec.embedders.runtime): auto (ONNX Runtime when installed), onnx,
    # torch.
    runtime: str = "auto"

    @classmethod
    def from_env(cls) -> Settings:
        values: dict[str, object] = {"models_dir": default_models_dir()}
        defaults = {f.name: f.default for f in fields(cls)}
        for name, (variable, kind, low, high) in ENVIRONMENT.items():
            raw = os.environ.get(variable)
            if raw is None or raw.strip() == "":
                continue
            if kind is str:
                values[name] = raw.strip()
                if name in CHOICES and values[name] not in CHOICES[name]:
                    raise SettingsError(f"{variable}={raw!r}: give one of {', '.join(CHOICES[name])} or unset it")
                continue
            try:
                value = kind(raw.strip())
            except ValueError:
                raise SettingsError(
                    f"{variable}={raw!r} is not {'a whole number' if kind is int else 'a number'}; "
                    f"unset it or give one (default {defaults[name]})"
                ) from None
            if not low <= value <= high:
                raise SettingsError(
                    f"{variable}={raw!r} is out of range: give a value from {low} to {high} (default {defaults[name]})"
                )
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]


# Setting -> (environment variable, type, lowest, highest). models_dir: FACEREC_MODELS (default_models_dir).
ENVIRONMENT: dict[str, tuple[str, type, float, float]] = {
    "download_url": ("FACEREC_DOWNLOAD_URL", str, 0, 0),
    "download_timeout_s": ("FACEREC_DOWNLOAD_TIMEOUT", float, 0.1, 3600),
    "max_image_pixels": ("FACEREC_MAX_IMAGE_PIXELS", int, 1, 10**10),
    "detect_max_side": ("FACEREC_DETECT_MAX_SIDE", int, 64, 20_000),
    "min_face_size": ("FACEREC_MIN_FACE_SIZE", int, 12, 10_000),
    "min_face_score": ("FACEREC_MIN_FACE_SCORE", float, 0.0, 1.0),
    "enroll_min_score": ("FACEREC_ENROLL_MIN_SCORE", float, 0.0, 1.0),
    "enroll_dominance": ("FACEREC_ENROLL_DOMINANCE", float, 1.0, 100.0),
    "batch_size": ("FACEREC_BATCH_SIZE", int, 1, 4096),
    "workers": ("FACEREC_WORKERS", int, 1, 64),
    "lock_timeout_s": ("FACEREC_LOCK_TIMEOUT", float, 0.0, 86_400),
    "watch_full_pass_s": ("FACEREC_WATCH_FULL_PASS", float, 0.0, 60.0),
    "runtime": ("FACEREC_RUNTIME", str, 0, 0),
}
# Text settings that take one of a few values.
CHOICES: dict[str, tuple[str, ...]] = {"runtime": ("auto", "onnx", "torch")}
