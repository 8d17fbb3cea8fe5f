"""The AlgoPerf self-tuning score (Kasimbeg et al., ICLR 2025), exactly as the benchmark states it.

For entry ``s`` on workload ``w``:

* ``t(s, w)``: the upper median over seeds (``sorted(values)[n // 2]``) of the steps (or seconds)
  at which the validation metric first reaches the target; infinity for a seed that does not
  reach it within the budget or diverges;
* ``r(s, w) = t(s, w) / min over entries t(., w)`` (infinity when no entry reaches the target);
* ``rho_s(tau)``: the fraction of workloads with ``r(s, w) <= tau``;
* ``score(s)``: the integral of ``rho_s`` over ``tau`` in ``[1, 4]`` divided by 3, by the trapezoid
  rule on ``GRID_POINTS`` evenly spaced points.

Pure functions of plain numbers, so that anyone can recompute the scores from ``benchmark.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["GRID_POINTS", "TAU_MAX", "first_reached", "performance_ratios", "profile", "scores", "tau_grid",
           "upper_median"]

TAU_MAX = 4.0
GRID_POINTS = 3001
"""Points of the trapezoid rule over [1, TAU_MAX] (a step of 0.001)."""


def first_reached(steps: Sequence[float], values: Sequence[float], target: float, goal: str) -> float | None:
    """The first of ``steps`` whose value reaches ``target`` (``<=`` for ``goal="min"``, ``>=`` for
    ``"max"``); None when none does (NaN never reaches it)."""
    if goal not in ("min", "max"):
        raise ValueError(f"goal must be 'min' or 'max', got {goal!r}")
    for step, value in zip(steps, values):
        if (value <= target) if goal == "min" else (value >= target):
            return step
    return None


def upper_median(values: Sequence[float]) -> float:
    """``sorted(values)[n // 2]`` (None counts as infinity)."""
    if not values:
        raise ValueError("values must not be empty")
    finite = [math.inf if value is None else float(value) for value in values]
    return sorted(finite)[len(finite) // 2]


def performance_ratios(times: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``times[entry][workload]`` (> 0, infinity where not reached) -> ``r[entry][workload] =
    t / min over entries of t``; infinity where the entry, or every entry, missed the target."""
    workloads = {workload for per_entry in times.values() for workload in per_entry}
    best = {workload: min(times[entry][workload] for entry in times) for workload in workloads}
    for workload, t in best.items():
        if not t > 0:
            raise ValueError(f"times must be > 0, got {t} on {workload!r}")
    return {entry: {workload: t / best[workload] if math.isfinite(t) else math.inf
                    for workload, t in per_entry.items()}
            for entry, per_entry in times.items()}


def tau_grid(points: int = GRID_POINTS) -> list[float]:
    """``points`` evenly spaced values of tau from 1 to TAU_MAX."""
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    return [1.0 + (TAU_MAX - 1.0) * i / (points - 1) for i in range(points)]


def profile(ratios: Mapping[str, float], taus: Sequence[float]) -> list[float]:
    """``rho(tau)``: the fraction of workloads whose ratio is ``<= tau``, for each tau."""
    if not ratios:
        raise ValueError("ratios must name at least one workload")
    return [sum(r <= tau for r in ratios.values()) / len(ratios) for tau in taus]


def scores(times: Mapping[str, Mapping[str, float]], points: int = GRID_POINTS) -> dict[str, float]:
    """Each entry's score: ``integral of rho over [1, TAU_MAX] / (TAU_MAX - 1)`` by the trapezoid rule."""
    taus = tau_grid(points)
    result = {}
    for entry, ratios in performance_ratios(times).items():
        rho = profile(ratios, taus)
        area = sum((rho[i] + rho[i + 1]) / 2 * (taus[i + 1] - taus[i]) for i in range(len(taus) - 1))
        result[entry] = area / (TAU_MAX - 1.0)
    return result
