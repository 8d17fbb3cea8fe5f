"""The hypergradient rule: the one place where a learning rate learns from its own gradient.

Every base rule we wrap moves the parameters as ``theta_t = theta_{t-1} - alpha_t * u_t``. Holding
everything else fixed, the derivative of the loss at step t with respect to the previous learning
rate is ``h_t = -g_t . u_{t-1}`` (``g_t`` the gradient the base rule uses at step t). The optimizers
compute the statistics of that dot product; this module validates the hypergradient settings and
turns the statistics into the new learning rate:

* additive (the paper's HD): ``alpha_t = alpha_{t-1} + beta * g_t . u_{t-1}``
* multiplicative (normalised HDM): ``alpha_t = alpha_{t-1} * (1 + beta * cos(g_t, u_{t-1}))``

then clips into ``lr_bounds`` and keeps the previous value when the result is not finite. The same
rule serves every granularity: one rate per param group (the paper), per parameter tensor, or per
weight, because it works elementwise on whatever shape the rates and statistics have. The
convergence-ensuring blend towards a fixed ``lr_limit`` (paper, Sec. 5) is applied on top. The
learning rate may be a Python float (CPU, one host read per group per step, which costs nothing
there) or a 0-dim tensor on the parameters' device (no host-device synchronisation at all).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal, Union

import torch
from torch import Tensor

HypergradRule = Literal["additive", "multiplicative"]
HYPERGRAD_RULES: tuple[str, ...] = ("additive", "multiplicative")
Granularity = Literal["group", "tensor", "element"]
GRANULARITIES: tuple[str, ...] = ("group", "tensor", "element")
LearningRate = Union[float, Tensor]


def _as_float(value: LearningRate) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


def validate_lr(lr: LearningRate, name: str = "lr") -> None:
    """Raise ``ValueError`` unless ``lr`` is a finite non-negative number or a 1-element tensor."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"{name} as a tensor must have exactly one element, got shape {tuple(lr.shape)}")
        if lr.requires_grad:
            raise ValueError(f"{name} as a tensor must not require grad")
    elif not isinstance(lr, (int, float)) or isinstance(lr, bool):
        raise TypeError(f"{name} must be a float or a 0-dim tensor, got {type(lr).__name__}")
    value = _as_float(lr)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"Invalid {name}: {value} (must be a finite number >= 0)")


def validate_hypergrad_settings(
    hypergrad_lr: float, hypergrad_rule: str, lr_bounds: Sequence[float] | None
) -> tuple[float, float] | None:
    """Check the hypergradient keywords shared by every HD optimizer; return normalised bounds."""
    if isinstance(hypergrad_lr, bool) or not isinstance(hypergrad_lr, (int, float)):
        raise TypeError(f"hypergrad_lr must be a float, got {type(hypergrad_lr).__name__}")
    if not math.isfinite(hypergrad_lr) or hypergrad_lr < 0.0:
        raise ValueError(f"Invalid hypergrad_lr: {hypergrad_lr} (must be a finite number >= 0)")
    if hypergrad_rule not in HYPERGRAD_RULES:
        raise ValueError(f"Invalid hypergrad_rule: {hypergrad_rule!r} (must be one of {HYPERGRAD_RULES})")
    if hypergrad_rule == "multiplicative" and hypergrad_lr >= 1.0:
        raise ValueError(
            f"Invalid hypergrad_lr: {hypergrad_lr} for hypergrad_rule='multiplicative' "
            "(must be in [0, 1) so that the learning rate stays positive)"
        )
    if lr_bounds is None:
        return None
    try:
        low, high = (float(b) for b in lr_bounds)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid lr_bounds: {lr_bounds!r} (must be a pair (low, high) of numbers)") from None
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(f"Invalid lr_bounds: {lr_bounds!r} (must satisfy low <= high)")
    return (low, high)


def validate_variant_settings(
    granularity: str, lr_limit: float | None, lr_limit_power: float, lr_bounds: tuple[float, float] | None
) -> None:
    """Check the keywords of the granularity and the convergence-ensuring blend."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"Invalid granularity: {granularity!r} (must be one of {GRANULARITIES})")
    if isinstance(lr_limit_power, bool) or not isinstance(lr_limit_power, (int, float)):
        raise TypeError(f"lr_limit_power must be a float, got {type(lr_limit_power).__name__}")
    if not (math.isfinite(lr_limit_power) and lr_limit_power > 1.0):
        # t * delta(t) -> 0 is what the paper's convergence argument needs: delta(t) = t^-p, p > 1.
        raise ValueError(f"Invalid lr_limit_power: {lr_limit_power} (must be a finite number > 1)")
    if lr_limit is None:
        return
    if isinstance(lr_limit, bool) or not isinstance(lr_limit, (int, float)):
        raise TypeError(f"lr_limit must be a float or None, got {type(lr_limit).__name__}")
    if not math.isfinite(lr_limit) or lr_limit < 0.0:
        raise ValueError(f"Invalid lr_limit: {lr_limit} (must be a finite number >= 0)")
    if lr_bounds is not None and not lr_bounds[0] <= lr_limit <= lr_bounds[1]:
        raise ValueError(f"Invalid lr_limit: {lr_limit} (must lie inside lr_bounds {lr_bounds})")


def check_group_settings(group: dict) -> None:
    """Validate the hypergradient keys of one param group (groups may override the defaults)."""
    validate_lr(group["lr"])
    group["lr_bounds"] = validate_hypergrad_settings(
        group["hypergrad_lr"], group["hypergrad_rule"], group["lr_bounds"]
    )
    validate_variant_settings(
        group["granularity"], group["lr_limit"], group["lr_limit_power"], group["lr_bounds"]
    )


def flat_dot(a: Tensor, b: Tensor) -> Tensor:
    """``sum(a * b)`` over all elements in one pass (a real dot product for complex tensors too)."""
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    return torch.dot(a.reshape(-1), b.reshape(-1))


def tensor_statistics(
    grads: Sequence[Tensor],
    directions: Iterable[Tensor],
    rule: str,
    scales: Sequence[float | Tensor] | None = None,
) -> Tensor | None:
    """Statistics of ``g_t . u_{t-1}`` per tensor: rows ``[dot]`` or ``[dot, |g|^2, |u|^2]``.

    ``grads`` are the gradients the base rule uses at step t and ``directions`` yields the previous
    update directions, pairwise (it may be a generator, so that a direction recomputed from
    optimizer state lives only while its dot product is taken). ``scales`` multiplies each
    direction (Adam's bias corrections), so that it need not be materialised scaled. One
    ``(tensors, 1 or 3)`` tensor comes back, accumulated on the tensors' device in float64 where
    the device has it, so that the learning rate does not lose precision to float32; ``None`` when
    there is no previous direction at all (the first step), which leaves the learning rate as it is.
    """
    per_tensor = []
    for g, u in zip(grads, directions):
        if rule == "additive":
            per_tensor.append(flat_dot(g, u).reshape(1))
        else:
            per_tensor.append(torch.stack((flat_dot(g, u), flat_dot(g, g), flat_dot(u, u))))
    if not per_tensor:
        return None
    device = per_tensor[0].device
    accumulate = torch.float64 if device.type != "mps" else torch.float32
    stacked = torch.stack(per_tensor).to(accumulate)
    if scales is not None:
        scale = torch.stack([torch.as_tensor(s, dtype=accumulate, device=device) for s in scales])
        if rule == "additive":
            stacked = stacked * scale[:, None]
        else:
            stacked = stacked * torch.stack((scale, torch.ones_like(scale), scale * scale), 1)
    return stacked


def hypergradient_statistics(
    grads: Sequence[Tensor],
    directions: Iterable[Tensor],
    rule: str,
    scales: Sequence[float | Tensor] | None = None,
) -> Tensor | None:
    """Statistics of ``g_t . u_{t-1}`` over a group, ``[dot]`` or ``[dot, |g|^2, |u|^2]``: the
    rows of :func:`tensor_statistics` summed (one learning rate per group, as in the paper)."""
    rows = tensor_statistics(grads, directions, rule, scales)
    return None if rows is None else rows.sum(0)


def element_statistics(
    grads: Sequence[Tensor],
    directions: Iterable[Tensor],
    rule: str,
    scales: Sequence[float | Tensor] | None = None,
) -> list[Tensor]:
    """Statistics per weight, one ``(1 or 3, *shape)`` tensor per parameter: ``[g*u]`` or
    ``[g*u, g^2, u^2]``, so that :func:`updated_lr` applied to a tensor of per-weight rates gives
    ``alpha_ij + beta * g_ij * u_ij`` (additive) or ``alpha_ij * (1 + beta * sign(g_ij u_ij))``
    (multiplicative: the cosine of two numbers is the sign of their product)."""
    statistics = []
    for index, (g, u) in enumerate(zip(grads, directions)):
        if scales is not None:
            u = u * scales[index]
        product = g * u
        statistics.append(product[None] if rule == "additive" else torch.stack((product, g * g, u * u)))
    return statistics


def blend_weight(step: int, power: float) -> float:
    """``delta(t) = t^-power``: the weight of the HD rate in the blend at step ``t >= 1``."""
    return float(step) ** -power


def blended_lr(hypergrad_rate: LearningRate, group: dict, step: int) -> LearningRate:
    """The paper's convergence-ensuring blend (Sec. 5):
    ``alpha_t = delta(t) * alpha_t^HD + (1 - delta(t)) * lr_limit`` with ``delta(t) = t^-p``.
    ``alpha^HD`` keeps its own, unblended chain, as in the paper's proof (it grows at most
    linearly in t, which is why ``t * delta(t) -> 0`` makes the blend converge to ``lr_limit``)."""
    delta = blend_weight(step, group["lr_limit_power"])
    return delta * hypergrad_rate + (1.0 - delta) * group["lr_limit"]


def updated_lr(lr: LearningRate, statistics: Tensor, group: dict) -> Tensor:
    """The group's next learning rate from the statistics of ``g_t . u_{t-1}`` (a 0-dim tensor).

    Additive: ``lr + beta * dot``. Multiplicative: ``lr * (1 + beta * dot / (|g| |u|))``, with the
    cosine taken as 0 when either vector is zero (the first step). Then clipped into
    ``lr_bounds``; a non-finite result (from a NaN or inf gradient) leaves ``lr`` unchanged.

    Elementwise throughout: ``lr`` may also be a tensor of rates (one per tensor, or one per
    weight) with the statistics stacked along dimension 0 (``statistics[0]`` shaped like ``lr``).
    """
    beta = group["hypergrad_lr"]
    dot = statistics[0]
    if group["hypergrad_rule"] == "additive":
        new_lr = lr + beta * dot
    else:
        norm_product = (statistics[1] * statistics[2]).sqrt()
        cosine = torch.where(norm_product > 0, dot / norm_product, torch.zeros_like(dot))
        new_lr = lr * (1.0 + beta * cosine)
    bounds = group["lr_bounds"]
    if bounds is not None:
        new_lr = new_lr.clamp(bounds[0], bounds[1])
    return torch.where(torch.isfinite(new_lr), new_lr, lr)


def store_lr(group: dict, new_lr: Tensor) -> None:
    """Write the new learning rate back in the form the group keeps it (float or tensor, in place)."""
    lr = group["lr"]
    if isinstance(lr, Tensor):
        # Written through a 1-element view: torch.compile (2.13) drops in-place writes to a 0-dim
        # CPU tensor that lives outside the compiled function.
        lr.view(1).copy_(new_lr.reshape(1))
    else:
        group["lr"] = new_lr.item()
