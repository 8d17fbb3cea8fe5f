"""The statistics of the hypergradient that a rule reads.

Every base rule we wrap moves the parameters as ``theta_t = theta_{t-1} - alpha_t * u_t``. Holding
everything else fixed, the derivative of the loss at step t with respect to the previous learning
rate is ``h_t = -g_t . u_{t-1}`` (``g_t`` the gradient the base rule uses at step t). This module
takes the statistics of that dot product that the group's rule reads (``[g.u]`` or
``[g.u, |g|^2, |u|^2]``, summed over a group or a tensor, or per weight), which the group's rule
(one entry each in ``_rules.py``) turns into the new rate (``_rates.py``). Sums are accumulated in
float64 where the device has it, so that the rate does not lose its small changes to float32
(the sums over tensors: a tensor's dot product is taken in its dtype, float32 at least, and so
is a small group's over its flat copies, :data:`FLAT_ELEMENTS_PER_DOT`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ._compat import flat_copy
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
    if _plain_pair(a, b):
        return torch.dot(_flat(a), _flat(b))  # the common case, without the checks below
    a, b = local_operands(a, b)
    a, b = as_real(a), as_real(b)
    dtype = accumulation_dtype(a.dtype)
    return torch.dot(a.reshape(-1).to(dtype), b.reshape(-1).to(dtype))


def _plain_pair(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` are plain tensors of one dtype whose dot product is taken as it is."""
    return type(a) is Tensor and type(b) is Tensor and a.dtype == b.dtype and a.dtype in _DOT_DTYPES


def _flat(a: Tensor) -> Tensor:
    return a if a.dim() == 1 else a.reshape(-1)  # (a 1-dim tensor without the reshape's dispatch)


def _sums(g: Tensor, u: Tensor, norms: bool) -> tuple[Tensor, ...]:
    """``g . u`` and, with ``norms``, ``|g|^2`` and ``|u|^2`` (:func:`flat_dot`; a plain pair
    flattened once for its three dot products)."""
    if not norms:
        return (flat_dot(g, u),)
    if _plain_pair(g, u):
        g, u = _flat(g), _flat(u)
        return torch.dot(g, u), torch.dot(g, g), torch.dot(u, u)
    return flat_dot(g, u), flat_dot(g, g), flat_dot(u, u)


#: A group's sums (``summed=True``) are taken over one flat copy of its gradients and one of its
#: directions, a dot product per statistic, where the group has fewer elements than this many per
#: dot product saved (``(tensors - 1) * statistics``): on the CPU a dot product's dispatch costs
#: about as much as copying some 5k elements twice (``benchmarks/overhead.py``, loaded machine:
#: a 4-tensor group of 1k elements, the three sums 23 -> 11 us; 28 tensors of 230k, 216 -> 147 us;
#: 4 tensors of 100k, 48 -> 59 us).
FLAT_ELEMENTS_PER_DOT = 5_000


def tensor_statistics(
    grads: Sequence[Tensor],
    directions: Iterable[Tensor],
    rule: str,
    scales: Sequence[float | Tensor] | None = None,
    *,
    summed: bool = False,
) -> Tensor | None:
    """Statistics of ``g_t . u_{t-1}`` per tensor: rows ``[dot]`` or ``[dot, |g|^2, |u|^2]``.

    ``grads`` are the gradients the base rule uses at step t and ``directions`` yields the previous
    update directions, pairwise (it may be a generator, so that a direction recomputed from
    optimizer state lives only while its dot product is taken). ``scales`` multiplies each
    direction (Adam's bias corrections), so that it need not be materialised scaled. One
    ``(tensors, 1 or 3)`` tensor comes back, accumulated on the tensors' device in float64 where
    the device has it, so that the learning rate does not lose precision to float32; ``None`` when
    there is no previous direction at all (the first step), which leaves the learning rate as it is.
    ``summed``: only the rows' sum is used (one rate per group); then one row, of a small group's
    flat copies (:data:`FLAT_ELEMENTS_PER_DOT`), may stand for the tensors' rows.
    """
    norms = RULES[rule].norms
    if summed and flat_pays(grads, rule, scales):
        directions = list(directions)
        if all(_plain_pair(g, u) and g.is_cpu and g.dtype == grads[0].dtype for g, u in zip(grads, directions)):
            pair = flat_copy([*grads, *directions]).view(2, -1)
            return flat_statistics(pair, rule, 1.0 if scales is None else scales[0])
    sums = [total for g, u in zip(grads, directions) for total in _sums(g, u, norms)]
    if not sums:
        return None
    stacked = torch.stack(sums)  # every sum in one stack (several dtypes: promoted to the widest)
    return statistics_rows(stacked.view(-1, 3) if norms else stacked, rule, scales)


def flat_pays(grads: Sequence[Tensor], rule: str, scales: Sequence[float | Tensor] | None = None, *,
              streams: int = 2) -> bool:
    """Whether a group's sums over flat copies of ``streams`` parameter-sized operands (the
    gradients and the directions; Adam's recomputation copies ``g``, ``m``, ``v`` and a fourth)
    cost less than the rule's dot products a tensor (:data:`FLAT_ELEMENTS_PER_DOT`, measured for
    two); its directions' scales must be one host number."""
    if len(grads) < 2 or (scales is not None and not all(isinstance(s, float) and s == scales[0] for s in scales)):
        return False
    saved = (3 if RULES[rule].norms else 1) * (len(grads) - 1)
    return sum(g.numel() for g in grads) * streams < 2 * FLAT_ELEMENTS_PER_DOT * saved


def flat_statistics(pair: Tensor, rule: str, scale: float = 1.0) -> Tensor:
    """The one row of :func:`tensor_statistics` of a group from ``pair``, a ``(2, n)`` copy of its
    gradients (row 0) and unscaled directions (row 1), which it may overwrite (row 1 is scaled in
    place, once): ``g . u`` alone, or with the norms from one matrix product ``pair pair^T``."""
    if scale != 1.0:
        pair[1].mul_(scale)
    if not RULES[rule].norms:
        return statistics_rows(torch.dot(pair[0], pair[1])[None], rule)
    gram = torch.mm(pair, pair.t())  # [[g.g, g.u], [u.g, u.u]]
    return statistics_rows(torch.take(gram, _gram_order(gram.device)).view(1, 3), rule)


_GRAM_ORDER = {}


def _gram_order(device: torch.device) -> Tensor:
    """The indices of ``g.u``, ``|g|^2`` and ``|u|^2`` in a flattened 2x2 Gram matrix (made once
    per device)."""
    order = _GRAM_ORDER.get(device)
    if order is None:
        order = _GRAM_ORDER[device] = torch.tensor([1, 0, 3], device=device)
    return order


def statistics_rows(sums: Tensor, rule: str, scales: Sequence[float | Tensor] | None = None) -> Tensor:
    """The rows of :func:`tensor_statistics` from the per-tensor sums of the unscaled directions,
    ``(tensors,)`` (``g . u``, a rule that reads only it) or ``(tensors, 3)`` (``g . u, |g|^2, |u|^2``):
    accumulated in float64 where the device has it, each row times its scale (``|u|^2`` times its
    square). Every way of taking the sums (one dot per tensor, a compiled pass) ends here."""
    device = sums.device
    accumulate = torch.float64 if device.type != "mps" else torch.float32
    norms = RULES[rule].norms
    if scales is not None and all(isinstance(s, float) for s in scales):  # host numbers: one factors tensor
        factors = [[s] for s in scales] if not norms else [[s, 1.0, s * s] for s in scales]
        # (the product is taken in the factors' dtype: the sums are converted exactly, as by .to)
        return (sums if norms else sums[:, None]) * torch.tensor(factors, dtype=accumulate, device=device)
    stacked = sums.to(accumulate)
    if not norms:
        stacked = stacked[:, None]
    if scales is not None:
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
