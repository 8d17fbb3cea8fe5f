"""The hypergradient rules, one entry each: how a learning rate moves given ``g_t . u_{t-1}``.

Every optimizer reduces ``h_t = -g_t . u_{t-1}`` (the derivative of the loss with respect to the
previous rate) to a few statistics per rate, and a rule turns them into the new rate. A rule is
one :class:`Rule` in :data:`RULES`, which says everything the rest of the package needs to know
about it: the statistics it reads, the memory it keeps per rate, its default ``beta``
(``hypergrad_lr``) and its allowed range, and its update. Nothing outside this module compares
rule names: the keyword check, the statistics kernels (eager, compiled, sharded), the memory
(created, checkpointed, checked when loaded), the clipping into ``lr_bounds``, the blend, the
three granularities and the compiled fused path all read the entry.

How to add a rule
-----------------
1. Write its update in this module, ``update(rate, statistics, beta, memory) -> new rate``:

   * ``rate``: the current rate(s): a Python float or a 0-dim tensor (one rate per group), a
     ``(tensors,)`` tensor (one per tensor) or a tensor shaped like the parameter (one per weight).
   * ``statistics``: a tensor whose dimension 0 runs over the rule's :attr:`Rule.statistics`
     (``statistics[i]`` shaped like ``rate``): ``[g.u]`` (:data:`DOT`) or ``[g.u, |g|^2, |u|^2]``
     (:data:`DOT_AND_NORMS`), summed over the group or the tensor; per weight they are the
     products ``g*u``, ``g*g``, ``u*u`` of that weight (so a cosine becomes a sign). A zero
     ``g.u`` with zero norms means "no information" (no previous direction, no gradient). A rule
     with a :attr:`Rule.climbing_row` gets ``|theta_{t-1}|^2`` as a fourth entry while it climbs.
   * ``beta``: ``hypergrad_lr`` (a float, or a 0-dim float64 tensor on the compiled path).
   * ``memory``: ``None`` for a rule that keeps none, else a tensor shaped
     ``(len(rule.memory), *rate.shape)``, zeros before the first update, that the update reads
     and writes **in place** (it is saved in ``state_dict``).

   It returns the new rate(s) as a tensor shaped like ``rate``, elementwise throughout, with no
   host read (no ``.item()``, no Python ``if`` on a tensor) so that it runs on an accelerator
   without synchronising and traces under ``torch.compile``. It need not clip or guard: the
   caller (:func:`next_rate`) clips the result into ``lr_bounds`` and keeps the previous rate
   wherever the result is not finite.

   Better, write its math once over an operations namespace ``xp``,
   ``math(xp, rate, statistics, beta, memory) -> (new rate, new memory rows)``, with Python's
   arithmetic and comparisons, ``&``, ``|`` and ``xp``'s ``where``, ``isfinite``, ``sqrt``,
   ``exp``, ``clamp``, ``not_`` and ``divide`` (as the rules below are written), and let
   :func:`written_once` make both ``update`` and ``host_update`` from it: the second runs one
   group's rate on Python floats (:class:`FLOAT_OPS`), a few microseconds where thirty tensor
   operations on 0-dim tensors take a hundred or more, which is most of a small model's step.
   Without a ``host_update`` such rates move on tensors.
2. Add one entry: ``register(Rule(name="...", statistics=DOT or DOT_AND_NORMS,
   memory=("m", ...), nonnegative_memory=(...), default_beta=..., beta_below=..., ...,
   **written_once(math)))`` (or ``update=...`` alone) next to the others at the end of this
   module (see :class:`Rule` for each field).
   ``hypergrad_rule="<name>"`` then works with every optimizer, granularity, scheduler, blend,
   ``fused``/``foreach`` path, ``torch.compile`` and distributed mode.
3. Test it: ``tests/test_rules.py`` holds every registered entry to the contract above (shapes,
   elementwise, in-place memory, no move without information, clipping and the non-finite guard,
   every granularity, a checkpoint round trip, the host floats against the tensors); add the
   tests of what the rule is for (e.g. against a finite-difference hypergradient, as
   ``tests/test_scalefree.py`` does). Describe it
   in ``docs/hypergradient.md`` ("Rules for the learning rate"). The reference twins
   (``hypergrad/reference/_rules.py``) write each rule out on their own, in plain floats; a rule
   they should hold the fast optimizers to is written out there too.

The factor-based step (``hypergrad/optimizer.py``) hands a rule the rate ``base * factor``; a
rule that moves ``log alpha`` (multiplicative, scale-free) moves the factor by the same step, an
additive one by ``beta * g.u / base``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._validation import check_finite_nonnegative

__all__ = ["CLIMB_ENDS", "DOT", "DOT_AND_NORMS", "FLOAT_OPS", "RULES", "Rule", "TENSOR_OPS", "next_host_rate", "next_rate",
           "register", "rule_named", "written_once"]

#: The statistics a rule can read, in the order of dimension 0 of the statistics tensor: the dot
#: product alone, or with the squared norms of ``g_t`` and ``u_{t-1}`` (one pass takes all three).
DOT: tuple[str, ...] = ("g.u",)
DOT_AND_NORMS: tuple[str, ...] = ("g.u", "|g|^2", "|u|^2")

Update = Callable[[float | Tensor, Tensor, float | Tensor, Tensor | None], Tensor]
HostUpdate = Callable[[float, list[float], float, list[float] | None], float]
#: A rule's math written once (:func:`written_once`): ``(xp, rate, statistics, beta, memory)``
#: to ``(new rate, new memory)``.
RuleMath = Callable[[type, Any, Any, Any, Any], tuple[Any, Any]]


@dataclass(frozen=True)
class Rule:
    """One hypergradient rule (see the module docstring for how to add one)."""

    #: The value of ``hypergrad_rule`` that selects it.
    name: str
    #: ``update(rate, statistics, beta, memory) -> new rate``, elementwise, memory in place.
    update: Update
    #: What it reads: :data:`DOT` or :data:`DOT_AND_NORMS`.
    statistics: tuple[str, ...]
    #: The names of the numbers it keeps per rate (rows of its memory tensor); ``()``: none.
    memory: tuple[str, ...] = ()
    #: Those of :attr:`memory` that are never negative (a loaded memory is checked against it).
    nonnegative_memory: tuple[str, ...] = ()
    #: ``hypergrad_lr=None`` means this beta; ``None``: the base rule's ``paper_hypergrad_lr``
    #: (a beta with the units of the rate, which depend on the base rule's direction).
    default_beta: float | None = None
    #: ``hypergrad_lr`` must lie in ``[0, beta_below)`` (``inf``: any finite ``beta >= 0``)...
    beta_below: float = math.inf
    #: ... and why, for the error message (e.g. "so that the learning rate stays positive").
    beta_reason: str = ""
    #: One rate's update in one ``torch.compile``d call on the fused CPU path (``_compiled.py``),
    #: where the rate is a tensor: worth it for a rule of many small operations, whose eager
    #: dispatches cost more than a step.
    compiled: bool = False
    #: The same update for one rate on the host, in Python floats:
    #: ``host_update(rate, statistics, beta, memory) -> new rate`` with ``statistics`` a list and
    #: ``memory`` a list of floats (updated in place) or ``None``; ``None`` where the rule has none
    #: (its group rates then move on tensors). :func:`written_once` gives both forms from one text.
    host_update: HostUpdate | None = None
    #: For a rule whose steps grow (:func:`bracket`): the memory row that stays below
    #: :data:`CLIMB_ENDS` while it climbs. While any rate of a group climbs, the optimizer adds
    #: ``|theta_{t-1}|^2`` to its statistics as entry 3 (over the group, the tensor or the weight)
    #: and ``first_step_bound`` bounds every update of the group, not only its first
    #: (``_step_bound.py``); ``None``: three statistics, the first update only.
    climbing_row: str | None = None

    @property
    def norms(self) -> bool:
        """Whether it reads ``|g|^2`` and ``|u|^2`` besides ``g . u``."""
        return self.statistics == DOT_AND_NORMS

    def beta(self, hypergrad_lr: float | None, paper_hypergrad_lr: float) -> float:
        """The beta ``hypergrad_lr`` stands for: itself, or where it is ``None`` the rule's
        default (the base rule's ``paper_hypergrad_lr`` for a rule without one)."""
        if hypergrad_lr is not None:
            return hypergrad_lr
        return paper_hypergrad_lr if self.default_beta is None else self.default_beta

    def check_beta(self, hypergrad_lr: float) -> None:
        """``TypeError``/``ValueError`` naming ``hypergrad_lr`` unless it is a finite number in
        ``[0, beta_below)``."""
        check_finite_nonnegative("hypergrad_lr", hypergrad_lr)
        if hypergrad_lr >= self.beta_below:
            raise ValueError(
                f"Invalid hypergrad_lr: {hypergrad_lr} for hypergrad_rule={self.name!r} "
                f"(must be in [0, {self.beta_below:g}){' ' + self.beta_reason if self.beta_reason else ''})"
            )

    def check_memory(self, where: str, memory: object, rate_shapes: list[tuple[int, ...]]) -> None:
        """A loaded memory (``where`` names it): a finite floating-point tensor shaped
        ``(len(memory), *rate_shape)`` for one of ``rate_shapes``, its :attr:`nonnegative_memory`
        rows ``>= 0``."""
        about = f"the memory {list(self.memory)} of hypergrad_rule={self.name!r}"
        if not isinstance(memory, Tensor) or not memory.is_floating_point():
            raise TypeError(f"Invalid {where}: must be a floating-point tensor ({about}), got {memory!r}")
        shapes = [(len(self.memory), *shape) for shape in rate_shapes]
        if tuple(memory.shape) not in shapes:
            raise ValueError(f"Invalid {where}: has shape {tuple(memory.shape)} ({about}; must be one of {shapes})")
        rows = [self.memory.index(name) for name in self.nonnegative_memory]
        if not bool(torch.isfinite(memory).all()) or (rows and bool((memory[rows] < 0).any())):
            raise ValueError(f"Invalid {where}: must be finite with {list(self.nonnegative_memory)} >= 0 ({about})")


#: Every rule by name, in the order they were registered.
RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add ``rule`` to :data:`RULES` (``ValueError`` for a taken name or an inconsistent entry)."""
    if rule.name in RULES:
        raise ValueError(f"a hypergradient rule named {rule.name!r} is already registered")
    if rule.statistics not in (DOT, DOT_AND_NORMS):
        raise ValueError(f"rule {rule.name!r}: statistics must be DOT or DOT_AND_NORMS, got {rule.statistics}")
    if rule.climbing_row is not None and rule.climbing_row not in rule.memory:
        raise ValueError(f"rule {rule.name!r}: climbing_row {rule.climbing_row!r} not in {rule.memory}")
    if not set(rule.nonnegative_memory) <= set(rule.memory):
        raise ValueError(f"rule {rule.name!r}: nonnegative_memory {rule.nonnegative_memory} not in {rule.memory}")
    RULES[rule.name] = rule
    return rule


def rule_named(name: object) -> Rule:
    """The entry of ``hypergrad_rule=name``; ``ValueError`` naming the allowed values."""
    rule = RULES.get(name) if isinstance(name, str) else None
    if rule is None:
        raise ValueError(f"Invalid hypergrad_rule: {name!r} (must be one of {tuple(RULES)})")
    return rule


def next_rate(
    lr: float | Tensor, statistics: Tensor, beta: float | Tensor, rule: str,
    bounds: tuple[float, float] | None, memory: Tensor | None,
) -> Tensor:
    """The rule's new rate(s), clipped into ``bounds``; the previous rate wherever that is not
    finite (a NaN or inf gradient). The one place where a rate moves on tensors (the compiled
    path compiles this function); :func:`next_host_rate` is the same on host floats."""
    return _bounded(TENSOR_OPS, RULES[rule].update(lr, statistics, beta, memory), lr, bounds)


def next_host_rate(
    lr: float, statistics: list[float], beta: float, rule: str, bounds: tuple[float, float] | None,
    memory: list[float] | None,
) -> float:
    """:func:`next_rate` for one rate on the host, in Python floats (the rule's
    :attr:`Rule.host_update`; ``memory`` a list, updated in place)."""
    host_update = RULES[rule].host_update
    assert host_update is not None
    return _bounded(FLOAT_OPS, host_update(lr, statistics, beta, memory), lr, bounds)


def _bounded(xp: type, new_lr: Any, lr: Any, bounds: tuple[float, float] | None) -> Any:
    if bounds is not None:
        new_lr = xp.clamp(new_lr, bounds[0], bounds[1])
    return xp.where(xp.isfinite(new_lr), new_lr, lr)


# -- the operations a rule is written with -------------------------------------------------------
class TENSOR_OPS:
    """The elementwise operations of a rule's math on tensors (both branches of ``where`` are
    evaluated, as they are on floats)."""

    where = staticmethod(torch.where)
    isfinite = staticmethod(torch.isfinite)
    sqrt = staticmethod(torch.sqrt)
    exp = staticmethod(torch.exp)
    clamp = staticmethod(torch.clamp)

    @staticmethod
    def not_(x: Tensor) -> Tensor:
        return ~x

    @staticmethod
    def divide(a: Tensor, b: Tensor) -> Tensor:
        return a / b


class FLOAT_OPS:
    """The same operations on Python floats and bools, with IEEE results where Python raises (a
    division by zero, an overflowing ``exp``, the root of a negative number), as on tensors."""

    @staticmethod
    def where(condition: bool, a: float, b: float) -> float:
        return a if condition else b

    isfinite = staticmethod(math.isfinite)

    @staticmethod
    def sqrt(x: float) -> float:
        return math.sqrt(x) if not x < 0 else math.nan

    @staticmethod
    def exp(x: float) -> float:
        try:
            return math.exp(x)
        except OverflowError:
            return math.inf

    @staticmethod
    def clamp(x: float, min: float | None = None, max: float | None = None) -> float:  # noqa: A002 (torch's names)
        if min is not None and x < min:
            x = min
        if max is not None and x > max:
            x = max
        return x  # NaN stays NaN, as torch.clamp keeps it

    @staticmethod
    def not_(x: bool) -> bool:
        return not x

    @staticmethod
    def divide(a: float, b: float) -> float:
        try:
            return a / b
        except ZeroDivisionError:
            if a != a or a == 0:  # NaN / 0, 0 / 0
                return math.nan
            return math.copysign(math.inf, a) * math.copysign(1.0, b)


def written_once(math_function: RuleMath) -> dict[str, Callable[..., Any]]:
    """A rule's :attr:`Rule.update` and :attr:`Rule.host_update` from its math written once:
    ``math_function(xp, rate, statistics, beta, memory) -> (new rate, new memory)`` over the
    operations ``xp`` (:class:`TENSOR_OPS` or :class:`FLOAT_OPS`) and Python's arithmetic,
    ``statistics[i]`` and ``memory[i]`` the rows, the new memory a sequence of rows (``None``
    for a rule without memory). Pass the result to :class:`Rule`:
    ``Rule(name, statistics=..., **written_once(math_function))``."""

    def update(lr: float | Tensor, statistics: Tensor, beta: float | Tensor, memory: Tensor | None) -> Tensor:
        new_lr, new_memory = math_function(TENSOR_OPS, lr, statistics, beta, memory)
        if memory is not None:
            memory.copy_(torch.stack(new_memory))
        return new_lr

    def host_update(lr: float, statistics: list[float], beta: float, memory: list[float] | None) -> float:
        new_lr, new_memory = math_function(FLOAT_OPS, lr, statistics, beta, memory)
        if memory is not None:
            memory[:] = new_memory
        return new_lr

    update.__doc__ = host_update.__doc__ = math_function.__doc__
    return dict(update=update, host_update=host_update)


def _cosine(xp: type, statistics: Any) -> Any:
    """``cos(g, u)`` from ``[g.u, |g|^2, |u|^2]``; 0 where either vector is zero."""
    dot, norm_product = statistics[0], xp.sqrt(statistics[1] * statistics[2])
    return xp.where(norm_product > 0, xp.divide(dot, norm_product), 0.0)


# -- the paper's rule ----------------------------------------------------------------------------
def additive(xp: type, lr: Any, statistics: Any, beta: Any, memory: None) -> tuple[Any, None]:
    """The paper's HD: ``alpha_t = alpha_{t-1} + beta * g_t . u_{t-1}``."""
    return lr + beta * statistics[0], None


# -- normalised HDM ------------------------------------------------------------------------------
def multiplicative(xp: type, lr: Any, statistics: Any, beta: Any, memory: None) -> tuple[Any, None]:
    """Normalised HDM: ``alpha_t = alpha_{t-1} * (1 + beta * cos(g_t, u_{t-1}))`` (the cosine 0
    where either vector is zero; per weight, the sign of ``g * u``)."""
    return lr * (1.0 + beta * _cosine(xp, statistics)), None


# -- the scale-free rule -------------------------------------------------------------------------
#: Its constants: the momentum and second-moment decays of its Adam-normalised steps on
#: ``log alpha``, the factor over its running reference that ``|g_t|^2`` must pass for the guard
#: to halve the rate, and the decay of that reference.
SCALEFREE_MOMENTUM = 0.9
SCALEFREE_SECOND_MOMENT = 0.99
SCALEFREE_GUARD = 16.0
SCALEFREE_REFERENCE = 0.9
_HALVE = -math.log(2.0)


def _normalised_cosine(xp: type, statistics: Any, memory: Any) -> tuple[Any, ...]:
    """The scale-free rule's common part: ``(informative, guard, c_t, m_t, v_t, s_t, r_t)`` from
    the statistics and the memory ``[m, v, r, ...]`` (see :func:`scalefree`; ``s_t`` clipped)."""
    dot, g_squared, u_squared = statistics[0], statistics[1], statistics[2]
    momentum, second, reference = memory[0], memory[1], memory[2]
    finite = xp.isfinite(dot) & xp.isfinite(g_squared) & xp.isfinite(u_squared)
    norm_product = xp.sqrt(g_squared * u_squared)
    informative = finite & (norm_product > 0)
    cosine = xp.where(informative, xp.divide(dot, norm_product), 0.0)
    mu, nu = SCALEFREE_MOMENTUM, SCALEFREE_SECOND_MOMENT
    new_momentum = mu * momentum + (1 - mu) * cosine
    new_second = nu * second + (1 - nu) * cosine * cosine
    normalised = xp.where(new_second > 0, xp.divide(new_momentum, xp.sqrt(new_second)), 0.0)
    guard = xp.not_(finite) | ((reference > 0) & (g_squared > SCALEFREE_GUARD * reference))
    rho = SCALEFREE_REFERENCE
    new_reference = xp.where(reference > 0, rho * reference + (1 - rho) * g_squared, g_squared)
    return informative, guard, cosine, new_momentum, new_second, xp.clamp(normalised, -1.0, 1.0), new_reference


def scalefree(xp: type, lr: Any, statistics: Any, beta: Any, memory: Any) -> tuple[Any, list[Any]]:
    """The scale-free rule: ``alpha_t`` from ``alpha_{t-1}``, the statistics
    ``[g.u, |g|^2, |u|^2]`` and the rate's memory ``[m, v, r]``.

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
    informative, guard, _, new_momentum, new_second, normalised, new_reference = _normalised_cosine(
        xp, statistics, memory)
    step = xp.where(guard, _HALVE, beta * normalised)
    step = xp.where(informative | guard, step, 0.0)
    new_momentum = xp.where(guard, xp.clamp(new_momentum, None, 0.0), new_momentum)
    updated = (new_momentum, new_second, new_reference)
    return lr * xp.exp(step), [xp.where(informative, new, old) for new, old in zip(updated, memory)]


# -- the scale-free rule with a bracketing start -------------------------------------------------
#: How fast its gain grows while the evidence holds, and the gain's cap (``beta * cap`` = 0.8 in
#: ``log alpha``, about x2.2 a step, at the default beta).
BRACKET_GAIN_GROWTH = 1.5
BRACKET_GAIN_MAX = 16.0
#: The value of a climbing rule's :attr:`Rule.climbing_row` from which it no longer climbs (the
#: bracketing rule's ``p``: its rate has turned twice).
CLIMB_ENDS = 2.0
#: The relative update ``alpha |u_{t-1}| / |theta_{t-1}|`` up to which the bracketing rule's gain
#: may carry the rate (beyond it, the scale-free step alone).
BRACKET_GATE = 0.01


def bracket(xp: type, lr: Any, statistics: Any, beta: Any, memory: Any) -> tuple[Any, list[Any]]:
    """The scale-free rule with a bracketing start: while the rate has not yet overshot and come
    back, its steps on ``log alpha`` take a gain that grows while the evidence holds (Rprop's and
    delta-bar-delta's idea on ``log alpha``, capped as D-Adaptation caps its growth); after that it
    is the scale-free rule. Statistics ``[g.u, |g|^2, |u|^2]``, memory ``[m, v, r, k, p]``.

    With ``c_t``, ``m_t``, ``v_t``, ``s_t = clip(m_t / sqrt(v_t), -1, 1)``, ``q_t``, ``r_t`` and the
    guard exactly as in :func:`scalefree`::

        flip_t = m_{t-1} s_t < 0                         (the smoothed sign turned)
        p_t = min(p_{t-1} + flip_t, 2)                   (p_t = max(p_t, 1) when the guard fires)
        k_t = min(gamma max(k_{t-1}, 1), K)   if c_t s_t > 0, not flip_t, p_t < 2 and no guard
        k_t = 1                               otherwise  (gamma = 1.5, K = 16)
        log alpha_t = log alpha_{t-1} + beta k_t s_t     (the guard: - log 2, as scalefree)

    ``p`` counts the turns of the rate's direction: 0 during the first move (a climb from a rate
    far too small, or a descent), 1 during the move back after the first overshoot, 2 from then
    on, where ``k = 1`` and the rule is :func:`scalefree`. So the rate brackets the good range in
    a few tens of steps from any start (from ``1e-5`` to ``1e-1``, ``ln 1e4 = 9.2``, takes about
    20 steps at the gain's cap of ``0.8`` a step) and then moves at most ``beta`` a step, as the
    scale-free rule does: a gain kept for good would ratchet a rate whose gradient stays bounded
    (logistic regression) up by decades. The gain grows only while the newest cosine agrees in
    sign with the smoothed one, so the first disagreement (the rate has reached the edge) drops it
    to 1 before the momentum turns. No information (a zero ``g_t`` or ``u_{t-1}``) leaves rate and
    memory as they were; a non-finite statistic halves the rate and leaves the memory.

    While ``p < 2`` it climbs (:attr:`Rule.climbing_row`), and the optimizer adds
    ``|theta_{t-1}|^2`` (over the group, the tensor, or the weight) to the statistics: the gain may
    then carry the rate only up to where the update predicted from the previous direction moves
    the weights by ``tau = 0.01`` of their norm::

        alpha_t = max(alpha_t^plain, min(alpha_t, tau |theta_{t-1}| / |u_{t-1}|))   if alpha_t > alpha_t^plain

    with ``alpha_t^plain = alpha_{t-1} exp(beta s_t)`` the scale-free step. A rate whose updates move
    the weights by less than a percent is certainly small and the gain climbs it in tens of steps;
    above that it may already be in the good range, where the one-step signal still says "larger"
    (Adam on the benchmark's Transformer from 1e-3) and a grown gain would carry it tens of times
    too far before the cosine turns, so the rule follows the signal at the scale-free speed. Where
    ``|theta_{t-1}| = 0`` the gain does not act. ``first_step_bound`` bounds every update of the
    group while it climbs, as it bounds the first (``_step_bound.py``).
    """
    informative, guard, cosine, new_momentum, new_second, normalised, new_reference = _normalised_cosine(
        xp, statistics, memory)
    momentum, gain, phase = memory[0], memory[3], memory[4]
    flip = momentum * normalised < 0
    new_phase = xp.clamp(xp.where(flip, phase + 1.0, phase), None, CLIMB_ENDS)
    new_phase = xp.where(guard, xp.clamp(new_phase, 1.0), new_phase)
    grows = (cosine * normalised > 0) & xp.not_(flip) & xp.not_(guard) & (new_phase < CLIMB_ENDS)
    new_gain = xp.where(grows, xp.clamp(xp.clamp(gain, 1.0) * BRACKET_GAIN_GROWTH, None, BRACKET_GAIN_MAX), 1.0)
    step = xp.where(guard, _HALVE, beta * new_gain * normalised)
    step = xp.where(informative | guard, step, 0.0)
    new_rate = lr * xp.exp(step)
    if len(statistics) > 3:  # |theta_{t-1}|^2, given while the rule climbs: the gain's gate
        plain = lr * xp.exp(xp.where(informative & xp.not_(guard), beta * normalised, step))
        gate = BRACKET_GATE * xp.sqrt(xp.divide(statistics[3], statistics[2]))
        gated = xp.clamp(xp.clamp(new_rate, None, gate), plain, None)
        new_rate = xp.where((new_rate > plain) & xp.isfinite(gate), gated, new_rate)
    new_momentum = xp.where(guard, xp.clamp(new_momentum, None, 0.0), new_momentum)
    updated = (new_momentum, new_second, new_reference, new_gain, new_phase)
    return new_rate, [xp.where(informative, new, old) for new, old in zip(updated, memory)]


# -- the registry's entries ----------------------------------------------------------------------
register(Rule("additive", statistics=DOT, **written_once(additive)))
register(Rule("multiplicative", statistics=DOT_AND_NORMS, beta_below=1.0,
              beta_reason="so that the learning rate stays positive", **written_once(multiplicative)))
register(Rule("scalefree", statistics=DOT_AND_NORMS, memory=("m", "v", "r"), nonnegative_memory=("v", "r"),
              default_beta=0.05, compiled=True, **written_once(scalefree)))
register(Rule("bracket", statistics=DOT_AND_NORMS, memory=("m", "v", "r", "k", "p"),
              nonnegative_memory=("v", "r", "k", "p"), default_beta=0.05, compiled=True, climbing_row="p",
              **written_once(bracket)))
