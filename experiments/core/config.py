"""What a run is: :class:`RunConfig` (everything that determines it, validated) and what it
gives back (:class:`MethodResult`). :mod:`experiments.core.runner` trains it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

from experiments.core.workloads import suite

__all__ = ["LRSchedulerFactory", "MethodResult", "RunConfig", "resolve_device"]

LRSchedulerFactory = Callable[[Optimizer, int, int], Any]
"""``(optimizer, iterations_per_epoch, total_iterations) -> scheduler``; stepped every iteration."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run, with the paper's defaults.

    Attributes:
        task: ``logreg``, ``mlp``, ``cnn`` or ``vgg`` (a workload of the ``paper`` suite of
            ``workloads.WORKLOADS``: model + dataset).
        epochs: passes over the training set.
        lr: alpha_0, the initial learning rate (the learning-rate-free peers keep their own).
        hypergrad_lr: beta for HD methods; None = the reference code's value for the method and
            task (``methods.resolve_hypergrad_lr``).
        weight_decay: L2 (or the method's own decoupled decay) on every method.
        batch_size: minibatch size; the last, smaller batch of an epoch is kept (as DataLoader).
        seed: seeds the initial weights, the data order of every epoch and dropout.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        data_dir: a folder to look in first for the dataset (and to download into).
        download: download the dataset when it is found nowhere.
        max_iterations: stop after this many iterations in total (the last epoch may be partial).
        train_fraction: train on this fraction of the training set (a fixed, seeded subset).
        lr_scheduler: ``(optimizer, iterations_per_epoch, total_iterations) -> scheduler``,
            stepped after every optimizer step (for tuned-schedule baselines).
        eval_batch_size: batch size for evaluation only (does not change results).
        distributed: ``None`` (one process), ``ddp`` or ``fsdp``: a data-parallel run launched
            by ``torchrun`` (see :mod:`experiments.core.parallel`); each ``batch_size`` batch is
            split across the ranks and only rank 0 writes files.
        amp: forward passes under bfloat16 autocast (mixed precision; recorded only when on, so
            full-precision runs keep their records and checkpoints).
    """

    task: str
    epochs: int = 10
    lr: float = 1e-3
    hypergrad_lr: float | None = None
    weight_decay: float = 1e-4
    batch_size: int = 128
    seed: int = 1
    device: str = "auto"
    data_dir: str | None = None
    download: bool = False
    max_iterations: int | None = None
    train_fraction: float = 1.0
    lr_scheduler: LRSchedulerFactory | None = field(default=None, repr=False)
    eval_batch_size: int = 1000
    distributed: str | None = None
    amp: bool = False

    def __post_init__(self) -> None:
        if self.task not in suite("paper"):
            raise ValueError(f"task must be one of {sorted(suite('paper'))}, got {self.task!r}")
        _check(self.epochs, "epochs", int, lambda v: v >= 1, ">= 1")
        _check(self.lr, "lr", (int, float), lambda v: v > 0 and math.isfinite(v), "> 0")
        if self.hypergrad_lr is not None:
            _check(self.hypergrad_lr, "hypergrad_lr", (int, float), lambda v: v >= 0 and math.isfinite(v), ">= 0")
        _check(self.weight_decay, "weight_decay", (int, float), lambda v: v >= 0 and math.isfinite(v), ">= 0")
        _check(self.batch_size, "batch_size", int, lambda v: v >= 1, ">= 1")
        _check(self.seed, "seed", int, lambda v: 0 <= v < 2**32, "in [0, 2**32)")
        if self.max_iterations is not None:
            _check(self.max_iterations, "max_iterations", int, lambda v: v >= 1, ">= 1")
        _check(self.train_fraction, "train_fraction", (int, float), lambda v: 0 < v <= 1, "in (0, 1]")
        _check(self.eval_batch_size, "eval_batch_size", int, lambda v: v >= 1, ">= 1")
        if self.lr_scheduler is not None and not callable(self.lr_scheduler):
            raise TypeError(f"lr_scheduler must be callable or None, got {type(self.lr_scheduler).__name__}")
        parse_device(self.device)
        if self.distributed is not None and self.distributed not in ("ddp", "fsdp"):
            raise ValueError(f"distributed must be None, 'ddp' or 'fsdp', got {self.distributed!r}")
        if not isinstance(self.amp, bool):
            raise TypeError(f"amp must be a bool, got {type(self.amp).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; the scheduler factory is recorded by its qualified name."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["lr_scheduler"] = _qualified_name(self.lr_scheduler)
        if not self.amp:
            del fields["amp"]
        return fields

    def identity(self) -> dict[str, Any]:
        """The fields that determine the numbers a run produces (resume refuses a mismatch).

        ``epochs`` is left out so that a finished run can be extended; where the data were read
        from, the evaluation batch size and how many processes shared each batch do not change
        results (beyond floating-point rounding)."""
        fields = self.to_dict()
        for name in ("epochs", "data_dir", "download", "eval_batch_size", "distributed"):
            del fields[name]
        return fields


def _check(value, name: str, types, condition, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        raise TypeError(f"{name} must be a number {allowed}, got {type(value).__name__}")
    if not condition(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _qualified_name(obj) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, functools.partial):
        return f"partial({_qualified_name(obj.func)}, args={obj.args!r}, kwargs={obj.keywords!r})"
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def parse_device(device: str) -> torch.device | None:
    """``device`` as a :class:`torch.device` (None for ``auto``); a ValueError naming it when malformed."""
    if device == "auto":
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N (or another torch device), got {device!r}") from None


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a ValueError naming ``device`` when it is malformed
    or names a CUDA device this machine does not have."""
    parsed = parse_device(device)
    if parsed is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: CUDA is not available on this machine (use cpu or auto)")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return parsed


@dataclass(frozen=True)
class MethodResult:
    """Outcome of one method's run (``status``: ``completed`` or ``diverged``)."""

    method: str
    status: str
    epochs_completed: int
    iterations: int
    final_train_loss: float
    final_valid_loss: float
    final_valid_accuracy: float
    final_lr: float
    hypergrad_lr: float | None
    wall_time_s: float
    train_time_s: float
    diverged_at_iteration: int | None
    epochs_csv: str
    iterations_csv: str
    optimizer_defaults: dict[str, Any]
