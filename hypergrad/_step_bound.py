"""The bound on a group's first update (``first_step_bound``), and on every update while its rule
climbs: the safety net from above.

A rate far too large does its damage at the first step, before the rule has a single statistic:
Adam's first update is ``lr * sign(g)`` on every weight, so at ``lr = 0.1`` it moves each weight
of a network whose initial weights have an RMS of 0.02 by five times that. After that the
gradient stays bounded and the cosine of successive directions need not turn negative, so
neither the hypergradient nor the scale-free rule's guard sees anything wrong. The bound looks at
the one thing that is wrong, the size of the step against the weights it moves::

    |Delta_t| <= rho |theta_{t-1}|       (L2 norms over the group's parameters that step)

with ``Delta_t = -alpha_t u_t`` the group's update (``alpha_t`` per group, tensor or weight).

* **At the group's first step** (none of the parameters that step has any state yet; a loaded
  checkpoint's group is past it) it is applied after the fact: where the update was larger,
  every rate of the group is scaled by ``s = rho |theta_0| / |Delta_1|`` (never below
  ``lr_bounds``' lower end) and the step is retracted to ``-s alpha_1 u_1``: exact, because no
  base rule's direction depends on its rate. HD then goes on from the scaled rate.
* **While the group's rule climbs** (a rule whose steps grow, :attr:`~hypergrad._rules.Rule.
  climbing_row`: the bracketing rule until its rate has turned twice; ``_rates.climbing``) it is
  applied to the update predicted from the previous direction, ``|alpha_t u_{t-1}|``, before the
  step: the rates are scaled by ``s = rho |theta_{t-1}| / |alpha_t u_{t-1}|`` where that is below
  1. A rate that grows by up to x2.2 a step reaches a too-large value as surely as a user's
  ``lr`` can, and its cosine turns only after the base rule's momentum has carried the damage for
  several steps. ``|u_{t-1}|^2`` is one of the rule's statistics, so this costs one norm of the
  parameters a step (no direction recomputed, nothing retracted), and nothing once it has
  climbed.

A good step is small against the weights (Adam at 1e-3 on a 784-1000-1000 MLP: 0.05 of
``|theta_0|``; SGD's first step is ``lr |g|``), so at ``rho = 0.1`` the bound does not bind at a
good rate. It does nothing where ``|theta_{t-1}| = 0`` (a group of zero-initialised tensors has no
scale to compare with) and nothing at ``hypergrad_lr = 0`` (the base optimizer, exactly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._kernels import LearningRate
from ._rates import applied_rate, scale_rates
from .distributed import all_reduce_statistics, local_operands, local_tensors


@dataclass
class FirstStep:
    """A group's first step, taken at its rates and waiting for the bound (:func:`first_step`):
    the group, its ``GroupTensors`` and ``StepRates``, the base rate, each parameter's rate, and
    ``sums``, this rank's ``(|theta_0|^2, |Delta_1|^2)``."""

    group: dict[str, Any]
    tensors: Any
    rates: Any
    lr: LearningRate
    rate_of: list[LearningRate]
    sums: Tensor


def first_step(optimizer: Any, group: dict[str, Any], tensors: Any, rates: Any, lr: LearningRate,
               theta_squared: Tensor) -> FirstStep:
    """The group's first step as the bound needs it, ``theta_squared`` taken before it: each
    parameter's rate and ``|Delta_1|^2`` from ``u_1``, as the optimizer's
    ``_previous_directions`` gives it now that the step is taken."""
    previous = optimizer._previous_directions(group, tensors)
    if rates.factors is None:
        rate_of = [rates.common] * len(tensors.params)
    else:
        rate_of = [applied_rate(group, factor, lr, rates.blend_step) for factor in rates.factors]
    scales = previous.scales
    moved_squared = counted_squares(
        ((rate_of[i] if scales is None else rate_of[i] * scales[k]) * direction
         for k, (i, direction) in enumerate(zip(previous.indices, previous.directions))),
        start=torch.zeros_like(theta_squared),
    )
    return FirstStep(group, tensors, rates, lr, rate_of, torch.stack((theta_squared, moved_squared)))


def bound_first_steps(optimizer: Any, steps: list[FirstStep]) -> None:
    """The bound, after the groups' first base steps (``HypergradOptimizer.step``): sharded groups
    sum their norms over the ranks in one all-reduce (every rank takes the same ``s``); where a
    group's update moved its parameters by more than ``rho |theta_0|``, each of its rates is scaled
    by ``s`` (``_rates.scale_rates``): per tensor or weight before the optimizer's
    ``_rescale_step`` moves each parameter on to its rate; per group after the step is retracted
    to ``-s alpha u``."""
    sums = all_reduce_statistics([step.tensors.params for step in steps], [step.sums for step in steps])
    for step, (theta_squared, moved_squared) in zip(steps, sums):
        group, tensors, rates = step.group, step.tensors, step.rates
        scale = bound_scale(group, theta_squared, moved_squared)
        if rates.factors is not None:
            scale_rates(group, local_tensors(rates.factors), clipped_scales(group, scale, step.rate_of))
            optimizer._rescale_step(group, tensors, rates.factors, step.lr, rates.blend_step)
            continue
        scales = clipped_scales(group, scale, [rates.common])
        optimizer._rescale_step(group, tensors, scales * len(tensors.params), rates.common, None)
        scale_rates(group, None, scales)


@dataclass
class GroupStep:
    """A group's step between its rates and its update (``HypergradOptimizer._group_rates``): the
    group, its ``GroupTensors``, base rate and ``StepRates``; ``statistics``, the rule's with
    ``|theta_{t-1}|^2`` (:func:`with_weight_norms`), where the rule climbs under the bound (else
    ``None``); ``theta_squared``, this rank's ``|theta_0|^2`` at the group's first step."""

    group: dict[str, Any]
    tensors: Any
    lr: LearningRate
    rates: Any
    statistics: Any
    theta_squared: Tensor | None


def with_weight_norms(group: dict[str, Any], params: Sequence[Tensor], statistics: Any) -> Any:
    """``statistics`` (a climbing rule's ``[g.u, |g|^2, |u|^2]`` at the group's granularity, this
    rank's part) with ``|theta_{t-1}|^2`` added as entry 3: summed over the group (``(4,)``), per
    tensor (a column), or per weight (``theta^2``, a fourth row); summed over the ranks with the
    statistics. The bracketing rule's gate reads it, and so does the bound below."""
    if group["granularity"] == "group":
        return torch.cat((statistics, counted_squares(params).to(statistics.dtype)[None]))
    if group["granularity"] == "tensor":
        return torch.cat((statistics, tensor_squares(params).to(statistics.dtype)[:, None]), 1)
    return [None if weights is None else torch.cat((weights, (p.detach().to(weights.dtype) ** 2)[None]))
            for p, weights in zip(params, statistics)]


def bound_climbing_steps(steps: list[GroupStep]) -> None:
    """The bound on the groups whose rule climbs, before their updates: each such group's rates
    (``step.rates``, replaced) scaled so that the update predicted from the previous direction,
    ``|alpha_t u_{t-1}|``, is at most ``rho |theta_{t-1}|`` (``|u_{t-1}|^2`` and
    ``|theta_{t-1}|^2`` from the statistics, entries 2 and 3, at the group's granularity).
    Per weight, the sums over the sharded groups' ranks in one all-reduce."""
    climbing = [step for step in steps if step.statistics is not None]
    if not climbing:
        return
    sums = [_predicted_update(step) for step in climbing]
    per_weight = [step for step, (_, local, _) in zip(climbing, sums) if local is not None]
    reduced = iter(all_reduce_statistics([step.tensors.params for step in per_weight],
                                         [local for _, local, _ in sums if local is not None]))
    for step, (rate_of, local, total) in zip(climbing, sums):
        theta_squared, predicted = next(reduced) if local is not None else total
        group, rates = step.group, step.rates
        scales = clipped_scales(group, bound_scale(group, theta_squared, predicted), rate_of)
        if rates.factors is not None:
            scale_rates(group, local_tensors(rates.factors), scales)
            continue
        # Taken before scale_rates, which may write a tensor group["lr"] (the same tensor) in place.
        common = rates.common * float(scales[0]) if isinstance(rates.common, float) else rates.common * scales[0]
        scale_rates(group, None, scales)
        step.rates = dataclasses.replace(rates, common=common)


def _predicted_update(step: GroupStep) -> tuple[list[LearningRate], Tensor | None, Tensor | None]:
    """Each rate of the group, and ``(|theta_{t-1}|^2, |alpha_t u_{t-1}|^2)`` (float64): per weight
    this rank's part (second), to be summed over the ranks; else the whole (third)."""
    group, rates, statistics = step.group, step.rates, step.statistics
    if rates.factors is None:
        rate = torch.as_tensor(rates.common, dtype=torch.float64)
        return [rates.common], None, torch.stack((statistics[3], rate ** 2 * statistics[2])).to(torch.float64)
    rate_of = [applied_rate(group, factor, step.lr, rates.blend_step) for factor in rates.factors]
    if group["granularity"] == "tensor":
        squares = torch.stack([torch.as_tensor(rate, dtype=torch.float64) for rate in rate_of]) ** 2
        rows = statistics.to(torch.float64)
        return rate_of, None, torch.stack((rows[:, 3].sum(), (squares * rows[:, 2]).sum()))
    local = None
    for rate, weights in zip(local_tensors(rate_of), statistics):
        if weights is not None:
            (weights,) = local_tensors([weights])
            weights = weights.to(torch.float64)
            part = torch.stack((weights[3].sum(), (rate.to(torch.float64) ** 2 * weights[2]).sum()))
            local = part if local is None else local + part
    return rate_of, local, None


def tensor_squares(tensors: Sequence[Tensor]) -> Tensor:
    """``|t|^2`` of each tensor over the elements this rank counts (see :func:`counted_squares`),
    a float64 vector: each norm in the tensor's own dtype (float32 at least), in one fused pass."""
    counted = [local_operands(tensor, tensor)[0] for tensor in tensors]
    counted = [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in counted]
    return torch.stack([norm.to(torch.float64) for norm in torch._foreach_norm(counted)]).square()


def counted_squares(tensors: Iterable[Tensor], start: Tensor | None = None) -> Tensor:
    """``start + sum |t|^2`` over the elements this rank counts (``distributed.local_operands``: a
    DTensor's local shard, a replicated one on the mesh's first rank only): each tensor's norm in
    its own dtype (float32 at least), their squares summed in float64; the caller sums it over the
    ranks (``distributed.all_reduce_statistics``). ``start``: what an empty ``tensors`` gives (a
    0-dim float64 tensor on their device); without it there must be one. A sequence is taken in
    one fused pass (:func:`tensor_squares`); any other iterable one tensor at a time, so that a
    generator of temporaries (the first step's ``alpha u``) holds one at a time."""
    if isinstance(tensors, Sequence):
        terms: Iterable[Tensor] = [tensor_squares(tensors).sum()] if tensors else []
    else:
        terms = (tensor_squares([tensor])[0] for tensor in tensors)
    total = start
    for term in terms:
        total = term if total is None else total + term
    assert total is not None, "counted_squares of no tensors needs a start"
    return total


def bound_scale(group: dict[str, Any], theta_squared: Tensor, moved_squared: Tensor) -> Tensor:
    """The scale ``s`` of the group's rates (a 0-dim float64 tensor, 1 where the bound does not
    bind) from ``|theta_{t-1}|^2`` and ``|Delta_t|^2`` (or its prediction)."""
    scale = group["first_step_bound"] * theta_squared.sqrt() / moved_squared.sqrt()
    binds = (theta_squared > 0) & torch.isfinite(scale) & (scale < 1)
    return torch.where(binds, scale, torch.ones_like(scale))


def clipped_scales(group: dict[str, Any], scale: Tensor, rates: Sequence[LearningRate]) -> list[Tensor]:
    """Each rate's scale: ``scale``, raised where it would take the rate below ``lr_bounds``'
    lower end (the rates stay inside the bounds, as every step's rate does). A rate that is a
    DTensor (per-weight factors of a sharded parameter) is read on its local shard."""
    if group["lr_bounds"] is None or group["lr_bounds"][0] == 0:
        return [scale] * len(rates)
    low = group["lr_bounds"][0]
    scales = []
    for rate in rates:
        (rate,) = local_tensors([torch.as_tensor(rate, dtype=torch.float64, device=scale.device)])
        floor = torch.where(rate > 0, low / rate, torch.zeros_like(rate))
        scales.append(torch.maximum(scale, floor).clamp(max=1.0))
    return scales

