"""The statistics of a direction recomputed from optimizer state, in one compiled pass.

Adam's previous direction ``u_{t-1} = m / (sqrt(v) + shift)`` (times its bias corrections, and
plus AdamW's decay term) is not kept anywhere: the eager statistics recompute it in four passes
over memory (a square root, a shift, a division, the dot product) and a temporary the size of the
tensor. torch's ops have no fused multiply-divide-reduce, so here ``torch.compile`` (inductor; on
the CPU it needs a C++ compiler at run time) turns the recomputation and the sums into one pass
that reads ``g_t``, ``m`` and ``v`` (and AdamW's ``theta_{t-2}``) once and writes nothing.

The compiled function only produces the sums ``g . d`` (and ``|g|^2``, ``|d|^2`` for the rules
that need the norms) per tensor; :func:`hypergrad._hypergradient.statistics_rows` turns them into
the rows :func:`hypergrad._hypergradient.tensor_statistics` gives, so the rule stays in one place.

It is used by the fused path on the CPU for float32 and float64 parameters, compiled once per
parameter set (the step that first takes statistics then takes seconds; a second parameter set
with as many tensors compiles once more, for dynamic shapes, and serves every later one). It falls back to the eager statistics, with
one warning, when compilation fails (no C++ compiler, ...), inside an outer ``torch.compile``, and
when the environment variable ``HYPERGRAD_COMPILED_STATISTICS`` is ``0`` (the test suite's
default: every test would otherwise compile its own shapes).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: The environment switch: ``0`` keeps every step on the eager statistics.
SWITCH = "HYPERGRAD_COMPILED_STATISTICS"
#: Parameter dtypes the compiled statistics serve (their sums are taken in the same dtype, as the
#: eager ``torch.dot`` takes them).
DTYPES = (torch.float32, torch.float64)

_compiled: dict[tuple[bool, bool], Callable[..., Tensor]] = {}
_failed = False


def available(grads: Sequence[Tensor]) -> bool:
    """Whether the compiled statistics can serve a step with gradients ``grads`` (the optimizer
    state is shaped, placed and typed like them): switched on, not inside an outer compile, plain
    CPU tensors of one dtype the kernel serves, no earlier failure."""
    if torch.compiler.is_compiling() or _failed or os.environ.get(SWITCH, "1") == "0" or not grads:
        return False
    dtype = grads[0].dtype
    return dtype in DTYPES and all(type(g) is Tensor and g.is_cpu and g.dtype == dtype for g in grads)


def _recomputed_sums(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    second_moments: list[Tensor],
    previous_params: list[Tensor],
    constants: Tensor,
    norms: bool,
) -> Tensor:
    """Per tensor, with ``d = m / (sqrt(v) + shift)`` (plus ``theta_{t-2}`` as ``theta + c * d``
    where ``previous_params`` are given; ``constants[k] = (shift, c)``): ``g . d``, and with
    ``norms`` also ``|g|^2`` and ``|d|^2``; a ``(tensors,)`` or ``(tensors, 3)`` tensor."""
    rows = []
    for index, (g, m, v) in enumerate(zip(grads, exp_avgs, second_moments)):
        d = m / (v.sqrt() + constants[index, 0])
        if previous_params:
            d = previous_params[index] + constants[index, 1] * d
        dot = torch.sum(g * d)
        rows.append(torch.stack((dot, torch.sum(g * g), torch.sum(d * d))) if norms else dot)
    return torch.stack(rows)


def recomputed_sums(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    second_moments: list[Tensor],
    shifts: Sequence[float],
    *,
    norms: bool,
    previous_params: list[Tensor] | None = None,
    coefficients: Sequence[float] | None = None,
) -> Tensor | None:
    """The sums of :func:`_recomputed_sums` from the compiled function (compiled on first use);
    ``None`` where it is not :func:`available` or fails (once, with a warning: every later
    step then takes the eager statistics)."""
    global _failed
    if not available(grads):
        return None
    decay = previous_params is not None
    key = (norms, decay)
    if key not in _compiled:
        # Not fullgraph: past dynamo's recompile limit (many parameter sets in one process) the
        # function then runs eagerly instead of failing; shapes become dynamic after a change.
        _compiled[key] = torch.compile(_recomputed_sums)
    columns = [list(shifts), list(coefficients) if coefficients is not None else [0.0] * len(shifts)]
    constants = torch.tensor(list(zip(*columns)), dtype=grads[0].dtype)
    try:
        return _compiled[key](grads, exp_avgs, second_moments, previous_params or [], constants, norms)
    except Exception as error:  # noqa: BLE001 - any compiler failure means: take the eager path
        _failed = True
        warnings.warn(
            f"hypergrad: the compiled statistics are unavailable ({type(error).__name__}: {error}); "
            f"the eager statistics take their place (set {SWITCH}=0 to skip the attempt)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
