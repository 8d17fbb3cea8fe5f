"""Slow, obviously correct twins of the hypergradient optimizers.

Written straight from the equations in ``docs/hypergradient.md``: the effective gradient, the previous
update direction kept explicitly, one dot product over the group, the learning-rate rule, the base
step. No foreach, no recomputation, no device tricks. The tests hold the fast optimizers to these.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .adagrad import AdagradHD
from .adam import AdamHD, AdamWHD
from ._keywords import rule_hypergrad_lr
from .rmsprop import RMSpropHD
from .sgd import SGDHD

__all__ = [
    "SGDHDReference",
    "AdamHDReference",
    "AdamWHDReference",
    "AdagradHDReference",
    "RMSpropHDReference",
]


def _scalefree(lr: float, dot: float, g_squared: float, u_squared: float, beta: float, memory: list[float]) -> float:
    """The scale-free rule on one rate, its memory ``[m, v, r]`` updated in place (in plain floats,
    from the equations of docs/hypergradient.md)."""
    m, v, r = memory
    finite = all(math.isfinite(x) for x in (dot, g_squared, u_squared))
    if not finite:
        return lr / 2
    if g_squared * u_squared == 0:
        return lr / 2 if r > 0 and g_squared > 16 * r else lr
    cosine = dot / math.sqrt(g_squared * u_squared)
    m = 0.9 * m + 0.1 * cosine
    v = 0.99 * v + 0.01 * cosine**2
    if r > 0 and g_squared > 16 * r:
        new_lr, m = lr / 2, min(m, 0.0)
    else:
        new_lr = lr * math.exp(beta * min(max(m / math.sqrt(v), -1.0), 1.0)) if v > 0 else lr
    memory[:] = [m, v, 0.9 * r + 0.1 * g_squared if r > 0 else g_squared]
    return new_lr


def _next_lr(lr: float, grads: list[Tensor], previous: list[Tensor], group: dict[str, Any],
             memory: list[float]) -> float:
    """alpha_t from alpha_{t-1}, g_t and u_{t-1} (the paper's additive rule, normalised HDM, or the
    scale-free rule with the rate's ``memory``)."""
    beta = group["hypergrad_lr"]
    dot = sum(float((g.double() * u.double()).sum()) for g, u in zip(grads, previous))
    if group["hypergrad_rule"] == "additive":
        new_lr = lr + beta * dot
    elif group["hypergrad_rule"] == "scalefree":
        g_squared = sum(float(g.double().pow(2).sum()) for g in grads)
        u_squared = sum(float(u.double().pow(2).sum()) for u in previous)
        new_lr = _scalefree(lr, dot, g_squared, u_squared, beta, memory)
    else:
        g_norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        u_norm = math.sqrt(sum(float(u.double().pow(2).sum()) for u in previous))
        cosine = dot / (g_norm * u_norm) if g_norm * u_norm > 0 else 0.0
        new_lr = lr * (1 + beta * cosine)
    new_lr = _clipped(new_lr, group)
    return new_lr if math.isfinite(new_lr) else lr


def _clipped(lr: float, group: dict[str, Any]) -> float:
    """``lr`` clipped into ``lr_bounds`` (the initial rate too)."""
    if group["lr_bounds"] is None:
        return lr
    return min(max(lr, group["lr_bounds"][0]), group["lr_bounds"][1])


def _next_weight_rates(rates: Tensor, g: Tensor, previous: Tensor, group: dict[str, Any],
                       memories: list[list[float]]) -> Tensor:
    """Per-weight rates: ``r + beta * g * u``, ``r * (1 + beta * sign(g * u))``, or the scale-free
    rule weight by weight (each with its memory), clipped."""
    beta = group["hypergrad_lr"]
    if group["hypergrad_rule"] == "additive":
        new_rates = rates + beta * g * previous
    elif group["hypergrad_rule"] == "scalefree":
        flat = [
            _scalefree(float(rate), float(gi) * float(ui), float(gi) ** 2, float(ui) ** 2, beta, memory)
            for rate, gi, ui, memory in zip(rates.reshape(-1), g.reshape(-1), previous.reshape(-1), memories)
        ]
        new_rates = torch.tensor(flat, dtype=rates.dtype).reshape(rates.shape)
    else:
        new_rates = rates * (1 + beta * torch.sign(g * previous))
    if group["lr_bounds"] is not None:
        new_rates = new_rates.clamp(group["lr_bounds"][0], group["lr_bounds"][1])
    return torch.where(torch.isfinite(new_rates), new_rates, rates)


def _blend(rate: Any, group: dict[str, Any]) -> Any:
    """alpha_t = delta(t) alpha_t^HD + (1 - delta(t)) alpha_inf, delta(t) = t^-p (paper, Sec. 5)."""
    if group.get("lr_limit") is None:
        return rate
    delta = group["t"] ** -group.get("lr_limit_power", 2.0)
    return delta * rate + (1 - delta) * group["lr_limit"]


#: Arguments that choose how the fast optimizers compute, not what: the twins have no such choice.
IMPLEMENTATION_SWITCHES: tuple[str, ...] = ("foreach", "capturable", "fused")


class _ReferenceHD(Optimizer):
    """One loop for every base rule: rates per group, tensor or weight, kept as absolute values
    (``group["lr_hd"]``, ``state["rate"]``, ``state["rates"]``), blended when ``lr_limit`` is set.

    A twin takes its fast optimizer's arguments, with their defaults, less the implementation
    switches (``class SGDHDReference(_ReferenceHD, fast=SGDHD)``); ``fixed`` settings are
    not arguments (AdamW's decoupled decay). No argument is checked: the twin trusts its input.
    """

    fast: type[Optimizer]
    fixed: dict[str, Any] = {}

    def __init_subclass__(cls, fast: type[Optimizer] | None = None, fixed: dict[str, Any] | None = None) -> None:
        super().__init_subclass__()
        cls.fast = fast or cls.fast
        cls.fixed = fixed or cls.fixed
        signature = inspect.signature(cls.fast)
        cls.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p for name, p in signature.parameters.items() if name not in IMPLEMENTATION_SWITCHES]
        )

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        bound = self.__signature__.bind(params, *args, **kwargs)
        bound.apply_defaults()
        defaults = {name: value for name, value in bound.arguments.items() if name != "params"}
        super().__init__(params, {**defaults, **self.fixed})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["hypergrad_lr"] is None:  # the rule's default, as the fast optimizer takes it
            group["hypergrad_lr"] = rule_hypergrad_lr(group["hypergrad_rule"], self.fast.paper_hypergrad_lr)

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None and p in self.state:
                    # It does not move at this step: u_t = 0, nothing to carry to the next one.
                    self.state[p].pop("previous_direction", None)
            params = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
            if not params:
                continue  # a group that takes no step does not count one
            grads = []
            for p in params:
                g = -p.grad if group["maximize"] else p.grad.clone()
                coupled_decay = 0.0 if group.get("decoupled_weight_decay", False) else group["weight_decay"]
                grads.append(g + coupled_decay * p)
            if group.get("lr_limit") is not None:
                group["t"] = group.get("t", 0) + 1
            adapt = group["hypergrad_lr"] != 0
            # Per tensor or weight, a rate is the group's times a scale: at a zero group lr every
            # rate is zero and stays so (see HypergradOptimizer, "Granularity").
            adapt_each = adapt and group["lr"] != 0
            started = [i for i, p in enumerate(params) if "previous_direction" in self.state[p]]
            granularity = group.get("granularity", "group")
            if granularity == "group" and "initial_lr" in group:
                # An lr scheduler owns group["lr"]; HD learns the factor lr_scale beside it.
                factor = group.setdefault("lr_scale", 1.0)
                if started and adapt:
                    new_rate = _next_lr(
                        group["lr"] * factor,
                        [grads[i] for i in started],
                        [self.state[params[i]]["previous_direction"] for i in started],
                        group,
                        group.setdefault("memory", [0.0, 0.0, 0.0]),
                    )
                    if group["lr"] != 0:  # a zero lr (a warmup from 0) leaves the factor as it is
                        group["lr_scale"] = new_rate / group["lr"]
                rates = [_blend(group["lr"] * group["lr_scale"], group)] * len(params)
            elif granularity == "group":
                hd_rate = group.setdefault("lr_hd", _clipped(group["lr"], group))
                if started and adapt:
                    hd_rate = _next_lr(
                        hd_rate,
                        [grads[i] for i in started],
                        [self.state[params[i]]["previous_direction"] for i in started],
                        group,
                        group.setdefault("memory", [0.0, 0.0, 0.0]),
                    )
                group["lr_hd"] = hd_rate
                group["lr"] = _blend(hd_rate, group)
                rates = [group["lr"]] * len(params)
            else:
                rates = []
                for i, (p, g) in enumerate(zip(params, grads)):
                    state = self.state[p]
                    if granularity == "tensor":
                        state.setdefault("rate", _clipped(group["lr"], group))
                        if i in started and adapt_each:
                            memory = state.setdefault("memory", [0.0, 0.0, 0.0])
                            state["rate"] = _next_lr(state["rate"], [g], [state["previous_direction"]], group, memory)
                        rates.append(_blend(state["rate"], group))
                    else:
                        state.setdefault("rates", torch.full_like(p, _clipped(group["lr"], group)))
                        if i in started and adapt_each:
                            memories = state.setdefault("memories", [[0.0, 0.0, 0.0] for _ in range(p.numel())])
                            state["rates"] = _next_weight_rates(
                                state["rates"], g, state["previous_direction"], group, memories
                            )
                        rates.append(_blend(state["rates"], group))
            for p, g, rate in zip(params, grads, rates):
                state = self.state[p]
                u = self._direction(group, p, g, state)
                state["previous_direction"] = u.clone()
                p.sub_(rate * u)
        return loss


class SGDHDReference(_ReferenceHD, fast=SGDHD):
    """SGD-HD / heavy-ball HD / SGDN-HD, one plain loop (see :class:`hypergrad.SGDHD`)."""

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        mu = group["momentum"]
        if mu == 0:
            return g
        if "velocity" not in state:
            state["velocity"] = g.clone()  # v_1 = g_1
        else:
            state["velocity"] = mu * state["velocity"] + (1 - group["dampening"]) * g
        return g + mu * state["velocity"] if group["nesterov"] else state["velocity"]


class AdamHDReference(_ReferenceHD, fast=AdamHD):
    """Adam-HD / AMSGrad-HD, one plain loop (see :class:`hypergrad.AdamHD`)."""

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
        adam_direction = m_hat / (v_hat.sqrt() + group["eps"])
        if group["decoupled_weight_decay"]:
            return group["weight_decay"] * p + adam_direction  # theta_t = theta_{t-1} - alpha (wd theta_{t-1} + ...)
        return adam_direction


class AdamWHDReference(AdamHDReference, fast=AdamWHD, fixed={"decoupled_weight_decay": True}):
    """AdamW-HD: the decoupled decay is part of the direction (see :class:`hypergrad.AdamWHD`)."""


class AdagradHDReference(_ReferenceHD, fast=AdagradHD):
    """Adagrad-HD, one plain loop (see :class:`hypergrad.AdagradHD`)."""

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        if "t" not in state:
            state.update(t=0, G=torch.full_like(p, group["initial_accumulator_value"]))
        state["t"] += 1
        state["G"] = state["G"] + g * g
        decay = 1 + (state["t"] - 1) * group["lr_decay"]
        return g / (decay * (state["G"].sqrt() + group["eps"]))


class RMSpropHDReference(_ReferenceHD, fast=RMSpropHD):
    """RMSprop-HD (centered, momentum), one plain loop (see :class:`hypergrad.RMSpropHD`)."""

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        rho = group["alpha"]
        if "s" not in state:
            state.update(s=torch.zeros_like(p), g_bar=torch.zeros_like(p), b=torch.zeros_like(p))
        state["s"] = rho * state["s"] + (1 - rho) * g * g
        state["g_bar"] = rho * state["g_bar"] + (1 - rho) * g
        variance = state["s"] - state["g_bar"] ** 2 if group["centered"] else state["s"]
        d = g / (variance.sqrt() + group["eps"])
        if group["momentum"] == 0:
            return d
        state["b"] = group["momentum"] * state["b"] + d  # b_0 = 0
        return state["b"]
