"""Helpers for tests, benchmarks and samples on machines without the pretrained weights.

The published InceptionResnetV1 weights are downloaded at first use, which an offline machine cannot do.
`write_random_facenet_weights` writes a deterministic, randomly initialised state dict in the same format,
loaded through the same `--weights` path as real weights: it proves the plumbing, and it is as fast as
the real network, but it does not recognise anyone.
"""

from __future__ import annotations

import os
from pathlib import Path

from .fileio import write_atomically


def find_shared(project_root: Path | None = None) -> Path | None:
    """The real face data beside the project (`../shared`; FACEREC_SHARED overrides), or None when absent.

    The one place tests and benchmarks find it: tests skip without it, benchmarks stop with a message.
    """
    root = project_root or Path(__file__).resolve().parent.parent
    env = os.environ.get("FACEREC_SHARED")
    candidate = Path(env) if env else root.parent / "shared"
    return candidate if (candidate / "faces").is_dir() else None


def write_random_facenet_weights(path: str | Path, seed: int = 0) -> Path:
    """Seeded InceptionResnetV1 weights whose batch-norm statistics are calibrated on smooth noise.

    Without calibration a random network maps every input to nearly the same vector (cosine ~1.0); with
    running statistics measured once, different faces get clearly different vectors and the same face the
    same one, which is what tests of enrollment and search need.
    """
    import torch
    from facenet_pytorch import InceptionResnetV1

    path = Path(path)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = InceptionResnetV1(pretrained=None, classify=False)
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average over the calibration batch
    noise = torch.randn(32, 3, 10, 10, generator=generator)
    module.train()
    with torch.no_grad():
        module(torch.nn.functional.interpolate(noise, size=160, mode="bilinear", align_corners=False))
    write_atomically(path, lambda f: torch.save(module.state_dict(), f), mode=0o644)
    return path
