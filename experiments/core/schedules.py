"""Per-iteration schedules a run can use, by name (``RunSpec.schedule``).

Every builder has the runner's scheduler signature ``(name, optimizer, iterations_per_epoch,
total_iterations) -> scheduler`` once its name is bound, and is stepped after every optimizer step.

* ``step``: divide the lr by 10 at 50% and 75% of the run (the classic step decay).
* ``exp``: exponential decay of the lr to 1% of its initial value at the end of the run.
* ``cosine``: cosine annealing of the lr to 0 over the run.
* ``onecycle``: ``OneCycleLR`` with the initial lr as its peak (torch's defaults: 30% warm-up,
  cosine, div 25); a range test's ``range()[1]`` is the usual peak.
* ``warmup_cosine``: linear warm-up over :data:`WARMUP` of the run, then cosine decay to 0 (the
  self-tuning benchmark's target-setting recipe).
* ``hypergrad_cosine``: an HD method's ``hypergrad_lr`` (not its lr) from its initial value to 0
  along a half cosine (``LambdaHypergradLR``), which freezes the adapted rate towards the end.
"""

from __future__ import annotations

import math

import torch

__all__ = ["LR_SCHEDULES", "SCHEDULES", "WARMUP", "build_schedule", "schedule_identity"]

LR_SCHEDULES = ("step", "exp", "cosine", "onecycle")
"""The schedules of the learning rate itself (the tuned-schedule baselines of the peers study)."""
SCHEDULES = (*LR_SCHEDULES, "warmup_cosine", "hypergrad_cosine")
"""Every name :func:`build_schedule` knows."""
WARMUP = 0.05
"""``warmup_cosine``'s warm-up, a fraction of the run's steps."""


def schedule_identity(name: str | None) -> str | None:
    """How a run's cache key records its schedule (``warmup_cosine`` with its warm-up: the benchmark's
    keys since it has had one)."""
    return f"warmup {WARMUP} + cosine" if name == "warmup_cosine" else name


def build_schedule(name: str, optimizer: torch.optim.Optimizer, iterations_per_epoch: int, total_iterations: int):
    """The schedule ``name`` over the whole run (``total_iterations`` steps), from the optimizer's
    initial settings."""
    total = max(total_iterations, 1)
    if name == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, [total // 2, (3 * total) // 4], gamma=0.1)
    if name == "exp":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.01 ** (1 / total))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if name == "onecycle":
        peak = float(optimizer.param_groups[0]["lr"])
        # OneCycleLR steps once past the end in our loop's last iteration; one spare step avoids its error.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total + 1)
    if name == "warmup_cosine":
        warmup = max(1, round(WARMUP * total_iterations))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min((t + 1) / warmup, 0.5 * (1 + math.cos(
            math.pi * min(max(t + 1 - warmup, 0), total_iterations - warmup) / max(total_iterations - warmup, 1)))))
    if name == "hypergrad_cosine":
        from hypergrad.schedulers import LambdaHypergradLR

        return LambdaHypergradLR(optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
