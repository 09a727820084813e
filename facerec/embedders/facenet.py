"""facenet-pytorch's InceptionResnetV1: what differs from other embedders is the network and its input scaling."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import torch

from ..errors import ModelError


def _inception_resnet_v1() -> type[torch.nn.Module]:
    """facenet-pytorch's InceptionResnetV1 class, imported without running its package's `__init__`, which
    imports its MTCNN and through it torchvision, whose import pulls in torch._dynamo (about 1.5 s of a
    process's start on 2 cores, for a class that needs none of it). For the one import, a bare stand-in for
    the package (its folder, nothing run) is what the submodule's relative imports resolve against; a later
    `import facenet_pytorch` runs the real one and finds this same class."""
    module = sys.modules.get("facenet_pytorch.models.inception_resnet_v1")
    if module is None and "facenet_pytorch" not in sys.modules:
        spec = importlib.util.find_spec("facenet_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("facenet-pytorch is not installed; pip install facenet-pytorch==2.5.3")
        stand_in = types.ModuleType("facenet_pytorch")
        stand_in.__path__ = list(spec.submodule_search_locations)
        sys.modules["facenet_pytorch"] = stand_in
        try:
            module = importlib.import_module("facenet_pytorch.models.inception_resnet_v1")
        finally:
            if sys.modules.get("facenet_pytorch") is stand_in:
                del sys.modules["facenet_pytorch"]
    if module is None:
        module = importlib.import_module("facenet_pytorch.models.inception_resnet_v1")
    return module.InceptionResnetV1


def build_facenet(state_dict: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """An InceptionResnetV1 in embedding mode (L2-normalised output) holding the given weights.

    The published files also hold the training classifier ('logits.*'), which embedding never uses.
    """
    module = _inception_resnet_v1()(pretrained=None, classify=False)
    weights = {k: v for k, v in state_dict.items() if not k.startswith("logits.")}
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(
            f"{source} is not an InceptionResnetV1 state dict ({first}); pass the right --weights file"
        ) from None
    return module.eval()


def facenet_input(chips: np.ndarray) -> torch.Tensor:
    """facenet-pytorch's fixed image standardisation of (N, H, W, 3) uint8 chips."""
    tensor = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()
    return (tensor - 127.5) / 128.0
