"""The embedder registry: models as data, weights found or downloaded, networks loaded lazily."""

from .base import Embedder, load_embedder, resolve_device
from .registry import DEFAULT_MODEL, MODELS, ModelSpec, Thresholds, get_spec

__all__ = ["DEFAULT_MODEL", "MODELS", "Embedder", "ModelSpec", "Thresholds", "get_spec", "load_embedder", "resolve_device"]
