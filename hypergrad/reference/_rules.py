"""The hypergradient rules on plain Python floats, shared by the twins: written straight from
``docs/hypergradient.md``, with no tensor tricks (per weight, one weight at a time)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

#: ``hypergrad_lr``'s default under the scale-free rule (its beta is dimensionless, the same for
#: every base rule); the additive and multiplicative rules take the base rule's paper beta.
SCALEFREE_HYPERGRAD_LR = 0.05


#: The rules written out here; a twin refuses another (``bracket``: held to its equations and
#: the optimizers' runs by tests/test_rule_bracket.py and tests/test_first_step.py instead).
MODELLED_RULES = ("additive", "multiplicative", "scalefree")


def default_hypergrad_lr(rule: str, paper_hypergrad_lr: float) -> float:
    """The beta ``hypergrad_lr=None`` stands for under ``rule``."""
    return SCALEFREE_HYPERGRAD_LR if rule == "scalefree" else paper_hypergrad_lr


def scalefree(lr: float, dot: float, g_squared: float, u_squared: float, beta: float, memory: list[float]) -> float:
    """The scale-free rule on one rate, its memory ``[m, v, r]`` updated in place."""
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


def next_lr(lr: float, grads: list[Tensor], previous: list[Tensor], group: dict[str, Any], memory: list[float]) -> float:
    """alpha_t from alpha_{t-1}, g_t and u_{t-1} (the paper's additive rule, normalised HDM, or the
    scale-free rule with the rate's ``memory``)."""
    beta = group["hypergrad_lr"]
    dot = sum(float((g.double() * u.double()).sum()) for g, u in zip(grads, previous))
    if group["hypergrad_rule"] == "additive":
        new_lr = lr + beta * dot
    elif group["hypergrad_rule"] == "scalefree":
        g_squared = sum(float(g.double().pow(2).sum()) for g in grads)
        u_squared = sum(float(u.double().pow(2).sum()) for u in previous)
        new_lr = scalefree(lr, dot, g_squared, u_squared, beta, memory)
    else:
        g_norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        u_norm = math.sqrt(sum(float(u.double().pow(2).sum()) for u in previous))
        cosine = dot / (g_norm * u_norm) if g_norm * u_norm > 0 else 0.0
        new_lr = lr * (1 + beta * cosine)
    new_lr = clipped(new_lr, group)
    return new_lr if math.isfinite(new_lr) else lr


def clipped(lr: float, group: dict[str, Any]) -> float:
    """``lr`` clipped into ``lr_bounds`` (the initial rate too)."""
    if group["lr_bounds"] is None:
        return lr
    return min(max(lr, group["lr_bounds"][0]), group["lr_bounds"][1])


def next_weight_rates(rates: Tensor, g: Tensor, previous: Tensor, group: dict[str, Any],
                      memories: list[list[float]]) -> Tensor:
    """Per-weight rates: ``r + beta * g * u``, ``r * (1 + beta * sign(g * u))``, or the scale-free
    rule weight by weight (each with its memory), clipped."""
    beta = group["hypergrad_lr"]
    if group["hypergrad_rule"] == "additive":
        new_rates = rates + beta * g * previous
    elif group["hypergrad_rule"] == "scalefree":
        flat = [
            scalefree(float(rate), float(gi) * float(ui), float(gi) ** 2, float(ui) ** 2, beta, memory)
            for rate, gi, ui, memory in zip(rates.reshape(-1), g.reshape(-1), previous.reshape(-1), memories)
        ]
        new_rates = torch.tensor(flat, dtype=rates.dtype).reshape(rates.shape)
    else:
        new_rates = rates * (1 + beta * torch.sign(g * previous))
    if group["lr_bounds"] is not None:
        new_rates = new_rates.clamp(group["lr_bounds"][0], group["lr_bounds"][1])
    return torch.where(torch.isfinite(new_rates), new_rates, rates)


def blend(rate: Any, group: dict[str, Any]) -> Any:
    """alpha_t = delta(t) alpha_t^HD + (1 - delta(t)) alpha_inf, delta(t) = t^-p (paper, Sec. 5)."""
    if group["lr_limit"] is None:
        return rate
    delta = group["t"] ** -group["lr_limit_power"]
    return delta * rate + (1 - delta) * group["lr_limit"]
