"""The hypergradient rule: the one place where a learning rate learns from its own gradient.

Every base rule we wrap moves the parameters as ``theta_t = theta_{t-1} - alpha_t * u_t``. Holding
everything else fixed, the derivative of the loss at step t with respect to the previous learning
rate is ``h_t = -g_t . u_{t-1}`` (``g_t`` the gradient the base rule uses at step t). The optimizers
compute the statistics of that dot product; this module turns them into the new learning rate
(the keywords are checked in ``_validation.py``):

* additive (the paper's HD): ``alpha_t = alpha_{t-1} + beta * g_t . u_{t-1}``
* multiplicative (normalised HDM): ``alpha_t = alpha_{t-1} * (1 + beta * cos(g_t, u_{t-1}))``
* scale-free: Adam-normalised steps on ``log alpha`` driven by ``c_t = cos(g_t, u_{t-1})``, and a
  guard that halves the rate when ``|g_t|^2`` jumps above its running reference (see
  :func:`scalefree_lr`; it keeps a memory of three numbers per rate)

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

import torch
from torch import Tensor

from . import _compiled
from ._kernels import LearningRate, as_real
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
    if rule == "additive":
        per_tensor = [flat_dot(g, u) for g, u in zip(grads, directions)]
    else:
        per_tensor = [torch.stack((flat_dot(g, u), flat_dot(g, g), flat_dot(u, u))) for g, u in zip(grads, directions)]
    if not per_tensor:
        return None
    return statistics_rows(torch.stack(per_tensor), rule, scales)


def statistics_rows(sums: Tensor, rule: str, scales: Sequence[float | Tensor] | None = None) -> Tensor:
    """The rows of :func:`tensor_statistics` from the per-tensor sums of the unscaled directions,
    ``(tensors,)`` (``g . u``, additive rule) or ``(tensors, 3)`` (``g . u, |g|^2, |u|^2``):
    accumulated in float64 where the device has it, each row times its scale (``|u|^2`` times its
    square). Every way of taking the sums (one dot per tensor, a compiled pass) ends here."""
    device = sums.device
    accumulate = torch.float64 if device.type != "mps" else torch.float32
    stacked = sums.to(accumulate)
    if rule == "additive":
        stacked = stacked[:, None]
    if scales is not None:
        if all(isinstance(s, float) for s in scales):  # host numbers: one tensor, not one per scale
            scale = torch.tensor(scales, dtype=accumulate, device=device)
        else:
            scale = torch.stack([torch.as_tensor(s, dtype=accumulate, device=device) for s in scales])
        if rule == "additive":
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
        statistics.append(product[None] if rule == "additive" else torch.stack((product, g * g, u * u)))
    return statistics


#: The scale-free rule's constants: the momentum and second-moment decays of its Adam-normalised
#: steps on log alpha, the factor over its running reference that |g_t|^2 must pass for the guard
#: to halve the rate, and the decay of that reference (its default beta is in ``_keywords.py``).
SCALEFREE_MOMENTUM = 0.9
SCALEFREE_SECOND_MOMENT = 0.99
SCALEFREE_GUARD = 16.0
SCALEFREE_REFERENCE = 0.9
#: How many numbers of memory the rule keeps per rate (dimension 0 of its memory tensor).
RULE_MEMORY = {"additive": 0, "multiplicative": 0, "scalefree": 3}


def rule_memory(holder: dict, rule: str, like: Tensor) -> Tensor | None:
    """The memory the rule keeps per rate, ``holder["hypergrad_memory"]`` (the group at group
    granularity, a parameter's state otherwise), created as zeros shaped ``(3, *like.shape)`` in
    ``like``'s dtype and device (float64 where ``like`` is a float rate); None for a rule without
    memory."""
    size = RULE_MEMORY[rule]
    if size == 0:
        return None
    memory = holder.get("hypergrad_memory")
    if memory is None:
        like = torch.as_tensor(like, dtype=torch.float64) if not isinstance(like, Tensor) else like
        memory = holder["hypergrad_memory"] = like.new_zeros((size, *like.shape))
    return memory


def scalefree_lr(lr: LearningRate, statistics: Tensor, beta: float | Tensor, memory: Tensor) -> Tensor:
    """The scale-free rule: ``alpha_t`` from ``alpha_{t-1}``, the statistics
    ``[g.u, |g|^2, |u|^2]`` and the rate's memory ``[m, v, r]`` (updated in place).

    With ``c_t = cos(g_t, u_{t-1})`` (0 when either vector is zero; per weight, the sign of
    ``g * u``) and ``q_t = |g_t|^2``::

        m_t = mu m_{t-1} + (1 - mu) c_t                  (mu = 0.9)
        v_t = nu v_{t-1} + (1 - nu) c_t^2                (nu = 0.99)
        s_t = clip(m_t / sqrt(v_t), -1, 1)               (0 when v_t = 0)
        log alpha_t = log alpha_{t-1} + beta * s_t       if q_t <= kappa r_{t-1}
        log alpha_t = log alpha_{t-1} - log 2, m_t = min(m_t, 0)   otherwise (the guard)
        r_t = rho r_{t-1} + (1 - rho) q_t                (r_t = q_t when r_{t-1} = 0; rho = 0.9)

    with ``kappa = 16`` (the gradient norm four times its running RMS). A diverging rate makes
    ``q_t`` grow geometrically, by more than ``kappa (1 - rho) + rho = 2.5`` a step, faster than
    its running mean, so the guard halves the rate at every step until the growth stops; a
    gradient that settles on a higher level is caught up by ``r`` within about
    ``1 / (kappa (1 - rho))`` ~ 1 step, so the guard does not keep halving there. ``-c_t`` is the
    hypergradient ``h_t = -g_t . u_{t-1}`` divided by ``|g_t| |u_{t-1}|``, so nothing in the rule
    depends on the scale of the loss or of the parameters, and ``beta`` is dimensionless: the
    largest change of ``log alpha`` in one step. A non-finite ``q_t`` (or statistic) halves the
    rate and leaves the memory as it was; a zero ``g_t`` or ``u_{t-1}`` (no previous direction, a
    weight without gradient) leaves both as they were.
    """
    dot, g_squared, u_squared = statistics[0], statistics[1], statistics[2]
    momentum, second, reference = memory[0], memory[1], memory[2]
    finite = torch.isfinite(dot) & torch.isfinite(g_squared) & torch.isfinite(u_squared)
    norm_product = (g_squared * u_squared).sqrt()
    informative = finite & (norm_product > 0)
    cosine = torch.where(informative, dot / norm_product, torch.zeros_like(dot))
    mu, nu = SCALEFREE_MOMENTUM, SCALEFREE_SECOND_MOMENT
    new_momentum = mu * momentum + (1 - mu) * cosine
    new_second = nu * second + (1 - nu) * cosine * cosine
    normalised = torch.where(new_second > 0, new_momentum / new_second.sqrt(), torch.zeros_like(cosine))
    limit = SCALEFREE_GUARD * reference
    guard = ~finite | ((reference > 0) & (g_squared > limit))
    step = torch.where(guard, torch.full_like(cosine, -math.log(2.0)), beta * normalised.clamp(-1.0, 1.0))
    step = torch.where(informative | guard, step, torch.zeros_like(step))
    new_momentum = torch.where(guard, new_momentum.clamp(max=0.0), new_momentum)
    rho = SCALEFREE_REFERENCE
    new_reference = torch.where(reference > 0, rho * reference + (1 - rho) * g_squared, g_squared)
    memory.copy_(torch.where(informative, torch.stack((new_momentum, new_second, new_reference)), memory))
    return lr * step.exp()


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
    """The group's next learning rate from the statistics of ``g_t . u_{t-1}`` (a 0-dim tensor).

    Additive: ``lr + beta * dot``. Multiplicative: ``lr * (1 + beta * dot / (|g| |u|))``, with the
    cosine taken as 0 when either vector is zero (the first step). Scale-free: see
    :func:`scalefree_lr` (``memory``: the rate's, from :func:`rule_memory`, updated in place). Then
    clipped into ``lr_bounds``; a non-finite result (from a NaN or inf gradient) leaves ``lr``
    unchanged.

    Elementwise throughout: ``lr`` may also be a tensor of rates (one per tensor, or one per
    weight) with the statistics stacked along dimension 0 (``statistics[0]`` shaped like ``lr``).
    ``compiled``: one rate on the CPU takes the rule in one compiled call where it can
    (``_compiled.py``; the fused path's choice).
    """
    settings = (group["hypergrad_lr"], group["hypergrad_rule"], group["lr_bounds"])
    if compiled and settings[1] == "scalefree" and statistics.dim() == 1:
        new_lr = _compiled.rule_update(_rule_update, lr, statistics, memory, *settings)
        if new_lr is not None:
            return new_lr
    return _rule_update(lr, statistics, *settings, memory)


def _rule_update(
    lr: LearningRate, statistics: Tensor, beta: float | Tensor, rule: str,
    bounds: tuple[float, float] | None, memory: Tensor | None,
) -> Tensor:
    dot = statistics[0]
    if rule == "additive":
        new_lr = lr + beta * dot
    elif rule == "scalefree":
        assert memory is not None
        new_lr = scalefree_lr(lr, statistics, beta, memory)
    else:
        norm_product = (statistics[1] * statistics[2]).sqrt()
        cosine = torch.where(norm_product > 0, dot / norm_product, torch.zeros_like(dot))
        new_lr = lr * (1.0 + beta * cosine)
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
