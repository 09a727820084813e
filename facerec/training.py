"""What facerec's two fine-tuning loops share (adapt's CosFace in `adapt.train`, the camera distillation in
`distil.distil`): one optimiser step, in mixed precision on a GPU, and early stopping on a held-out score.

Early stopping starts from the network as it is (epoch 0), so a run in which no epoch beats it gives back
the starting weights exactly, and the gate then has nothing to refuse but no harm to undo.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm


class Step:
    """loss → gradients → weights. On CUDA the forward pass runs under autocast (bfloat16 where the GPU has
    it, else float16 with a gradient scaler); on CPU everything stays float32."""

    def __init__(self, optimiser: torch.optim.Optimizer, device: str) -> None:
        self.optimiser = optimiser
        self.cuda = device.startswith("cuda")
        self.dtype = torch.bfloat16 if self.cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda and self.dtype == torch.float16)

    def autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast("cuda", dtype=self.dtype, enabled=self.cuda)

    def __call__(self, loss: torch.Tensor) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimiser)
        self.scaler.update()


@dataclass
class Trained:
    """A fine-tuning run: the best epoch's module (frozen), the loss of each epoch, the held-out accuracy after
    each (epoch 0, the starting network, first) and which epoch was best (0: none beat the start)."""

    module: torch.nn.Module
    losses: list[float]
    val_accuracy: list[float]
    best_epoch: int


class EarlyStopping:
    """The best epoch so far by a held-out score (tuples compare in order: accuracy, then a tie-break), and
    its weights; `patience` epochs in a row without a better score end the run."""

    def __init__(self, module: torch.nn.Module, score: tuple[float, float], patience: int) -> None:
        self.module = module
        self.patience = patience
        self.best, self.epoch, self.stale = score, 0, 0
        self.state = copy.deepcopy(module.state_dict())
        self.accuracy = [score[0]]  # held-out accuracy after each epoch, epoch 0 first

    def stop_after(self, epoch: int, score: tuple[float, float]) -> bool:
        """Record an epoch's score; True when the run should end."""
        self.accuracy.append(score[0])
        if score > self.best:
            self.best, self.epoch, self.stale = score, epoch, 0
            self.state = copy.deepcopy(self.module.state_dict())
            return False
        self.stale += 1
        return self.stale >= self.patience

    def result(self, losses: list[float]) -> Trained:
        """The run's outcome, its module back at the best epoch's weights and frozen."""
        self.module.load_state_dict(self.state)
        for param in self.module.parameters():
            param.requires_grad_(False)
        return Trained(self.module, losses, [round(a, 4) for a in self.accuracy], self.epoch)


def run_epochs(
    epochs: int,
    batch_losses: Callable[[int], Iterator[tuple[int, torch.Tensor]]],
    step: Step,
    stopping: EarlyStopping,
    score: Callable[[], tuple[float, float]],
    *,
    steps: int,
    desc: str,
    progress: bool,
) -> Trained:
    """Up to `epochs` epochs: `batch_losses(epoch)` yields each batch's size and loss, which is stepped on;
    after each epoch the held-out `score` decides whether to go on. `steps` per epoch, for the bar."""
    losses: list[float] = []
    bar = tqdm(total=epochs * steps, desc=desc, unit="step", disable=not progress, leave=False)
    for epoch in range(1, epochs + 1):
        total, count = 0.0, 0
        for size, loss in batch_losses(epoch):
            step(loss)
            total, count = total + loss.item() * size, count + size
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", held_out=f"{stopping.accuracy[-1]:.3f}")
        losses.append(round(total / max(count, 1), 4))
        if stopping.stop_after(epoch, score()):
            break
    bar.close()
    return stopping.result(losses)
