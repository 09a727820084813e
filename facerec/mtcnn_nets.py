"""What MTCNN takes from facenet-pytorch and torchvision, without importing either: the three networks with
facenet-pytorch's trained weights, and torchvision's NMS kernel.

Why: importing any of facenet-pytorch imports torchvision, and torchvision's import pulls in torch._dynamo —
about 1.5 s of every `facerec` process's start on a 2-core CPU, for networks of a dozen layers and one
operator. The layers below are the published MTCNN architecture under facenet-pytorch's names, so its weight
files (shipped in its wheel, `facenet_pytorch/data/{p,r,o}net.pt`) load strictly; tests/test_mtcnn.py checks
the outputs against facenet-pytorch's own classes, and the boxes against its detector.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .errors import ModelError


def _package(name: str) -> Path | None:
    """An installed package's folder, found without importing it."""
    spec = importlib.util.find_spec(name)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


@lru_cache(maxsize=1)
def nms_kernel() -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    """torchvision's NMS kernel (C++, and CUDA where torchvision has it): its operator library loaded as
    torchvision itself loads it. Importing torchvision is the fallback, where the library is not found."""
    if not hasattr(torch.ops.torchvision, "nms"):
        folder = _package("torchvision")
        found = [
            folder / (name + suffix)
            for name in ("_C_stable", "_C")
            for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if folder and (folder / (name + suffix)).is_file()
        ]
        try:
            torch.ops.load_library(str(found[0]))
        except (IndexError, OSError):
            import torchvision.ops  # noqa: F401  # registers the kernel
    return torch.ops.torchvision.nms


def _weights(name: str) -> dict[str, torch.Tensor]:
    """A net's state dict from facenet-pytorch's package data."""
    folder = _package("facenet_pytorch")
    if folder is None:
        raise ModelError("facenet-pytorch is not installed; pip install facenet-pytorch==2.5.3")
    path = folder / "data" / f"{name}.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"{path}: cannot read MTCNN's {name} weights ({exc}); reinstall facenet-pytorch") from None


class PNet(nn.Module):
    """Proposal network: (n, 3, h, w) -> box offsets (n, 4, h', w'), face probability (n, 2, h', w')."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """The trained dense layers' input order (Caffe's: width, height, channels)."""
    return x.permute(0, 3, 2, 1).contiguous().view(x.shape[0], -1)


class RNet(nn.Module):
    """Refinement network: (n, 3, 24, 24) -> box offsets (n, 4), face probability (n, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flat(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output network: (n, 3, 48, 48) -> box offsets (n, 4), five landmarks (n, 10: x then y), probability (n, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flat(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def trained() -> tuple[PNet, RNet, ONet]:
    """The three nets with their trained weights, on the CPU, in eval mode."""
    nets = PNet(), RNet(), ONet()
    for net, name in zip(nets, ("pnet", "rnet", "onet")):
        net.load_state_dict(_weights(name))
        net.eval()
    return nets
