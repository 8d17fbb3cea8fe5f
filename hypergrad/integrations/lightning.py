"""Lightning: log the adapted learning rates.

Lightning drives a hypergrad optimizer as it drives any ``torch.optim`` one (checkpoint resume,
gradient accumulation and clipping, mixed precision: see ``tests/test_integrations_lightning.py``),
and ``LearningRateMonitor`` logs ``param_groups[i]["lr"]``. Three things it cannot know: with an
lr scheduler that value is the schedule's (the step uses it times HD's factor,
kept in ``param_groups[i]["hypergrad_state"]``), at ``granularity="tensor"``/``"element"`` it is the base rate,
and a rate kept as a 0-dim
tensor (parameters on an accelerator) is one tensor that every step updates in place, so the
monitor's ``lrs`` history holds references to it (each entry reads the latest value) and it warns
at every step. :class:`HypergradRateMonitor` logs plain floats, per group and per tensor::

    trainer = lightning.Trainer(callbacks=[HypergradRateMonitor()])
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from . import logged_rates, unwrap_optimizer

__all__ = ["HypergradRateMonitor"]


class HypergradRateMonitor(pl.Callback):
    """Logs, after every optimizer step, the rates that step used, as floats: ``lr-{Optimizer}``
    for the first param group, ``lr-{Optimizer}/pg{i}`` for group i >= 1 and, for groups at
    ``granularity="tensor"`` or ``"element"``, ``lr-{Optimizer}/{parameter name}``; with several
    optimizers, ``lr-{Optimizer}-{index}`` in place of ``lr-{Optimizer}`` (see
    :func:`hypergrad.logged_rates`). The values go through ``LightningModule.log`` (so every logger
    gets them at ``log_every_n_steps``, and ``trainer.callback_metrics`` holds the latest);
    ``history`` keeps one dict per optimizer step. Optimizers that are not hypergrad's are skipped.

    Args:
        per_tensor: also log each parameter's own rate where its group's granularity has them.
    """

    def __init__(self, per_tensor: bool = True) -> None:
        if not isinstance(per_tensor, bool):
            raise TypeError(f"per_tensor must be a bool, got {type(per_tensor).__name__}")
        self.per_tensor = per_tensor
        self.history: list[dict[str, float]] = []
        self._last_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        # global_step counts optimizer steps: with gradient accumulation, only the batches that
        # stepped log (the rate moves at those only).
        if trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        rates: dict[str, float] = {}
        several = len(trainer.optimizers) > 1
        for index, optimizer in enumerate(trainer.optimizers):
            try:
                hd = unwrap_optimizer(optimizer)
            except TypeError:
                continue
            named = pl_module.named_parameters() if self.per_tensor else None
            rates.update(logged_rates(hd, named, key=f"lr-{type(hd).__name__}" + (f"-{index}" if several else "")))
        if rates:
            self.history.append(rates)
            pl_module.log_dict(rates, on_step=True, on_epoch=False, batch_size=1)
