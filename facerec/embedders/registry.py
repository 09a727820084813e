"""The models facerec knows, described as data: code for a model is only what differs between them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from ..errors import ModelError

_FACENET_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"


@dataclass(frozen=True)
class Thresholds:
    """Cosine-similarity thresholds: `verify` for one pair, `identify` for a face against a gallery."""

    verify: float
    identify: float
    source: str
    # How identify compares a face with a person: "centroid" (their mean vector) or "nearest" (their
    # closest enrolled face). The identify threshold was calibrated under this rule.
    rule: str = "centroid"
    # (people in the gallery, identify threshold) pairs: a stranger meets more look-alikes in a larger
    # gallery, so the threshold that keeps false accepts at the calibrated rate rises with its size.
    identify_by_gallery_size: tuple[tuple[int, float], ...] = ()
    # The same for video (`watch`), at a stricter false-accept rate: a camera sees many strangers pass.
    watch_by_gallery_size: tuple[tuple[int, float], ...] = ()

    def identify_for(self, people: int, *, video: bool = False) -> float:
        """The identification threshold for a gallery of this many people (log-size interpolation)."""
        table = self.watch_by_gallery_size if video else self.identify_by_gallery_size
        if not table or people < 1:
            return self.identify
        sizes = np.log([size for size, _ in table])
        return float(np.interp(np.log(people), sizes, [t for _, t in table]))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # which code builds the network and its input: "facenet" or "dlib"
    dim: int
    input_size: int
    weights_file: str
    # Where a missing weights file is downloaded from; None for weights that ship in a Python package.
    url: str | None
    # Pinned SHA-256 of the official file; None where we do not know it (then trust on first use).
    sha256: str | None
    description: str
    margin: int = 0  # facenet crops: margin around the box, in output pixels
    # Test-time flip: average the vectors of the chip and its mirror image (chosen by measurement).
    flip: bool = False

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
    "dlib-resnet": ModelSpec(
        name="dlib-resnet",
        family="dlib",
        dim=128,
        input_size=150,
        weights_file="dlib_face_recognition_resnet_model_v1.dat",
        url=None,  # ships in the face_recognition_models package: works offline
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        description="dlib's face-recognition ResNet (face_recognition_models), rebuilt in PyTorch, "
        "128-D, LFW 99.38% as published",
        flip=True,
    ),
}

DEFAULT_MODEL = "vggface2"
# Chosen for a new gallery when vggface2's weights cannot be had (offline).
OFFLINE_MODEL = "dlib-resnet"


@lru_cache(maxsize=1)
def _thresholds() -> dict[str, Thresholds]:
    raw = json.loads(resources.files(__package__).joinpath("thresholds.json").read_text("utf-8"))
    out = {}
    for name, values in raw.items():
        if not name.startswith("_"):
            tables = {
                key: tuple((int(size), float(t)) for size, t in values.pop(key, ()))
                for key in ("identify_by_gallery_size", "watch_by_gallery_size")
            }
            out[name] = Thresholds(**values, **tables)  # type: ignore[arg-type]  # the JSON holds their fields
    return out


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
