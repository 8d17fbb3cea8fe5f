"""The statistics of the hypergradient, and the step from them to a group's new rate.

Every base rule we wrap moves the parameters as ``theta_t = theta_{t-1} - alpha_t * u_t``. Holding
everything else fixed, the derivative of the loss at step t with respect to the previous learning
rate is ``h_t = -g_t . u_{t-1}`` (``g_t`` the gradient the base rule uses at step t). This module
takes the statistics of that dot product that the group's rule reads (``[g.u]`` or
``[g.u, |g|^2, |u|^2]``, summed over a group or a tensor, or per weight) and hands them to the
rule (one entry each in ``_rules.py``: additive, multiplicative, scale-free, ...), which turns
them into the new learning rate; clipped into ``lr_bounds``, kept where not finite. The same rule
serves every granularity: one rate per param group (the paper), per parameter tensor, or per
weight, because it works elementwise on whatever shape the rates and statistics have. The
convergence-ensuring blend towards a fixed ``lr_limit`` (paper, Sec. 5) is applied on top. The
learning rate may be a Python float (CPU, one host read per group per step, which costs nothing
there) or a 0-dim tensor on the parameters' device (no host-device synchronisation at all).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from . import _compiled
from ._kernels import LearningRate, as_real
from ._rules import RULES, next_rate
from .distributed import local_operands


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the statistics of parameters of ``dtype`` are taken in: float32 at least (a
    float16 dot product over a few thousand weights overflows, a bfloat16 one loses the rate's
    small changes), float64 where the parameters have it."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


#: Dtypes whose dot product :func:`flat_dot` takes as they are (real, their own accumulation dtype).
_DOT_DTYPES = (torch.float32, torch.float64)


def flat_dot(a: Tensor, b: Tensor) -> Tensor:
    """``sum(a * b)`` over all elements in one pass (a real dot product for complex tensors too),
    in :func:`accumulation_dtype`.

    For sharded DTensors, the part of the sum this rank counts (see ``distributed.py``).
    """
    if type(a) is Tensor and type(b) is Tensor and a.dtype == b.dtype and a.dtype in _DOT_DTYPES:
        return torch.dot(a.reshape(-1), b.reshape(-1))  # the common case, without the checks below
    a, b = local_operands(a, b)
    a, b = as_real(a), as_real(b)
    dtype = accumulation_dtype(a.dtype)
    return torch.dot(a.reshape(-1).to(dtype), b.reshape(-1).to(dtype))


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
    if not RULES[rule].norms:
        per_tensor = [flat_dot(g, u) for g, u in zip(grads, directions)]
    else:
        per_tensor = [torch.stack((flat_dot(g, u), flat_dot(g, g), flat_dot(u, u))) for g, u in zip(grads, directions)]
    if not per_tensor:
        return None
    return statistics_rows(torch.stack(per_tensor), rule, scales)


def statistics_rows(sums: Tensor, rule: str, scales: Sequence[float | Tensor] | None = None) -> Tensor:
    """The rows of :func:`tensor_statistics` from the per-tensor sums of the unscaled directions,
    ``(tensors,)`` (``g . u``, a rule that reads only it) or ``(tensors, 3)`` (``g . u, |g|^2, |u|^2``):
    accumulated in float64 where the device has it, each row times its scale (``|u|^2`` times its
    square). Every way of taking the sums (one dot per tensor, a compiled pass) ends here."""
    device = sums.device
    accumulate = torch.float64 if device.type != "mps" else torch.float32
    stacked = sums.to(accumulate)
    norms = RULES[rule].norms
    if not norms:
        stacked = stacked[:, None]
    if scales is not None:
        if all(isinstance(s, float) for s in scales):  # host numbers: one tensor, not one per scale
            scale = torch.tensor(scales, dtype=accumulate, device=device)
        else:
            scale = torch.stack([torch.as_tensor(s, dtype=accumulate, device=device) for s in scales])
        if not norms:
            stacked = stacked * scale[:, None]
        else:
            stacked = stacked * torch.stack((scale, torch.ones_like(scale), scale * scale), 1)
    return stacked


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
        dtype = accumulation_dtype(g.dtype)
        g, u = g.to(dtype), u.to(dtype)
        if scales is not None:
            u = u * scales[index]
        product = g * u
        statistics.append(product[None] if not RULES[rule].norms else torch.stack((product, g * g, u * u)))
    return statistics


def rule_memory(holder: dict, rule: str, like: Tensor) -> Tensor | None:
    """The memory the rule keeps per rate, ``holder["hypergrad_memory"]`` (the group at group
    granularity, a parameter's state otherwise), created as zeros shaped ``(len(memory), *like.shape)``
    in ``like``'s dtype and device (float64 where ``like`` is a float rate); None for a rule without
    memory."""
    size = len(RULES[rule].memory)
    if size == 0:
        return None
    memory = holder.get("hypergrad_memory")
    if memory is None:
        like = torch.as_tensor(like, dtype=torch.float64) if not isinstance(like, Tensor) else like
        memory = holder["hypergrad_memory"] = like.new_zeros((size, *like.shape))
    return memory


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


def updated_lr(
    lr: LearningRate, statistics: Tensor, group: dict, memory: Tensor | None = None, *, compiled: bool = False
) -> Tensor:
    """The group's next learning rate from the statistics of ``g_t . u_{t-1}`` (a 0-dim tensor):
    the group's rule (``_rules.py``; ``memory``: the rate's, from :func:`rule_memory`, updated in
    place), clipped into ``lr_bounds``; a non-finite result (from a NaN or inf gradient) leaves
    ``lr`` unchanged.

    Elementwise throughout: ``lr`` may also be a tensor of rates (one per tensor, or one per
    weight) with the statistics stacked along dimension 0 (``statistics[0]`` shaped like ``lr``).
    ``compiled``: one rate on the CPU takes a rule marked ``compiled`` in one compiled call where
    it can (``_compiled.py``; the fused path's choice).
    """
    settings = (group["hypergrad_lr"], group["hypergrad_rule"], group["lr_bounds"])
    if compiled and RULES[settings[1]].compiled and statistics.dim() == 1:
        new_lr = _compiled.rule_update(next_rate, lr, statistics, memory, *settings)
        if new_lr is not None:
            return new_lr
    return next_rate(lr, statistics, *settings, memory)


def store_lr(group: dict, new_lr: Tensor) -> None:
    """Write the new learning rate back in the form the group keeps it (float or tensor, in place)."""
    lr = group["lr"]
    if isinstance(lr, Tensor):
        # Written through a 1-element view: torch.compile (2.13) drops in-place writes to a 0-dim
        # CPU tensor that lives outside the compiled function.
        lr.view(1).copy_(new_lr.reshape(1))
    else:
        group["lr"] = new_lr.item()
