"""The statistics of the hypergradient that a rule reads.

Every base rule we wrap moves the parameters as ``theta_t = theta_{t-1} - alpha_t * u_t``. Holding
everything else fixed, the derivative of the loss at step t with respect to the previous learning
rate is ``h_t = -g_t . u_{t-1}`` (``g_t`` the gradient the base rule uses at step t). This module
takes the statistics of that dot product that the group's rule reads (``[g.u]`` or
``[g.u, |g|^2, |u|^2]``, summed over a group or a tensor, or per weight), which the group's rule
(one entry each in ``_rules.py``) turns into the new rate (``_rates.py``). Sums are accumulated in
float64 where the device has it, so that the rate does not lose its small changes to float32.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ._kernels import as_real
from ._rules import RULES
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
    ``[g*u, g^2, u^2]``, so that a rule applied to a tensor of per-weight rates gives
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
