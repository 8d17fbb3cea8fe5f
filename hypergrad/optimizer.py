"""The step every hypergradient optimizer shares; the base rules fill in three methods."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _default_to_fused_or_foreach

from ._hypergradient import (
    LearningRate,
    check_group_settings,
    store_lr,
    updated_lr,
    validate_hypergrad_settings,
    validate_lr,
)
from .distributed import all_reduce_statistics

__all__ = ["HypergradOptimizer", "GroupTensors", "effective_grads"]


@dataclass
class GroupTensors:
    """What one param group contributes to a step: the parameters that have a gradient, the
    gradients the base rule uses (sign flipped for ``maximize``, coupled weight decay added), and
    each parameter's state dict."""

    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)


class HypergradOptimizer(Optimizer):
    """Base class of the hypergradient optimizers.

    A step runs in three phases so that the learning rate of each param group changes once per
    step, from one dot product over the whole group, and before the parameters move:

    1. ``_init_group`` gathers each group's parameters and effective gradients (state is created
       lazily);
    2. ``_hypergradient_statistics`` takes ``g_t . u_{t-1}`` against the previous update direction
       (and the norms the multiplicative rule needs); the rule in ``_hypergradient.py`` turns it
       into the new learning rate ``alpha_t``;
    3. ``_update_params`` takes the base rule's step with ``alpha_t`` and keeps what is needed to
       know ``u_t`` at the next step.

    ``group["lr"]`` is the current learning rate. On CPU it is a Python float. For parameters on
    an accelerator it is kept as a 0-dim tensor on their device, so that ``step()`` never waits for
    the device; ``float(group["lr"])`` reads it either way (that read does synchronise).
    """

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        *,
        hypergrad_lr: float,
        hypergrad_rule: str,
        lr_bounds: Sequence[float] | None,
    ) -> None:
        validate_lr(defaults["lr"])
        lr_bounds = validate_hypergrad_settings(hypergrad_lr, hypergrad_rule, lr_bounds)
        defaults = dict(
            defaults, hypergrad_lr=hypergrad_lr, hypergrad_rule=hypergrad_rule, lr_bounds=lr_bounds
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        check_group_settings(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("hypergrad_rule", "additive")
            group.setdefault("lr_bounds", None)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)

    # -- the three phases, provided by each base rule -------------------------------------------
    def _init_group(self, group: dict[str, Any]) -> GroupTensors:
        raise NotImplementedError

    def _hypergradient_statistics(self, group: dict[str, Any], tensors: GroupTensors) -> Tensor | None:
        raise NotImplementedError

    def _update_params(self, group: dict[str, Any], tensors: GroupTensors, lr: LearningRate) -> None:
        raise NotImplementedError

    # -- shared machinery --------------------------------------------------------------------------
    @staticmethod
    def _use_foreach(group: dict[str, Any], params: list[Tensor]) -> bool:
        """torch.optim's choice: the user's ``foreach``, else multi-tensor kernels on devices
        that have them (not the CPU)."""
        if group["foreach"] is not None:
            return bool(group["foreach"])
        _, foreach = _default_to_fused_or_foreach(
            params, differentiable=False, use_fused=False
        )
        return foreach

    @staticmethod
    def _place_lr(group: dict[str, Any], device: torch.device) -> LearningRate:
        """Keep the group's lr where the step can use it without a host-device round trip."""
        lr = group["lr"]
        if device.type == "cpu":
            return lr
        if not isinstance(lr, Tensor):
            dtype = torch.float64 if group["params"][0].dtype == torch.float64 else torch.float32
            group["lr"] = lr = torch.tensor(lr, dtype=dtype, device=device)
        elif lr.device != device:
            group["lr"] = lr = lr.to(device)
        return lr

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        active = []
        for group in self.param_groups:
            tensors = self._init_group(group)
            if tensors.params:
                active.append((group, tensors))

        # Statistics of every group first, then the updates: sharded (FSDP2) runs sum all groups'
        # statistics over the ranks in one all-reduce, and no group's parameters move before all
        # previous directions have been read.
        statistics = [
            self._hypergradient_statistics(group, tensors) if group["hypergrad_lr"] != 0 else None
            for group, tensors in active
        ]
        statistics = all_reduce_statistics([tensors.params for _, tensors in active], statistics)
        for (group, tensors), group_statistics in zip(active, statistics):
            lr = self._place_lr(group, tensors.params[0].device)
            if group_statistics is not None:
                store_lr(group, updated_lr(lr, group_statistics, group))
            self._update_params(group, tensors, group["lr"])
        return loss


def effective_grads(
    params: list[Tensor], grads: list[Tensor], weight_decay: float, maximize: bool, foreach: bool
) -> list[Tensor]:
    """``g_t = ±grad + weight_decay * theta`` (coupled L2), computed as torch.optim computes it:
    new tensors only where the sign flips or the decay is added, ``p.grad`` itself otherwise."""
    if foreach:
        if maximize:
            grads = torch._foreach_neg(grads)
            if weight_decay != 0:
                torch._foreach_add_(grads, params, alpha=weight_decay)
        elif weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
        return list(grads)
    effective = []
    for p, g in zip(params, grads):
        g = -g if maximize else g
        effective.append(g.add(p, alpha=weight_decay) if weight_decay != 0 else g)
    return effective
