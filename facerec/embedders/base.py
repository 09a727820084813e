"""An embedder: a model spec, its loaded network and the exact weights file it came from.

What differs between model families (how the network is built from its weights file, what chip it
takes, how pixels are scaled) is one small `Family` each; everything else is shared. Loading is lazy
(never at import) and cached per (model, weights file, device), so a notebook or a test that builds many
FaceRecognizer objects loads each network once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..align import aligned_chip, aligned_scale, facenet_chip, facenet_scale
from ..config import Settings
from ..detect import Face
from ..errors import ModelError
from ..fileio import sha256_file
from ..vectors import normalise
from .dlib_resnet import DlibResNet, find_model_file, load_dlib_resnet
from .facenet import build_facenet, facenet_input
from .registry import DEFAULT_MODEL, OFFLINE_MODEL, ModelSpec, get_spec
from .runtime import Runner, choose, loaded
from .weights import load_state_dict, resolve_weights, unreachable


def resolve_device(device: str) -> str:
    """'auto' is the GPU when there is one; asking for CUDA without one is an error, not a silent CPU run."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ModelError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def _load_dlib(path: Path, models_dir: Path) -> torch.nn.Module:
    """dlib's own .dat file (converted once, cached in the models folder) or a state dict saved from it."""
    if path.suffix == ".dat":
        return load_dlib_resnet(models_dir, source=path)
    module = DlibResNet.empty()
    try:
        module.load_state_dict(load_state_dict(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{path} is not a dlib-resnet state dict ({first}); pass the right --weights file") from None
    return module.eval()


def _dlib_input(chips: np.ndarray) -> torch.Tensor:
    # The network subtracts its channel means and scales by 1/256 itself.
    return torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()


@dataclass(frozen=True)
class Family:
    load: Callable[[Path, Path], torch.nn.Module]
    to_input: Callable[[np.ndarray], torch.Tensor]
    chip: Callable[[np.ndarray, Face, ModelSpec], np.ndarray]
    # Chip pixels per source pixel of a face: what resolution a face had before it became a chip.
    chip_scale: Callable[[Face, ModelSpec], float]


FAMILIES: dict[str, Family] = {
    "facenet": Family(
        load=lambda path, _models_dir: build_facenet(load_state_dict(path), str(path)),
        to_input=facenet_input,
        chip=lambda image, face, spec: facenet_chip(image, face.box, size=spec.input_size, margin=spec.margin),
        chip_scale=lambda face, spec: facenet_scale(face.box, size=spec.input_size, margin=spec.margin),
    ),
    "dlib": Family(
        load=_load_dlib,
        to_input=_dlib_input,
        chip=lambda image, face, spec: aligned_chip(image, face.landmarks, size=spec.input_size),
        chip_scale=lambda face, spec: aligned_scale(face.landmarks, size=spec.input_size),
    ),
}


@dataclass(frozen=True)
class Embedder:
    spec: ModelSpec
    module: torch.nn.Module
    device: str
    weights_path: Path
    weights_sha256: str
    # What runs the network for inference (PyTorch or ONNX Runtime, facerec.embedders.runtime); training
    # always runs `module` in PyTorch.
    runner: Runner
    batch_size: int = 32

    def chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The model's input for one face of an RGB image."""
        return FAMILIES[self.spec.family].chip(image, face, self.spec)

    def face_width(self, face: Face) -> float:
        """The face's detector-box width in chip pixels (its width in the photo times the chip's enlargement)."""
        return (face.box[2] - face.box[0]) * FAMILIES[self.spec.family].chip_scale(face, self.spec)

    def stack(self, chips: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Chips as one (N, H, W, 3) uint8 array; none gives an empty array of the model's chip shape."""
        size = self.spec.input_size
        return np.stack(list(chips)) if len(chips) else np.zeros((0, size, size, 3), np.uint8)

    def views(self, chips: np.ndarray, mirrored: tuple[bool, ...] = (False, True)) -> list[np.ndarray]:
        """The network's raw outputs (N, dim) for (N, H, W, 3) uint8 chips, one array per view (plain or
        mirrored). The views of a batch share one forward pass: on CPU a batch of 2N costs far less
        than two of N (measured in bench/throughput.py)."""
        if len(chips) == 0:
            return [np.zeros((0, self.spec.dim), np.float32) for _ in mirrored]
        to_input = FAMILIES[self.spec.family].to_input
        out: list[list[np.ndarray]] = [[] for _ in mirrored]
        with torch.inference_mode():
            for start in range(0, len(chips), self.batch_size):
                batch = to_input(chips[start : start + self.batch_size]).to(self.device)
                inputs = torch.cat([torch.flip(batch, dims=[3]) if flip else batch for flip in mirrored])
                result = self.runner(self.module, inputs)
                for view, part in zip(out, np.split(result, len(mirrored))):
                    view.append(part)
        return [np.concatenate(view) for view in out]

    def descriptors(self, chips: np.ndarray, *, mirrored: bool = False) -> np.ndarray:
        """The network's raw outputs (N, dim), optionally of the mirrored chips."""
        return self.views(chips, (mirrored,))[0]

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 chips -> (N, dim) float32 unit vectors.

        With the model's test-time flip, each vector is the mean of the chip's and its mirror's.
        """
        views = self.views(chips, (False, True) if self.spec.flip else (False,))
        return normalise(np.sum(views, axis=0))


@lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so hashing 100 MB happens once per file version and process.
    del size, mtime_ns
    return sha256_file(Path(path))


@lru_cache(maxsize=4)
def _load_module(family: str, path: str, sha256: str, device: str, models_dir: str) -> torch.nn.Module:
    # sha256 is part of the key so that a file replaced in place is loaded again.
    del sha256
    # channels_last: the layout CPU convolutions (and cuDNN) run fastest in, about 1.3x here.
    return FAMILIES[family].load(Path(path), Path(models_dir)).to(device).to(memory_format=torch.channels_last)


def weights_path(spec: ModelSpec, weights: Path | None, settings: Settings, progress: bool) -> Path:
    """The weights file a model would use: explicit, packaged, in the models folder, or downloaded."""
    if weights is None and spec.url is None:
        packaged = find_model_file()
        if spec.sha256 and sha256_file(packaged) != spec.sha256:
            raise ModelError(
                f"{packaged} has an unexpected SHA-256; reinstall it: pip install --force-reinstall "
                f"face_recognition_models"
            )
        return packaged
    return resolve_weights(
        spec.weights_file,
        spec.url or "",
        spec.sha256,
        explicit=weights,
        models_dir=settings.models_dir,
        download_url=settings.download_url,
        timeout=settings.download_timeout_s,
        progress=progress,
    )


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
    path = weights_path(spec, weights, settings, progress).resolve()
    stat = path.stat()
    digest = _digest(str(path), stat.st_size, stat.st_mtime_ns)
    module = _load_module(spec.family, str(path), digest, device, str(settings.models_dir))
    loaded(module)
    family = FAMILIES[spec.family]
    cache = settings.models_dir / f"{spec.name}-{digest[:16]}.onnx"
    runner = Runner(choose(settings.runtime, device), cache, family.to_input, spec.input_size)
    return Embedder(spec, module, device, path, digest, runner, settings.batch_size)


def choose_model(settings: Settings | None = None) -> tuple[str, str]:
    """`--model auto`: the default model when its weights are here or can be downloaded, else the offline one.

    Returns the model name and one line saying why. Offline, this fails fast (a HEAD request with a short
    timeout) instead of waiting for a download that cannot come.
    """
    settings = settings or Settings.from_env()
    spec = get_spec(DEFAULT_MODEL)
    local = settings.models_dir / spec.weights_file
    if local.is_file():
        return spec.name, f"using {spec.name}: its weights are in {settings.models_dir}"
    source = settings.download_url.rstrip("/") + "/" + spec.weights_file if settings.download_url else spec.url or ""
    why = unreachable(source, timeout=min(settings.download_timeout_s, 5.0))
    if why is None:
        return spec.name, f"using {spec.name}: its weights will be downloaded from {source}"
    return OFFLINE_MODEL, (
        f"using {OFFLINE_MODEL} (works offline): {spec.name} weights are not in {settings.models_dir} "
        f"and cannot be downloaded ({why})"
    )
