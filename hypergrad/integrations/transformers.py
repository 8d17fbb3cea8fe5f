"""Hugging Face ``Trainer``: build a hypergrad optimizer from the ``TrainingArguments`` and log
its adapted rate.

``Trainer(optimizer_cls_and_kwargs=(hypergrad.AdamWHD, {...}))`` passes neither
``args.learning_rate`` nor the Adam settings of the arguments to the class: the pair
:func:`optimizer_cls_and_kwargs` builds does. The Trainer logs ``learning_rate`` from its
scheduler, the scheduled rate rather than the adapted one; :class:`HypergradCallback` makes it
log the rate each step used::

    trainer = Trainer(model, args, train_dataset=data,
                      optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(args),
                      callbacks=[HypergradCallback()])

The Trainer's scheduler (a ``LambdaLR``, even for ``lr_scheduler_type="constant"``) owns
``param_groups[i]["lr"]``, which holds the scheduled rate; HD learns a factor beside it (see
:mod:`hypergrad`'s schedules), so ``Trainer(..., optimizers=(AdamWHD(...), None))`` adapts with no
other change, and the callback logs the rate the steps use.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments

from .._compat import set_last_lr
from .._rates import group_rate
from ..adam import AdamWHD
from ..optimizer import HypergradOptimizer
from . import logged_rates, unwrap_optimizer

__all__ = ["HypergradCallback", "optimizer_cls_and_kwargs"]


def optimizer_cls_and_kwargs(
    args: TrainingArguments, optimizer_class: type[HypergradOptimizer] = AdamWHD, **kwargs: Any
) -> tuple[type[HypergradOptimizer], dict[str, Any]]:
    """The ``(class, kwargs)`` pair for ``Trainer(optimizer_cls_and_kwargs=...)``: ``lr`` from
    ``args.learning_rate`` and, for a class that takes them, ``betas`` from ``args.adam_beta1``,
    ``args.adam_beta2`` and ``eps`` from ``args.adam_epsilon``; ``kwargs`` (``hypergrad_lr``,
    ...) over them. Weight decay is the Trainer's: it builds two param groups, one with
    ``args.weight_decay`` (the weights), one with 0 (biases and norms), so a class's own default
    (``AdamWHD``'s 1e-2) does not apply; set ``args.weight_decay``."""
    if not isinstance(args, TrainingArguments):
        raise TypeError(f"args must be a transformers.TrainingArguments, got {type(args).__name__}")
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, HypergradOptimizer)):
        raise TypeError(f"optimizer_class must be a hypergrad optimizer class, got {optimizer_class!r}")
    accepted = inspect.signature(optimizer_class).parameters
    settings: dict[str, Any] = {"lr": args.learning_rate}
    if "betas" in accepted:
        settings["betas"] = (args.adam_beta1, args.adam_beta2)
    if "eps" in accepted:
        settings["eps"] = args.adam_epsilon
    return optimizer_class, {**settings, **kwargs}


class HypergradCallback(TrainerCallback):
    """Makes the Trainer log, as ``learning_rate``, the rate each optimizer step used (the first
    param group's), and adds ``learning_rate/pg{i}`` for the other groups and, with
    ``per_tensor``, ``learning_rate/{name}`` for parameters of groups at ``granularity="tensor"``
    or ``"element"`` (see :func:`hypergrad.logged_rates`).

    ``learning_rate`` reaches ``trainer.state.log_history`` and every report integration: the
    Trainer reads it from its scheduler's ``get_last_lr()`` right after the step, which this
    callback sets to the adapted rates (the scheduler's next step sets it anew). The other keys
    are written into the same ``log_history`` entry and into the logs of the callbacks that run
    after this one (the report integrations run before a user's callbacks and do not get them).
    """

    def __init__(self, per_tensor: bool = True) -> None:
        if not isinstance(per_tensor, bool):
            raise TypeError(f"per_tensor must be a bool, got {type(per_tensor).__name__}")
        self.per_tensor = per_tensor
        self._rates: dict[str, float] = {}

    def on_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                          lr_scheduler: Any = None, model: Any = None, **kwargs: Any) -> None:
        hd = unwrap_optimizer(optimizer)
        named = model.named_parameters() if self.per_tensor and model is not None else None
        self._rates = logged_rates(hd, named, key="learning_rate")
        scheduler = _torch_scheduler(lr_scheduler)
        if scheduler is not None:
            set_last_lr(scheduler, [float(group_rate(group)) for group in hd.param_groups])

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs or "learning_rate" not in logs or not self._rates:
            return
        extra = {key: value for key, value in self._rates.items() if key != "learning_rate"}
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("learning_rate") == logs["learning_rate"]:
            state.log_history[-1].update(extra)


def _torch_scheduler(scheduler: Any) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The torch scheduler behind accelerate's ``AcceleratedScheduler`` (``.scheduler``)."""
    for _ in range(8):
        if scheduler is None or isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
            return scheduler
        scheduler = getattr(scheduler, "scheduler", None)
    return None
