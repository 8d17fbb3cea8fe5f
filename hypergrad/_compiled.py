"""The CPU fused path's work around torch's kernels in compiled passes: the statistics, Adagrad's
direction and the rule.

On the CPU a fused HD step spends more time around torch's fused kernel than in it, for three
reasons this module removes (``torch.compile``, inductor; on the CPU it needs a C++ compiler at
run time):

* **The statistics.** The scale-free and multiplicative rules need ``g . u``, ``|g|^2`` and
  ``|u|^2`` per tensor; eagerly that is three dot products, four reads of parameter-sized arrays
  where one pass over ``g`` and ``u`` reads two. Adam's previous direction
  ``u_{t-1} = m / (sqrt(v) + shift)`` (times its bias corrections, plus AdamW's decay term) is not
  kept anywhere, and recomputing it eagerly takes four more passes and a temporary the size of
  the tensor. Compiled, each is one pass that reads ``g_t`` and ``u_{t-1}`` (or ``m`` and ``v``,
  and AdamW's ``theta_{t-2}``) once, writes nothing, and sums in float64 (faster here than
  inductor's float32 cascade summation, and more precise).
* **Adagrad's direction.** ``u_t = g_t / (sqrt(G_t) + eps)``, which torch's fused kernel does
  not keep, in one pass into the direction buffers (eagerly a square root, a shift and a
  division: seven reads and writes of parameter-sized arrays where three suffice).
* **The rule.** The scale-free rule is some thirty operations on three numbers; eagerly each is a
  dispatch of a few microseconds, together as much as an SGD step over a million weights.
  Compiled, it is one call. (A group's float rate does better still: its rule runs on Python
  floats, ``_rules.written_once``; the compiled call serves a tensor rate on the CPU.)

The compiled functions only compute what the eager ones compute (the sums per tensor, which
:func:`hypergrad._hypergradient.statistics_rows` turns into the rows of
:func:`hypergrad._hypergradient.tensor_statistics`; the group's new rate, from the rule's own
function; Adagrad's direction, from its own eager function), so every rule stays in one place.
They serve the fused path on the CPU for float32 and float64 parameters (those with a light eager
version from :data:`MIN_ELEMENTS` elements a step), compiled on first use
(that step takes seconds; a parameter set with other shapes compiles once more, for dynamic
shapes, and serves every later one). Each falls back to the
eager code, with one warning, when compilation fails (no C++ compiler, ...), inside an outer
``torch.compile``, and when the environment variable ``HYPERGRAD_COMPILED_STATISTICS`` is ``0``
(the test suite's default: every test would otherwise compile its own shapes).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

#: The environment switch: ``0`` keeps every step on the eager statistics, rule and directions.
SWITCH = "HYPERGRAD_COMPILED_STATISTICS"
#: Parameter dtypes the compiled statistics serve (their sums are taken in float64).
DTYPES = (torch.float32, torch.float64)
#: The compiled passes whose eager version is light (Adam's statistics for a rule that reads only
#: ``g . u``, the sums of kept directions, Adagrad's direction: a few operations per tensor) serve
#: a step of at least this many elements: below it the compiled call's own cost (its wrappers,
#: some 50-90 us a call on this machine) exceeds what its one pass saves. Measured
#: (``benchmarks/overhead.py --paths``, fused Adam-HD and Adagrad-HD, additive rule): eager faster
#: at 1k and 30k parameters (by 15-45 us), about even at 100k, compiled faster at 300k; the number
#: of tensors barely moves it (4 to 64 tensors of 4k elements: within 10 %). The kept directions'
#: three sums (eagerly three dot products a tensor, or over flat copies of a small group) joined
#: them once the scale-free rule ran on host floats: SGDN-HD and Adagrad-HD with that rule, eager
#: faster by 35-45 us at 1k to 100k; at 300k SGDN-HD's eager dot products still faster by 50 us,
#: Adagrad-HD's compiled passes by 30 us. Adam's statistics with the norms (a recomputed
#: direction: four eager passes and a temporary) are compiled at every size.
MIN_ELEMENTS = 1 << 17

_compiled: dict[Any, Callable[..., Any]] = {}
_beta: list[Any] = [None, None]  # the last beta given to the rule, and its float64 tensor
_failed = False
_UNAVAILABLE = object()  # what _call returns where the compiled function is unavailable


def enabled() -> bool:
    """Switched on, not inside an outer compile, no earlier failure."""
    return not (torch.compiler.is_compiling() or _failed or os.environ.get(SWITCH, "1") == "0")


def available(grads: Sequence[Tensor], *, light: bool = False) -> bool:
    """Whether the compiled statistics serve a step with gradients ``grads`` (the optimizer
    state is shaped, placed and typed like them): :func:`enabled`, plain CPU tensors of one dtype
    the kernel serves; for a pass whose eager version is ``light``, :data:`MIN_ELEMENTS` elements
    at least."""
    if not grads or not enabled():
        return False
    dtype = grads[0].dtype
    return (dtype in DTYPES and all(type(g) is Tensor and g.is_cpu and g.dtype == dtype for g in grads)
            and (not light or sum(g.numel() for g in grads) >= MIN_ELEMENTS))


def _call(key: Any, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` compiled (once per ``key``); ``_UNAVAILABLE`` when compilation fails
    (once, with a warning: every later call is then refused by :func:`enabled`, and the caller
    takes the eager path)."""
    global _failed
    if key not in _compiled:
        # Not fullgraph: past dynamo's recompile limit (many parameter sets in one process) the
        # function then runs eagerly instead of failing; shapes become dynamic after a change.
        _compiled[key] = torch.compile(function)
    try:
        return _compiled[key](*args)
    except Exception as error:  # noqa: BLE001 - any compiler failure means: take the eager path
        _failed = True
        warnings.warn(
            f"hypergrad: the compiled statistics are unavailable ({type(error).__name__}: {error}); "
            f"the eager statistics, rule and directions take their place (set {SWITCH}=0 to skip the attempt)",
            RuntimeWarning,
            stacklevel=3,
        )
        return _UNAVAILABLE


def _or_none(result: Any) -> Any:
    return None if result is _UNAVAILABLE else result


def _sums(g: Tensor, d: Tensor, norms: bool) -> tuple[Tensor, ...]:
    f64 = torch.float64
    dot = torch.sum(g * d, dtype=f64)
    return (dot, torch.sum(g * g, dtype=f64), torch.sum(d * d, dtype=f64)) if norms else (dot,)


def _stacked(sums: list[tuple[Tensor, ...]], norms: bool) -> Tensor:
    """The per tensor sums as one ``(tensors,)`` or ``(tensors, 3)`` tensor, stacked once: one
    output buffer that the compiled kernel writes into (a stack per tensor, then a stack of those,
    costs the compiled call an allocation per sum and per tensor)."""
    flat = torch.stack([value for row in sums for value in row])
    return flat.view(-1, 3) if norms else flat


def _stored_sums(grads: list[Tensor], directions: list[Tensor], norms: bool) -> Tensor:
    return _stacked([_sums(g, u, norms) for g, u in zip(grads, directions)], norms)


def stored_sums(grads: list[Tensor], directions: list[Tensor], *, norms: bool) -> Tensor | None:
    """Per tensor ``g . u`` and, with ``norms``, ``|g|^2`` and ``|u|^2``, for directions kept in
    the optimizer state, in one compiled pass over each pair: a ``(tensors,)`` or ``(tensors, 3)``
    tensor, or ``None`` where the compiled pass is unavailable."""
    if not available(grads, light=True) or any(type(u) is not Tensor or u.dtype != grads[0].dtype for u in directions):
        return None
    return _or_none(_call(("stored", norms), _stored_sums, grads, directions, norms))


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
        rows.append(_sums(g, d, norms))
    return _stacked(rows, norms)


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
    """The sums of :func:`_recomputed_sums` from the compiled function, or ``None`` where it is
    not :func:`available` or fails."""
    if not available(grads, light=not norms):
        return None
    columns = [list(shifts), list(coefficients) if coefficients is not None else [0.0] * len(shifts)]
    constants = torch.tensor(list(zip(*columns)), dtype=grads[0].dtype)
    key = ("recomputed", norms, previous_params is not None)
    arguments = (grads, exp_avgs, second_moments, previous_params or [], constants, norms)
    return _or_none(_call(key, _recomputed_sums, *arguments))


def _nesterov_sums(grads: list[Tensor], kept: list[Tensor], bufs: list[Tensor], momentum: Tensor,
                   norms: bool) -> Tensor:
    """Per tensor, with ``d = g_{t-1} + momentum * v``: ``g . d``, and with ``norms`` also
    ``|g|^2`` and ``|d|^2``; a ``(tensors,)`` or ``(tensors, 3)`` tensor."""
    return _stacked([_sums(g, k + momentum * v, norms) for g, k, v in zip(grads, kept, bufs)], norms)


def nesterov_sums(grads: list[Tensor], kept: list[Tensor], bufs: list[Tensor], momentum: float, *,
                  norms: bool) -> Tensor | None:
    """The sums of :func:`_nesterov_sums` (SGDN's recomputed ``u_{t-1}``) from the compiled
    function, one pass over ``g_t``, ``g_{t-1}`` and ``v_{t-1}``, or ``None`` where it is not
    :func:`available` or fails. ``momentum`` travels as a tensor (a new value does not recompile)."""
    if not available(grads, light=True) or any(type(t) is not Tensor or t.dtype != grads[0].dtype for t in (*kept, *bufs)):
        return None
    factor = torch.tensor(momentum, dtype=grads[0].dtype)
    return _or_none(_call(("nesterov", norms), _nesterov_sums, grads, kept, bufs, factor, norms))


def adagrad_directions(
    write: Callable[..., None], directions: list[Tensor], grads: list[Tensor], state_sums: list[Tensor], eps: float
) -> bool:
    """``write(directions, grads, state_sums, eps)`` (Adagrad's own ``_stored_directions``: ``u =
    g / (sqrt(G) + eps)`` into ``directions``) compiled into one pass that reads ``g`` and ``G``
    and writes ``u`` (3 streams, where the eager square root, shift and division take 7); whether
    it ran (``False``: unavailable, the caller takes the eager path)."""
    if not available(grads, light=True):
        return False
    return _call("adagrad directions", write, directions, grads, state_sums, eps) is not _UNAVAILABLE


def rule_update(
    rule_function: Callable[..., Tensor], lr: float | Tensor, statistics: Tensor, memory: Tensor | None,
    beta: float, rule: str, bounds: tuple[float, float] | None,
) -> Tensor | None:
    """``rule_function(lr, statistics, beta, rule, bounds, memory)`` (the rule of
    ``_hypergradient.py``) compiled, for one rate on the CPU: host numbers travel as float64
    tensors, so that a new rate or ``beta`` does not recompile; ``None`` where unavailable."""
    if not enabled() or not statistics.is_cpu or (isinstance(lr, Tensor) and not lr.is_cpu):
        return None
    as_tensor = torch.tensor(lr, dtype=torch.float64) if not isinstance(lr, Tensor) else lr
    if _beta[0] != beta:  # made once per value (the rule only reads it), not at every step
        _beta[:] = [beta, torch.tensor(beta, dtype=torch.float64)]
    return _or_none(_call("rule", rule_function, as_tensor, statistics, _beta[1], rule, bounds, memory))
