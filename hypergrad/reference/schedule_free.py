"""Schedule-Free HD's twins: Schedule-Free AdamW and SGD under hypergradient descent.

Written from the equations of docs/hypergradient.md ("Schedule-Free"), with the three sequences
kept explicitly: ``z`` takes the base step, ``x`` is the weighted average of the ``z``'s, and the
parameters hold ``y = (1 - b) z + b x`` in train mode, ``x`` in eval mode. The direction HD sees
is ``U_t = -d y_t / d alpha_t``, written here with ``x`` (the fast optimizers write the averaging
weight's term with ``z_t - y_t``)::

    U_t = s_t ((1 - b) + b c_t) u_t - [gamma_t > max_{j<t} gamma_j] b (z_t - x_{t-1}) p c_t (1 - c_t) / alpha_t
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._base import ReferenceHD


class _ScheduleFreeHDReference(ReferenceHD):
    """The shared loop: the rates as every twin keeps them (``ReferenceHD._group_rates``, reading
    ``U_{t-1}`` as ``state["previous_direction"]``), then Schedule-Free's step with each
    parameter's rate. The averaging weight comes from the group's rate (per tensor or weight, the
    base rate ``group["lr"]``), and only one rate per group has the weight's term in ``U_t``."""

    def _b(self, group: dict[str, Any]) -> float:
        raise NotImplementedError

    def _gradient(self, group: dict[str, Any], p: Tensor) -> Tensor:
        """``g_t``: the gradient of the loss HD descends, at ``y_{t-1}``."""
        raise NotImplementedError

    @torch.no_grad()
    def train(self) -> None:
        for group in self.param_groups:
            b = self._b(group)
            for p in group["params"]:
                if "z" in self.state[p]:
                    p.copy_((1 - b) * self.state[p]["z"] + b * self.state[p]["x"])
            group["train_mode"] = True

    @torch.no_grad()
    def eval(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if "x" in self.state[p]:
                    p.copy_(self.state[p]["x"])
            group["train_mode"] = False

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if not self.param_groups[0].get("train_mode", False):
            raise RuntimeError("not in train mode: call optimizer.train() first")
        return super().step(closure)

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], rates: list[Any],
                first: bool) -> None:
        """Schedule-Free's step with each parameter's rate, ``U_t`` kept as the direction (no
        ``first_step_bound``: Schedule-Free HD takes only None)."""
        for p in params:
            if "z" not in self.state[p]:
                self.state[p].update(z=p.clone(), x=p.clone())
        k = group["k"] = group.get("k", 0) + 1
        s = min(k / group["warmup_steps"], 1.0) if group["warmup_steps"] > 0 else 1.0
        alpha = rates[0] if group["granularity"] == "group" else group["lr"]
        gamma = s * alpha
        previous_max = group.get("gamma_max", -math.inf)
        group["gamma_max"] = max(gamma, previous_max)
        weight = k ** group["r"] * group["gamma_max"] ** group["weight_lr_power"]
        group["weight_sum"] = group.get("weight_sum", 0.0) + weight
        c = weight / group["weight_sum"] if group["weight_sum"] > 0 else 0.0
        b, power = self._b(group), group["weight_lr_power"]
        weight_term = group["granularity"] == "group" and gamma > previous_max and 0 < c < 1
        for p, g, rate in zip(params, grads, rates):
            state = self.state[p]
            u = self._direction(group, p, g, state)
            z = state["z"] - s * rate * u
            x = (1 - c) * state["x"] + c * z
            direction = s * ((1 - b) + b * c) * u
            if weight_term:
                direction = direction - b * (z - state["x"]) * power * c * (1 - c) / alpha
            state.update(z=z, x=x, previous_direction=direction)
            p.copy_((1 - b) * z + b * x)


class ScheduleFreeAdamWHDReference(_ScheduleFreeHDReference):
    """Schedule-Free AdamW-HD, one plain loop (see :class:`hypergrad.ScheduleFreeAdamWHD`):
    ``u_t = g_t / (sqrt(v_t / (1 - beta2^t)) + eps) + wd y_{t-1}``, ``t`` the group's step count;
    the decay is not part of the loss."""

    paper_hypergrad_lr = 1e-7

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        *,
        hypergrad_lr: float | None = None,
        hypergrad_rule: str = "scalefree",
        lr_bounds: Sequence[float] | None = None,
        granularity: str = "group",
        lr_limit: float | None = None,
        lr_limit_power: float = 2.0,
        first_step_bound: float | None = None,
    ) -> None:
        super().__init__(params, locals())

    def _b(self, group: dict[str, Any]) -> float:
        return group["betas"][0]

    def _gradient(self, group: dict[str, Any], p: Tensor) -> Tensor:
        return p.grad

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        beta2 = group["betas"][1]
        state["v"] = beta2 * state.get("v", torch.zeros_like(p)) + (1 - beta2) * g * g
        v_hat = state["v"] / (1 - beta2 ** group["k"])
        return g / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * p


class ScheduleFreeSGDHDReference(_ScheduleFreeHDReference):
    """Schedule-Free SGD-HD, one plain loop (see :class:`hypergrad.ScheduleFreeSGDHD`):
    ``u_t = g_t + wd y_{t-1}``, the gradient of the loss with its L2 term."""

    paper_hypergrad_lr = 1e-3

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        *,
        hypergrad_lr: float | None = None,
        hypergrad_rule: str = "scalefree",
        lr_bounds: Sequence[float] | None = None,
        granularity: str = "group",
        lr_limit: float | None = None,
        lr_limit_power: float = 2.0,
        first_step_bound: float | None = None,
    ) -> None:
        super().__init__(params, locals())

    def _b(self, group: dict[str, Any]) -> float:
        return group["momentum"]

    def _gradient(self, group: dict[str, Any], p: Tensor) -> Tensor:
        return p.grad + group["weight_decay"] * p

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        return g
