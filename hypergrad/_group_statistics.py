"""A group's statistics of ``g_t . u_{t-1}`` at its granularity, the input of its rule: phase 2 of
``HypergradOptimizer.step`` (``optimizer.py``), for every base rule (its ``_previous_directions``)
and path (kept or recomputed directions, a compiled pass, flat copies of a small group), with
``|theta_{t-1}|^2`` added while the group's rule climbs (``_step_bound.py``)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from torch import Tensor

from ._compiled import stored_sums
from ._hypergradient import element_statistics, statistics_rows, tensor_statistics
from ._rules import RULES
from ._step_bound import with_weight_norms

if TYPE_CHECKING:
    from .optimizer import GroupTensors, HypergradOptimizer, PreviousDirections

Statistics = Tensor | list[Tensor | None] | None


def group_statistics(optimizer: HypergradOptimizer, group: dict[str, Any], tensors: GroupTensors,
                     climbs: bool) -> Statistics:
    """The group's rule's statistics (``None`` at ``hypergrad_lr = 0``), with ``|theta_{t-1}|^2``
    added where the rule ``climbs`` (``_rates.climbing``; ``_step_bound.with_weight_norms``)."""
    if group["hypergrad_lr"] == 0:
        return None
    statistics = hypergradient_statistics(optimizer, group, tensors)
    if statistics is None or not climbs:
        return statistics
    return with_weight_norms(group, tensors.params, statistics)


def hypergradient_statistics(optimizer: HypergradOptimizer, group: dict[str, Any], tensors: GroupTensors) -> Statistics:
    """Statistics of ``g_t . u_{t-1}`` at the group's granularity: summed over the group
    (``(1 or 3,)``), one row per tensor (``(tensors, 1 or 3)``, zero rows where there is no
    previous direction), or per weight (a ``(1 or 3, *shape)`` tensor or ``None`` per tensor);
    ``None`` when no tensor has a previous direction."""
    previous = _moved(optimizer._previous_directions(group, tensors), tensors.idle)
    if not previous.indices:
        return None
    grads = [tensors.grads[i] for i in previous.indices]
    rule, granularity = group["hypergrad_rule"], group["granularity"]
    if granularity != "element":
        rows = previous.rows(grads, rule, granularity == "group") if previous.rows is not None else None
        kept = isinstance(previous.directions, list)
        if rows is None and RULES[rule].norms and kept and tensors.compiled:
            # Kept directions: g . u, |g|^2 and |u|^2 in one compiled pass (_compiled.py).
            # A rule that reads only g . u takes its one dot product faster as it is.
            sums = stored_sums(grads, previous.directions, norms=True)  # type: ignore[arg-type]
            rows = None if sums is None else statistics_rows(sums, rule, previous.scales)
        if rows is None:
            rows = tensor_statistics(grads, previous.directions, rule, previous.scales,
                                     summed=granularity == "group")
        assert rows is not None
        if granularity == "group":
            return rows.sum(0) if len(rows) > 1 else rows.view(-1)
        aligned = rows.new_zeros((len(tensors.params), rows.shape[1]))
        aligned[previous.indices] = rows
        return aligned
    per_weight: list[Tensor | None] = [None] * len(tensors.params)
    for index, statistics in zip(
        previous.indices, element_statistics(grads, previous.directions, rule, previous.scales)
    ):
        per_weight[index] = statistics
    return per_weight


def _moved(previous: PreviousDirections, idle: set[int]) -> PreviousDirections:
    """``previous`` without the parameters that did not move at the previous step."""
    if not idle.intersection(previous.indices):
        return previous
    kept = [k for k, index in enumerate(previous.indices) if index not in idle]
    kept_set = set(kept)
    return dataclasses.replace(  # without its one-pass rows, which take every direction
        previous,
        indices=[previous.indices[k] for k in kept],
        directions=(direction for k, direction in enumerate(previous.directions) if k in kept_set),
        scales=None if previous.scales is None else [previous.scales[k] for k in kept],
        rows=None,
    )
