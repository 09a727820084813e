"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1) rebuilt in PyTorch.

The weights come from the `.dat` file that the `face_recognition_models` package ships; we read
it ourselves (see dlib_format.py), so dlib is never needed at run time.  Descriptors match dlib's
own `compute_face_descriptor` on the same 150x150 chips to about 1e-6.

Things that differ from a textbook ResNet, all reproduced here because dlib does them:
* stride-2 convolutions and pools are unpadded (only stride-1 3x3 convolutions pad by 1);
* batch norm was folded into per-channel affine layers (gamma * x + beta);
* where a residual add meets tensors of different shapes, dlib zero-extends both to the larger
  size at the top-left, channel-wise and spatially: the down-sampling blocks add a 2x2
  average-pooled shortcut that has fewer channels than the conv path (32->64, 64->128,
  128->256), and in the last two the unpadded stride-2 conv path is smaller spatially than the
  pooled shortcut (8x8 -> 3x3 vs 4x4, then 4x4 -> 1x1 vs 2x2);
* input is planar RGB, (pixel - channel mean) / 256; the output is not L2-normalised.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facerec.embedders.dlib_format import (
    EMBEDDING_DIM,
    INPUT_SIZE,
    MODEL_FILENAME,
    RESIDUAL_BLOCKS,
    STEM_FILTERS,
    DlibResNetWeights,
    parse_resnet,
)
from facerec.errors import ModelError
from facerec.fileio import sha256_bytes, write_atomically

log = logging.getLogger(__name__)

# dlib's channel means for this model (overwritten by whatever the file or state dict holds).
DEFAULT_MEANS = (122.782, 117.001, 104.298)
DEFAULT_THRESHOLD = 0.6
_CACHE_FORMAT = 1


def find_model_file() -> Path:
    """Locate face_recognition_models' ResNet file without importing that package.

    Its __init__ imports pkg_resources, which fresh environments no longer have, so we only ask
    the import system where the package lives (or its installed-files record).
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / "models" / MODEL_FILENAME for loc in spec.submodule_search_locations]
    try:
        files = importlib.metadata.files("face_recognition_models") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates += [Path(str(f.locate())) for f in files if f.name == MODEL_FILENAME]
    for path in candidates:
        if path.is_file():
            return path
    raise ModelError(
        f"{MODEL_FILENAME} not found: the dlib ResNet weights come from face_recognition_models; "
        "run `pip install face_recognition_models`"
    )


class Affine(nn.Module):
    """dlib's affine_ layer in per-channel mode: y = gamma * x + beta (a frozen batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def zero_extend_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b where each is first zero-extended at the bottom/right/extra channels to the larger shape.

    This is dlib's add_prev_ for tensors of different shapes.  Only the operand that is smaller in
    some dimension is padded; equal shapes cost a plain add.
    """
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        if t.shape[1:] == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """dlib's ares / ares_down: relu(block(x) + shortcut(x)), shortcut = x or avg_pool<2,2,2,2>(x)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=0 if downsample else 1)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1)
        self.affine2 = Affine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(zero_extend_add(y, shortcut))


class DlibResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1: (N, 3, 150, 150) RGB 0..255 -> (N, 128) raw descriptors."""

    def __init__(self) -> None:
        """The architecture with random weights; see `from_weights` and `empty`."""
        super().__init__()
        self.register_buffer("channel_means", torch.tensor(DEFAULT_MEANS, dtype=torch.float32))
        self.distance_threshold = DEFAULT_THRESHOLD
        self.input_size = INPUT_SIZE
        self.conv = nn.Conv2d(3, STEM_FILTERS, 7, 2, padding=0)
        self.affine = Affine(STEM_FILTERS)
        self.blocks = nn.Sequential(*(ResidualBlock(i, o, d) for i, o, d in RESIDUAL_BLOCKS))
        self.fc = nn.Linear(RESIDUAL_BLOCKS[-1][1], EMBEDDING_DIM, bias=False)

    @classmethod
    def empty(cls) -> DlibResNet:
        """Same architecture, random init: a target for `load_state_dict` or fine-tuning."""
        return cls()

    @classmethod
    def from_weights(cls, weights: DlibResNetWeights) -> DlibResNet:
        """Build from parsed dlib weights (conv/affine pairs in order, stem first)."""
        model = cls()
        blocks: list[Any] = list(model.blocks)
        convs: list[Any] = [model.conv] + [c for b in blocks for c in (b.conv1, b.conv2)]
        affines: list[Any] = [model.affine] + [a for b in blocks for a in (b.affine1, b.affine2)]
        if len(convs) != len(weights.convs) or len(affines) != len(weights.affines):
            raise ModelError("dlib ResNet weights do not fit the architecture (layer counts differ)")
        with torch.no_grad():
            for conv, (w, b) in zip(convs, weights.convs):
                conv.weight.copy_(torch.from_numpy(w))
                conv.bias.copy_(torch.from_numpy(b))
            for affine, (g, b) in zip(affines, weights.affines):
                affine.weight.copy_(torch.from_numpy(g))
                affine.bias.copy_(torch.from_numpy(b))
            model.fc.weight.copy_(torch.from_numpy(weights.fc_weight))
            model.channel_means.copy_(torch.from_numpy(weights.channel_means))  # type: ignore[operator]
        model.distance_threshold = float(weights.distance_threshold)
        return model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"DlibResNet expects (N, 3, {self.input_size}, {self.input_size}), got {tuple(x.shape)}")
        x = (x - self.channel_means.view(1, 3, 1, 1)) / 256.0  # type: ignore[operator]
        x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def _load_cache(path: Path, digest: str) -> DlibResNet | None:
    """The cached conversion, or None when it is missing, unreadable, corrupt or for another file."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not (
            isinstance(blob, dict)
            and blob.get("format") == _CACHE_FORMAT
            and blob.get("source_sha256") == digest
            and isinstance(blob.get("state_dict"), dict)
        ):
            raise ValueError("unexpected cache contents")
        model = DlibResNet.empty()
        model.load_state_dict(blob["state_dict"], strict=True)
        if not all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()):
            raise ValueError("non-finite values")
        model.distance_threshold = float(blob.get("distance_threshold", DEFAULT_THRESHOLD))
    except Exception as exc:  # any failure means "rebuild": the .dat file is the source of truth
        log.warning("ignoring unusable cache %s (%s: %s); rebuilding it", path, type(exc).__name__, exc)
        return None
    return model.eval()


def _save_cache(model: DlibResNet, path: Path, digest: str) -> None:
    """Atomically write the converted state dict: temp file in the same folder, fsync, os.replace."""
    blob = {
        "format": _CACHE_FORMAT,
        "source_sha256": digest,
        "distance_threshold": model.distance_threshold,
        "state_dict": model.state_dict(),
    }
    write_atomically(path, lambda f: torch.save(blob, f), mode=0o644)


def load_dlib_resnet(models_dir: Path, source: Path | None = None) -> DlibResNet:
    """The dlib ResNet in eval mode, converted once and cached as models_dir/dlib-resnet-<sha16>.pt.

    The cache is named after the .dat file's SHA-256, so a different or updated source file never
    reuses a stale conversion; a corrupt cache is ignored and rewritten.  A cache that cannot be
    written (read-only folder) only costs a re-parse next time.
    """
    source = Path(source) if source is not None else find_model_file()
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ModelError(f"{source}: cannot read the dlib ResNet weights ({exc.strerror or exc})") from exc
    digest = sha256_bytes(data)
    cache = Path(models_dir) / f"dlib-resnet-{digest[:16]}.pt"

    model = _load_cache(cache, digest)
    if model is not None:
        return model
    model = DlibResNet.from_weights(parse_resnet(data, name=str(source)))
    try:
        _save_cache(model, cache, digest)
    except OSError as exc:
        log.warning("cannot write the converted dlib ResNet to %s (%s); continuing without a cache", cache, exc)
    return model.eval()
