"""Slow, obviously correct twins of the hypergradient optimizers.

Written straight from the equations in ``hypergradient.md``: the effective gradient, the previous
update direction kept explicitly, one dot product over the group, the learning-rate rule, the base
step. No foreach, no recomputation, no device tricks. The tests hold the fast optimizers to these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["SGDHDReference", "AdamHDReference"]


def _next_lr(lr: float, grads: list[Tensor], previous: list[Tensor], group: dict[str, Any]) -> float:
    """alpha_t from alpha_{t-1}, g_t and u_{t-1} (the paper's additive rule or normalised HDM)."""
    beta = group["hypergrad_lr"]
    dot = sum(float((g.double() * u.double()).sum()) for g, u in zip(grads, previous))
    if group["hypergrad_rule"] == "additive":
        new_lr = lr + beta * dot
    else:
        g_norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        u_norm = math.sqrt(sum(float(u.double().pow(2).sum()) for u in previous))
        cosine = dot / (g_norm * u_norm) if g_norm * u_norm > 0 else 0.0
        new_lr = lr * (1 + beta * cosine)
    if group["lr_bounds"] is not None:
        new_lr = min(max(new_lr, group["lr_bounds"][0]), group["lr_bounds"][1])
    return new_lr if math.isfinite(new_lr) else lr


class _ReferenceHD(Optimizer):
    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
            grads = []
            for p in params:
                g = -p.grad if group["maximize"] else p.grad.clone()
                grads.append(g + group["weight_decay"] * p)
            started = [i for i, p in enumerate(params) if "previous_direction" in self.state[p]]
            if started and group["hypergrad_lr"] != 0:
                group["lr"] = _next_lr(
                    group["lr"],
                    [grads[i] for i in started],
                    [self.state[params[i]]["previous_direction"] for i in started],
                    group,
                )
            for p, g in zip(params, grads):
                state = self.state[p]
                u = self._direction(group, p, g, state)
                state["previous_direction"] = u.clone()
                p.sub_(group["lr"] * u)
        return loss


class SGDHDReference(_ReferenceHD):
    """SGD-HD / heavy-ball HD / SGDN-HD, one plain loop (see :class:`hypergrad.SGDHD`)."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        hypergrad_lr: float = 1e-3,
        hypergrad_rule: str = "additive",
        lr_bounds: Sequence[float] | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, hypergrad_lr=hypergrad_lr, hypergrad_rule=hypergrad_rule,
            lr_bounds=lr_bounds, maximize=maximize,
        )
        super().__init__(params, defaults)

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        mu = group["momentum"]
        if mu == 0:
            return g
        if "velocity" not in state:
            state["velocity"] = g.clone()  # v_1 = g_1
        else:
            state["velocity"] = mu * state["velocity"] + (1 - group["dampening"]) * g
        return g + mu * state["velocity"] if group["nesterov"] else state["velocity"]


class AdamHDReference(_ReferenceHD):
    """Adam-HD / AMSGrad-HD, one plain loop (see :class:`hypergrad.AdamHD`)."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        hypergrad_lr: float = 1e-7,
        hypergrad_rule: str = "additive",
        lr_bounds: Sequence[float] | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            hypergrad_lr=hypergrad_lr, hypergrad_rule=hypergrad_rule, lr_bounds=lr_bounds,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        beta1, beta2 = group["betas"]
        if "t" not in state:
            state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p), v_max=torch.zeros_like(p))
        state["t"] += 1
        t = state["t"]
        state["m"] = beta1 * state["m"] + (1 - beta1) * g
        state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
        state["v_max"] = torch.maximum(state["v_max"], state["v"])
        v = state["v_max"] if group["amsgrad"] else state["v"]
        m_hat = state["m"] / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        return m_hat / (v_hat.sqrt() + group["eps"])
