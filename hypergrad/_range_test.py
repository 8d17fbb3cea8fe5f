"""The machinery of `find_lr`: what it switches off and puts back, how it feeds batches, and the
run itself (one step per scheduled lr, each scored on the next mini-batch, until it diverges)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


# Param-group keys with which a hypergradient optimizer moves its lr by itself, and the values
# that switch that off (the optimizer is then exactly its torch.optim base): the hypergradient
# step size, and the convergence-ensuring blend towards a fixed lr, which rewrites the lr.
HYPERGRADIENT_OFF: dict[str, float | None] = {"hypergrad_lr": 0.0, "lr_limit": None}


def switch_off_hypergradients(optimizer: torch.optim.Optimizer) -> None:
    """Every group that has the keys of ``HYPERGRADIENT_OFF`` gets their off values."""
    for group in optimizer.param_groups:
        for key, off in HYPERGRADIENT_OFF.items():
            if key in group:
                set_group_value(group, key, off)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def set_group_value(group: dict[str, Any], key: str, value: float | None) -> None:
    """Write a hyperparameter in place when it is a tensor (as torch's schedulers do), so a
    tensor lr stays the same tensor object (CUDA graphs and capturable optimizers rely on it)."""
    if isinstance(group[key], Tensor) and value is not None:
        group[key].fill_(value)
    else:
        group[key] = value


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise TypeError(
            "each batch from loader must be an (inputs, targets) pair, got "
            f"{type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (list, tuple)) else "")
        )
    return batch[0], batch[1]


def _batch_size(targets: Any) -> int:
    return int(targets.shape[0]) if isinstance(targets, Tensor) and targets.dim() > 0 else 1


class Snapshot:
    """Everything `find_lr` changes, copied in memory, and put back bit for bit."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model_state = copy.deepcopy(model.state_dict())
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())
        # Tensor-valued hyperparameters (a CUDA optimizer's lr) are restored into the same
        # tensor objects, as `set_group_value` wrote them.
        self.group_tensors = [
            {k: v for k, v in group.items() if isinstance(v, Tensor)}
            for group in optimizer.param_groups
        ]
        params = {id(p): p for p in model.parameters()}
        for group in optimizer.param_groups:
            params.update({id(p): p for p in group["params"]})
        self.grads = [
            (p, None if p.grad is None else p.grad.detach().clone()) for p in params.values()
        ]
        self.training = [(m, m.training) for m in model.modules()]

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        model.load_state_dict(self.model_state)
        optimizer.load_state_dict(self.optimizer_state)
        with torch.no_grad():
            for group, tensors in zip(optimizer.param_groups, self.group_tensors, strict=True):
                for key, original in tensors.items():
                    original.copy_(group[key])
                    group[key] = original
        for p, grad in self.grads:
            p.grad = grad
        for module, training in self.training:
            module.train(training)


def cycle(loader: Iterable[Any]) -> Iterator[Any]:
    """Batches of ``loader``, starting over when it runs out; ValueError if it is empty. A one-shot
    iterator (a generator) cannot start over: the batches it gave are replayed, in order."""
    one_shot = iter(loader) is loader
    source: Iterable[Any] = loader
    seen: list[Any] = []
    while True:
        empty = True
        for batch in source:
            empty = False
            if one_shot and source is loader:
                seen.append(batch)
            yield batch
        if one_shot:
            source = seen
        if empty:
            raise ValueError("loader is empty: it yielded no batch")


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    score: Callable[[Tensor, Any], Tensor | float],
    device: torch.device,
) -> float:
    """Mean of ``score(outputs, targets)`` over ``loader``, weighted by batch size."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            inputs, targets = _split_batch(_to_device(batch, device))
            n = _batch_size(targets)
            total += float(score(model(inputs), targets)) * n
            count += n
    model.train()
    if count == 0:
        raise ValueError("val_loader is empty: it yielded no batch")
    return total / count


def lr_schedule(start_lr: float, end_lr: float, num_iter: int, mode: str) -> list[float]:
    """The lr of each step: geometric (``"exp"``) or evenly spaced (``"linear"``)."""
    if mode == "exp":
        ratio = end_lr / start_lr
        return [start_lr * ratio ** (i / (num_iter - 1)) for i in range(num_iter)]
    return [start_lr + (end_lr - start_lr) * i / (num_iter - 1) for i in range(num_iter)]


@dataclass
class Curve:
    """The curve as it is recorded: fastai's debiased moving average of the loss, and the test
    that stops the run when it is not finite or exceeds ``diverge_factor`` times its best."""

    smooth: float
    diverge_factor: float
    metric_values: list[float] | None
    lrs: list[float] = field(default_factory=list)
    raw_losses: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    diverged: bool = False
    _average: float = 0.0
    _best: float = math.inf

    def record(self, lr: float, raw: float, metric_value: float) -> bool:
        """Add the point of the step taken with ``lr``; whether the test must stop."""
        t = len(self.raw_losses) + 1
        self._average = (1 - self.smooth) * self._average + self.smooth * raw
        smoothed = self._average / (1 - (1 - self.smooth) ** t)
        self.lrs.append(lr)
        self.raw_losses.append(raw)
        self.losses.append(smoothed)
        if self.metric_values is not None:
            self.metric_values.append(metric_value)
        if not math.isfinite(smoothed) or (self._best > 0 and smoothed > self.diverge_factor * self._best):
            self.diverged = True
            return True
        self._best = min(self._best, smoothed)
        return False


def run_range_test(
    optimizer: torch.optim.Optimizer,
    schedule: list[float],
    curve: Curve,
    next_loss: Callable[[bool], float],
    validate: Callable[[], float] | None,
) -> None:
    """One step per lr of ``schedule``. Step i is scored by the loss on the batch of step i + 1
    (``next_loss(backward)``), so one last forward pass (i == len(schedule)) scores the last step
    and takes no step itself; ``validate()`` is the value of the validation curve."""
    val_after_step = math.nan
    for i in range(len(schedule) + 1):
        taking_step = i < len(schedule)
        if taking_step:
            for group in optimizer.param_groups:
                set_group_value(group, "lr", schedule[i])
            optimizer.zero_grad(set_to_none=True)
        loss = next_loss(taking_step)
        if i > 0 and curve.record(schedule[i - 1], loss, val_after_step):
            return
        if taking_step:
            optimizer.step()
            if validate is not None:
                val_after_step = validate()


def mean_loss(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Any], Tensor],
    batches: Iterator[Any],
    device: torch.device,
    accumulation_steps: int,
    backward: bool,
) -> float:
    """The mean loss over the next ``accumulation_steps`` batches, their gradients summed (each
    loss divided by ``accumulation_steps``) when ``backward``."""
    loss_sum = 0.0
    for _ in range(accumulation_steps):
        inputs, targets = _split_batch(_to_device(next(batches), device))
        with torch.set_grad_enabled(backward):
            loss = loss_fn(model(inputs), targets)
            if backward:
                (loss / accumulation_steps).backward()
        loss_sum += float(loss.detach())
    return loss_sum / accumulation_steps
