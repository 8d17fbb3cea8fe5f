"""Training: the one optimizer step every study and command takes (:func:`step`), the one
step-counted training loop the paper's runner and the benchmark's workloads share
(:func:`train_steps` over a :class:`Steps`), and the pieces of an epoch that do not depend on the
optimizer: which examples, in which order, the CIFAR augmentation, and the evaluation passes.

:func:`step` runs every optimizer through a closure (zero the gradients, the loss, its backward
pass), so the ones that need it (HDM, L-BFGS, Mechanic) step as the others do; it is the one
place in the experiments that calls ``.backward()`` (besides the data-parallel wrapper,
:mod:`experiments.core.parallel`).

Data order (and augmentation) of an epoch depends on (seed, epoch) only, so the order in which
methods run and resuming a run cannot change it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from experiments.core.datasets import DatasetSplits, load_dataset

__all__ = ["Steps", "StepsOutcome", "cached_dataset", "epoch_generator", "evaluate", "random_crop_flip",
           "recompute_batch_norm", "step", "subset_size", "train_steps", "training_subset"]

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


Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Steps:
    """What :func:`train_steps` trains: a model, its optimizer and scheduler, and its batches.

    Attributes:
        model, optimizer, scheduler: the scheduler (or None) is stepped after every step.
        batch: ``number -> (x, y)``, the batch of step ``number`` (1, 2, ...), asked in order.
        loss: ``(x, y) -> loss`` (forward pass and loss, under :meth:`autocast`).
        backward: ``(x, y) -> loss`` doing forward and backward itself (the data-parallel
            wrapper's; it enters :meth:`autocast` around its forward pass), or None.
        train_eval_modes: the optimizer has ``train()``/``eval()`` (Schedule-Free): evaluations
            happen at its evaluation point.
        batch_norm_data: ``(x, batch_size)`` to recompute batch-norm statistics with at that
            point (a model with batch norm and such an optimizer), or None.
        lr: ``() -> float``, the learning rate to record after each step, or None.
        amp: run forward passes under ``torch.autocast`` in bfloat16 (no loss scaling needed,
            so closures work); False: full precision.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    batch: Callable[[int], Batch]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    train_eval_modes: bool = False
    batch_norm_data: tuple[torch.Tensor, int] | None = None
    lr: Callable[[], float] | None = None
    amp: bool = False

    def autocast(self):
        """The context of a forward pass: bfloat16 autocast on the model's device with ``amp``."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(next(self.model.parameters()).device.type, dtype=torch.bfloat16)

    def train_mode(self) -> None:
        self.model.train()
        if self.train_eval_modes:
            self.optimizer.train()

    def eval_mode(self) -> None:
        """The model and optimizer at the point evaluations see (batch-norm statistics recomputed there)."""
        if self.train_eval_modes:
            self.optimizer.eval()
            if self.batch_norm_data is not None:
                recompute_batch_norm(self.model, *self.batch_norm_data)
        self.model.eval()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimizer (and scheduler) step on ``(x, y)`` through :func:`step`; its loss."""
        if self.backward is not None:
            return step(self.optimizer, None, self.scheduler, backward=lambda: self.backward(x, y))

        def loss_of() -> torch.Tensor:
            with self.autocast():
                return self.loss(x, y)

        return step(self.optimizer, loss_of, self.scheduler)


@dataclass(frozen=True)
class StepsOutcome:
    """Where :func:`train_steps` stopped: the last step taken, the clock's time spent in steps (the
    ``spent`` it started from included) and whether a non-finite loss or an evaluation stopped it."""

    steps: int
    time_s: float
    diverged: bool


def train_steps(run: Steps, steps: int, *, eval_every: int, evaluate: Callable[[int, float], bool], start: int = 0,
                spent: float = 0.0, on_step: Callable[[int, float, float | None, float], None] | None = None,
                checkpoint: Callable[[int, float], None] | None = None, progress: str | None = None,
                clock: Callable[[], float] = time.process_time) -> StepsOutcome:
    """Train ``run`` from step ``start + 1`` to ``steps``, the one training loop of the experiments.

    After step ``number``: ``on_step(number, loss, lr, time_s)`` (``lr``: ``run.lr()`` or None;
    ``time_s``: the clock's time spent in steps so far, from ``spent``); a non-finite loss stops
    the run there (diverged). Every ``eval_every`` steps and after the last one the model is put at
    its evaluation point and ``evaluate(number, time_s)`` is called (True: stop, diverged), then
    ``checkpoint(number, time_s)`` (to resume from with ``start=number, spent=time_s``); the model
    goes back to training mode only if more steps follow. Only the
    steps are timed (``clock``: process time by default), not batches, evaluations or checkpoints.
    ``progress``: a tqdm bar with this description (None: no bar).
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=min(start, steps), desc=progress, unit="it", leave=False,
               disable=progress is None)
    run.train_mode()
    diverged, number = False, start
    try:
        for number in range(start + 1, steps + 1):
            x, y = run.batch(number)
            began = clock()
            loss = run.step(x, y)
            spent += clock() - began
            lr = run.lr() if run.lr is not None else None
            if on_step is not None:
                on_step(number, loss, lr, spent)
            bar.update()
            if number % 20 == 0:
                bar.set_postfix(loss=f"{loss:.4f}", **({} if lr is None else {"lr": f"{lr:.3g}"}))
            if not math.isfinite(loss):
                diverged = True
                break
            if number % eval_every == 0 or number == steps:
                run.eval_mode()
                if evaluate(number, spent):
                    diverged = True
                    break
                if checkpoint is not None:
                    checkpoint(number, spent)
                if number < steps:  # a finished run stays at its evaluation point
                    run.train_mode()
    finally:
        bar.close()
    return StepsOutcome(number, spent, diverged)


@functools.lru_cache(maxsize=2)
def cached_dataset(name: str, data_dir: str | None, download: bool) -> DatasetSplits:
    """``load_dataset``, once per process."""
    return load_dataset(name, data_dir=data_dir, download=download)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random numbers of ``epoch`` (its order and augmentation); epoch 0 draws the subset."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def subset_size(total: int, fraction: float) -> int:
    """How many of ``total`` training examples :func:`training_subset` keeps for ``fraction``."""
    return total if fraction == 1 else max(1, round(fraction * total))


def training_subset(splits: DatasetSplits, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All training data, or a fixed subset of ``fraction`` of it drawn with ``seed``."""
    if fraction == 1:
        return splits.train_x, splits.train_y
    count = subset_size(len(splits.train_y), fraction)
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
