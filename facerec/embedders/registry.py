"""The models facerec knows, described as data: code for a model is only what differs between them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..errors import ModelError

_FACENET_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"


@dataclass(frozen=True)
class Thresholds:
    """Cosine-similarity thresholds: `verify` for one pair, `identify` for a face against a gallery."""

    verify: float
    identify: float
    source: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # which code builds the network: "facenet"
    dim: int
    input_size: int
    margin: int
    weights_file: str
    url: str
    # Pinned SHA-256 of the official file; None where we do not know it (then trust on first use).
    sha256: str | None
    description: str

    @property
    def thresholds(self) -> Thresholds:
        return _thresholds()[self.name]


MODELS: dict[str, ModelSpec] = {
    "vggface2": ModelSpec(
        name="vggface2",
        family="facenet",
        dim=512,
        input_size=160,
        margin=14,
        weights_file="20180402-114759-vggface2.pt",
        url=_FACENET_RELEASE + "20180402-114759-vggface2.pt",
        sha256="281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
        description="InceptionResnetV1 trained on VGGFace2 (facenet-pytorch), 512-D, LFW 99.65% as published",
    ),
    "casia-webface": ModelSpec(
        name="casia-webface",
        family="facenet",
        dim=512,
        input_size=160,
        margin=14,
        weights_file="20180408-102900-casia-webface.pt",
        url=_FACENET_RELEASE + "20180408-102900-casia-webface.pt",
        sha256=None,
        description="InceptionResnetV1 trained on CASIA-WebFace (facenet-pytorch), 512-D, LFW 99.05% as published",
    ),
}

DEFAULT_MODEL = "vggface2"


@lru_cache(maxsize=1)
def _thresholds() -> dict[str, Thresholds]:
    raw = json.loads(resources.files(__package__).joinpath("thresholds.json").read_text("utf-8"))
    return {name: Thresholds(**values) for name, values in raw.items() if not name.startswith("_")}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
