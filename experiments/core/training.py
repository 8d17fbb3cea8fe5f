"""Training: the one optimizer step every study and command takes (:func:`step`), and the pieces of
an epoch that do not depend on the optimizer: which examples, in which order, the CIFAR
augmentation, and the evaluation passes.

:func:`step` runs every optimizer through a closure (zero the gradients, the loss, its backward
pass), so the ones that need it (HDM, L-BFGS, Mechanic) step as the others do; it is the one
place in the experiments that calls ``.backward()`` (besides the data-parallel wrapper,
:mod:`experiments.core.parallel`).

Data order (and augmentation) of an epoch depends on (seed, epoch) only, so the order in which
methods run and resuming a run cannot change it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from experiments.core.datasets import DatasetSplits, load_dataset

__all__ = ["cached_dataset", "epoch_generator", "evaluate", "random_crop_flip", "recompute_batch_norm", "step",
           "training_subset"]

SCHEDULE_FREE_BN_BATCHES = 50
"""Training batches used to recompute batch-norm statistics at Schedule-Free's evaluation point."""


def step(optimizer: torch.optim.Optimizer, loss_of: Callable[[], torch.Tensor], scheduler=None, *,
         backward: Callable[[], torch.Tensor] | None = None,
         after_backward: Callable[[torch.Tensor], None] | None = None) -> float:
    """One optimizer step, then ``scheduler.step()``; the loss of the (last) closure call.

    The closure zeroes the gradients (to None), computes ``loss_of()`` and backpropagates it (or
    calls ``backward()``, which does both and returns the loss: the data-parallel wrapper's), then
    ``after_backward(loss)`` (which may raise to stop a run before the optimizer moves). An
    exception raised in the closure leaves the parameters where they were.
    """
    losses = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            if backward is None:
                loss = loss_of()
                loss.backward()
            else:
                loss = backward()
        if after_backward is not None:
            after_backward(loss)
        losses.append(loss.item())
        return loss

    optimizer.step(closure)
    if scheduler is not None:
        scheduler.step()
    return losses[-1]


@functools.lru_cache(maxsize=2)
def cached_dataset(name: str, data_dir: str | None, download: bool) -> DatasetSplits:
    """``load_dataset``, once per process."""
    return load_dataset(name, data_dir=data_dir, download=download)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random numbers of ``epoch`` (its order and augmentation); epoch 0 draws the subset."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def training_subset(splits: DatasetSplits, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All training data, or a fixed subset of ``fraction`` of it drawn with ``seed``."""
    if fraction == 1:
        return splits.train_x, splits.train_y
    count = max(1, round(fraction * len(splits.train_y)))
    chosen = torch.randperm(len(splits.train_y), generator=epoch_generator(seed, 0))[:count]
    return splits.train_x[chosen], splits.train_y[chosen]


def random_crop_flip(x: torch.Tensor, padding: int, fill: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The reference CIFAR-10 augmentation on a batch: random ``padding``-pixel crop and
    horizontal flip. ``fill`` is the per-channel value of a black pixel after normalisation."""
    n, channels, height, width = x.shape
    padded = fill.view(1, channels, 1, 1).expand(n, channels, height + 2 * padding, width + 2 * padding).clone()
    padded[:, :, padding:padding + height, padding:padding + width] = x
    shift_y = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    shift_x = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    columns = torch.arange(width, device=x.device).expand(n, width)
    columns = torch.where(flip[:, None], width - 1 - columns, columns) + shift_x[:, None]
    rows = torch.arange(height, device=x.device)[None, :] + shift_y[:, None]
    batch = torch.arange(n, device=x.device)[:, None, None]
    # (n, h, w, c) from advanced indexing over (batch, rows, columns), channels last.
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) over the whole ``(x, y)``."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(y), batch_size):
        output = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        total_loss += F.cross_entropy(output, target, reduction="sum").double()
        correct += (output.argmax(dim=1) == target).sum()
    return total_loss.item() / len(y), correct.item() / len(y)


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Schedule-Free evaluates at its averaged point x, whose batch-norm statistics were never
    seen in training; its documentation recommends a few training batches in train mode at x.
    Only batch-norm layers run in train mode here, so dropout draws no random numbers."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
    for start in range(0, min(len(x), SCHEDULE_FREE_BN_BATCHES * batch_size), batch_size):
        model(x[start:start + batch_size])
    model.eval()
