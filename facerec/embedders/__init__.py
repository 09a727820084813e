"""The embedder registry: models as data, weights found or downloaded, networks loaded lazily.

The registry (models, thresholds) needs no torch; the loading side imports it on first use, so that
`facerec --help`, `people` or `info` never pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import DEFAULT_MODEL, MODELS, OFFLINE_MODEL, ModelSpec, Thresholds, get_spec

if TYPE_CHECKING:
    from .base import Embedder, choose_model, load_embedder, resolve_device

_LAZY = {"Embedder", "choose_model", "load_embedder", "resolve_device"}

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "OFFLINE_MODEL",
    "Embedder",
    "ModelSpec",
    "Thresholds",
    "choose_model",
    "get_spec",
    "load_embedder",
    "resolve_device",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
