"""The embedder registry: models as data, weights found or downloaded, networks loaded lazily."""

from .base import Embedder, choose_model, load_embedder, resolve_device
from .registry import DEFAULT_MODEL, MODELS, OFFLINE_MODEL, ModelSpec, Thresholds, get_spec

__all__ = [
    "DEFAULT_MODEL", "MODELS", "choose_model", "OFFLINE_MODEL", "Embedder", "ModelSpec", "Thresholds", "get_spec", "load_embedder",
    "resolve_device",
]
