"""facenet-pytorch's InceptionResnetV1: what differs from other embedders is the network and its input scaling."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ModelError


def build_facenet(state_dict: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """An InceptionResnetV1 in embedding mode (L2-normalised output) holding the given weights.

    The published files also hold the training classifier ('logits.*'), which embedding never uses.
    """
    from facenet_pytorch import InceptionResnetV1

    module = InceptionResnetV1(pretrained=None, classify=False)
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
