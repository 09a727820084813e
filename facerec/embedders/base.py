"""An embedder: a model spec, its loaded network and the exact weights file it came from.

Loading is lazy (never at import) and cached per (model, weights file, device), so a notebook or a test
that builds many FaceRecognizer objects loads each network once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..align import facenet_chip
from ..config import Settings
from ..detect import Face
from ..errors import ModelError
from .facenet import build_facenet, facenet_input
from .registry import ModelSpec, get_spec
from .weights import load_state_dict, resolve_weights, sha256_file


def resolve_device(device: str) -> str:
    """'auto' is the GPU when there is one; asking for CUDA without one is an error, not a silent CPU run."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ModelError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


@dataclass(frozen=True)
class Embedder:
    spec: ModelSpec
    module: torch.nn.Module
    device: str
    weights_path: Path
    weights_sha256: str
    batch_size: int = 32

    def chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The model's input for one face of an RGB image."""
        return facenet_chip(image, face.box, size=self.spec.input_size, margin=self.spec.margin)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 chips -> (N, dim) float32 unit vectors, in batches."""
        if len(chips) == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        out = []
        with torch.inference_mode():
            for start in range(0, len(chips), self.batch_size):
                batch = facenet_input(chips[start : start + self.batch_size]).to(self.device)
                vectors = torch.nn.functional.normalize(self.module(batch).float(), dim=1)
                out.append(vectors.cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)


@lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so hashing 100 MB happens once per file version and process.
    del size, mtime_ns
    return sha256_file(Path(path))


@lru_cache(maxsize=4)
def _load_module(family: str, path: str, sha256: str, device: str) -> torch.nn.Module:
    # sha256 is part of the key so that a file replaced in place is loaded again.
    del sha256
    state_dict = load_state_dict(Path(path))
    if family != "facenet":  # pragma: no cover - guarded by the registry
        raise ModelError(f"no loader for model family {family!r}")
    return build_facenet(state_dict, path).to(device)


def load_embedder(
    model: str,
    *,
    weights: Path | None = None,
    device: str = "auto",
    settings: Settings | None = None,
    progress: bool = True,
) -> Embedder:
    """Find (or download) the weights, then load the network once per process."""
    settings = settings or Settings.from_env()
    spec = get_spec(model)
    device = resolve_device(device)
    path = resolve_weights(
        spec.weights_file,
        spec.url,
        spec.sha256,
        explicit=weights,
        models_dir=settings.models_dir,
        download_url=settings.download_url,
        timeout=settings.download_timeout_s,
        progress=progress,
    ).resolve()
    stat = path.stat()
    digest = _digest(str(path), stat.st_size, stat.st_mtime_ns)
    module = _load_module(spec.family, str(path), digest, device)
    return Embedder(spec, module, device, path, digest, settings.batch_size)
