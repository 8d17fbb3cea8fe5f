"""Learning-rate factors: how HD's adaptation sits beside a rate that someone else sets.

Where ``group["lr"]`` belongs to someone else, HD keeps its adaptation as a factor beside it,
``lr_scale``, and a step uses the rate ``group["lr"] * lr_scale`` (blended towards ``lr_limit``
where set). Two cases:

* **A schedule.** A group with ``"initial_lr"`` has an lr scheduler attached: torch's
  ``LRScheduler`` (and so Hugging Face's ``get_*_schedule_with_warmup``, which are ``LambdaLR``)
  and timm's schedulers record it in every group when they are created. ``group["lr"]`` is then
  the schedule's value, written and read by the scheduler exactly as with the base optimizer,
  and ``group["lr_scale"]`` (created at 1 at the first step with a scheduler) is what HD learns on
  top of it: the schedule sets the profile, HD the correction, kept across the scheduler's writes
  and saved with the param groups in ``state_dict``.
* **Per tensor or per weight** (``granularity="tensor"``/``"element"``): ``group["lr"]`` is the
  base rate and each parameter's ``state[p]["lr_scale"]`` (0-dim, or shaped like ``p``) its
  factor, with or without a schedule.

HD moves the rate ``lr * scale`` by the rule of ``_hypergradient.py`` and keeps the new rate over
``lr`` as the new factor (unchanged where that is not finite: a zero ``lr``, e.g. the first step
of a warmup from 0, leaves the factors as they are). For the multiplicative and scale-free rules,
which move ``log alpha``, that is the same step on ``log scale``; the additive rule's step
``beta * g . u`` is in units of the rate, so it moves the factor by ``beta * g . u / lr``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._hypergradient import accumulation_dtype, blended_lr, updated_lr
from ._kernels import LearningRate

__all__ = ["applied_rate", "group_rate", "group_scale", "is_scheduled", "rescaled", "store_group_scale",
           "tensor_scales", "update_tensor_scales"]


def is_scheduled(group: dict[str, Any]) -> bool:
    """Whether an lr scheduler owns ``group["lr"]`` (torch's and timm's record ``initial_lr``)."""
    return "initial_lr" in group


def rescaled(lr: LearningRate, scale: Tensor, statistics: Tensor, group: dict[str, Any],
             memory: Tensor | None, *, compiled: bool = False) -> Tensor:
    """The factor after one HD step: the rule moves the rate ``lr * scale`` (``memory``: the
    rule's, where it keeps one; ``compiled`` as in :func:`updated_lr`), the new rate over ``lr``
    is the new factor; kept where that is not finite (``lr == 0``)."""
    new_rate = updated_lr(lr * scale, statistics, group, memory, compiled=compiled)
    ratio = new_rate / lr
    return torch.where(torch.isfinite(ratio), ratio, scale).to(scale.dtype)


def applied_rate(group: dict[str, Any], scale: LearningRate, lr: LearningRate, blend_step: int | None) -> LearningRate:
    """The rate a step uses: ``lr * scale``, blended towards ``lr_limit`` at step ``blend_step``."""
    rate = lr * scale
    return rate if blend_step is None else blended_lr(rate, group, blend_step)


def group_scale(group: dict[str, Any], lr: LearningRate) -> LearningRate:
    """A scheduled group's factor ``group["lr_scale"]``, created at 1 in the form the group keeps
    its ``lr``: a float with a float ``lr``, a 0-dim tensor beside a tensor ``lr``."""
    scale = group.get("lr_scale")
    if scale is None:
        scale = group["lr_scale"] = torch.ones_like(lr) if isinstance(lr, Tensor) else 1.0
    elif isinstance(lr, Tensor) and not isinstance(scale, Tensor):
        scale = group["lr_scale"] = torch.full_like(lr, scale)
    elif isinstance(scale, Tensor) and scale.device != getattr(lr, "device", scale.device):
        scale = group["lr_scale"] = scale.to(lr.device)
    return scale


def store_group_scale(group: dict[str, Any], scale: Tensor) -> None:
    """Write a scheduled group's new factor back in the form it is kept (float or tensor, in place)."""
    current = group["lr_scale"]
    if isinstance(current, Tensor):
        current.view(1).copy_(scale.reshape(1))
    else:
        group["lr_scale"] = scale.item()


def group_rate(group: dict[str, Any]) -> LearningRate:
    """The rate the group's last step used (before the first step, the one it will use): at
    ``granularity="group"``, the adapted ``group["lr"]``, or where a scheduler is attached the
    schedule's value that step used (``group["stepped_lr"]``: the scheduler may have written the
    next one since) times the factor, blended where ``lr_limit`` is set; per tensor or weight, the
    base rate the step used."""
    lr = group.get("stepped_lr", group["lr"])
    if group["granularity"] != "group" or "lr_scale" not in group:
        return lr
    blend_step = group.get("hypergrad_step") if group["lr_limit"] is not None else None
    return applied_rate(group, group["lr_scale"], lr, blend_step)


def tensor_scales(group: dict[str, Any], params: list[Tensor], states: list[dict[str, Any]]) -> list[Tensor]:
    """Each tensor's factor ``state["lr_scale"]`` (granularity ``"tensor"``: 0-dim, float64
    where the device has it; ``"element"``: shaped like the parameter), created at 1 on first use."""
    scales = []
    for param, state in zip(params, states):
        if "lr_scale" not in state:
            if group["granularity"] == "tensor":
                dtype = torch.float64 if param.device.type != "mps" else torch.float32
                state["lr_scale"] = torch.ones((), dtype=dtype, device=param.device)
            else:
                if param.is_complex():
                    raise ValueError("granularity='element' needs real parameters (got a complex one)")
                state["lr_scale"] = torch.ones_like(
                    param, dtype=accumulation_dtype(param.dtype), memory_format=torch.preserve_format
                )
        scales.append(state["lr_scale"])
    return scales


def update_tensor_scales(
    group: dict[str, Any],
    scales: list[Tensor],
    statistics: Tensor | list[Tensor | None],
    lr: LearningRate,
    memories: list[Tensor | None],
) -> None:
    """Each tensor's (or weight's) factor after one HD step (see :func:`rescaled`), in place; per
    tensor, all of a group's factors in one stacked computation."""
    if group["granularity"] == "tensor":
        assert isinstance(statistics, Tensor)
        stacked = torch.stack(scales)
        memory = None if memories[0] is None else torch.stack(memories, 1)
        torch._foreach_copy_(scales, list(rescaled(lr, stacked, statistics.T.to(stacked.dtype), group, memory).unbind()))
        if memory is not None:
            torch._foreach_copy_(memories, list(memory.unbind(1)))
    else:
        for scale, tensor_statistics, memory in zip(scales, statistics, memories):
            if tensor_statistics is not None:
                scale.copy_(rescaled(lr, scale, tensor_statistics, group, memory))
