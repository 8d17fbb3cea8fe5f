"""The step every hypergradient optimizer shares; the base rules fill in three methods."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._compat import capture_health_check, check_fused_param, default_foreach
from ._group_statistics import group_statistics
from ._kernels import LearningRate, as_real
from ._keywords import HYPERGRAD_KEYWORDS, LATER_KEYWORDS, keyword_defaults, resolved, spelled_out
from ._paths import GroupLayout
from ._rates import (
    KEY,
    applied_rate,
    check_loaded_record,
    climbing,
    mark_idle,
    migrate,
    parameter_rate,
    snapshot,
    step_rates,
    take_idle,
)
from ._rules import rule_named
from ._step_bound import FirstStep, GroupStep, bound_climbing_steps, bound_first_steps, counted_squares, first_step
from ._validation import check_distinct_params, check_loaded_state, checked_group_settings
from .distributed import all_reduce_statistics, watch_zero_redundancy

__all__ = ["HypergradOptimizer", "GroupTensors", "PreviousDirections", "effective_grads"]


@dataclass
class GroupTensors:
    """What one param group contributes to a step: the parameters that have a gradient, the
    gradients the base rule uses (sign flipped for ``maximize``, coupled weight decay added), each
    parameter's state dict, and the indices of the parameters that had no gradient at the previous
    step (they did not move then: ``u_{t-1} = 0``, whatever direction their state still holds)."""

    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    idle: set[int] = field(default_factory=set)
    first: bool = True  # no parameter that steps now had state before: the group's first step
    # The step's path, decided once a step (``_use_fused``, ``_use_foreach``, ``_use_compiled``).
    fused: bool = False
    foreach: bool = False
    compiled: bool = False


@dataclass
class PreviousDirections:
    """The update directions ``u_{t-1}`` a base rule can give: ``directions[k]`` belongs to
    ``tensors.params[indices[k]]`` (a parameter without one, at its first step, is left out), times
    ``scales[k]`` where scales are given (a factor the rule keeps apart, e.g. Adam's bias
    corrections). ``directions`` may be a generator (recomputed directions live one at a time).
    ``rows``, where the base rule has one: the rows of ``tensor_statistics`` for given gradients,
    rule and ``summed`` (one row for the group will do) taken in one pass (compiled, or over flat
    copies of a small group), or ``None`` when that pass is unavailable."""

    indices: list[int]
    directions: Iterable[Tensor]
    scales: list[float | Tensor] | None = None
    rows: Callable[[list[Tensor], str, bool], Tensor | None] | None = None


class HypergradOptimizer(Optimizer):
    """Base class of the hypergradient optimizers.

    A step runs in three phases so that the learning rate of each param group changes once per
    step, from one dot product over the whole group, and before the parameters move:

    1. ``_init_group`` gathers each group's parameters and effective gradients (state is created
       lazily);
    2. ``_group_statistics.py`` takes ``g_t . u_{t-1}`` against the previous update directions
       that the base rule's ``_previous_directions`` gives (and the norms the group's rule reads,
       ``_rules.py``), reduced per group, per tensor or per weight (``granularity``);
    3. ``_group_rates``: the rule moves the rate(s) (bounded while it climbs, ``_step_bound.py``);
    4. ``_step_group``: ``_update_params`` takes the base rule's step, keeping what is needed to
       know ``u_t`` at the next step.

    Rates (``_rates.py``, where a group's HD state is one record, ``"hypergrad_state"``). Every
    rate is ``base * factor``, blended towards ``lr_limit`` where set: ``base`` is ``group["lr"]``
    as the user or an lr scheduler (torch's, Hugging Face's, timm's: they record ``initial_lr``)
    wrote it, and HD learns the factor, one per group (``granularity="group"``, the paper), per
    tensor or per weight (``"tensor"``, ``"element"``: the hypergradient of a tensor's rate,
    ``-g_t^p . u_{t-1}^p``, or ``-g_t^p * u_{t-1}^p`` per weight, drives it exactly as the group's
    dot product drives the group's rate). Where no scheduler owns it, a group's own rate is
    written back into ``group["lr"]``: it is the adapted rate, as in torch.optim. With a scheduler
    ``group["lr"]`` is the schedule's value, which the scheduler writes and reads as with the base
    optimizer, and the factor is kept across its writes. A zero ``group["lr"]`` leaves every
    factor as it is. ``learning_rates(model.named_parameters())`` reads the rates by name. Cost
    per tensor or weight: the base step runs at ``group["lr"]``, then each tensor moves on by
    ``-(rate - lr) * u_t`` (``u_t`` from ``_previous_directions``: a buffer read, or Adam's
    direction recomputed once more), so no base rule needs a per-tensor kernel. Per weight, the
    factors are one parameter-sized buffer, and a step holds the per-weight statistics (1 or 3
    parameter-sized tensors) of all groups at once.

    First update (``first_step_bound = rho``, default 0.1; ``_step_bound.py``): at a group's first
    step, where ``|alpha_1 u_1| > rho |theta_0|`` (norms over the group), the step is retracted to
    ``rho |theta_0|`` along ``u_1`` and every rate of the group scaled by the same factor (never
    below ``lr_bounds``' lower end), before HD goes on; ``None``, ``hypergrad_lr = 0`` or
    ``|theta_0| = 0``: no bound. Under a rule whose steps grow (``hypergrad_rule="bracket"``) the
    same bound holds at every step while a rate of the group is still climbing.

    Blend (``lr_limit`` is not None; paper Sec. 5): the rate used at step t is
    ``delta(t) * alpha_t^HD + (1 - delta(t)) * lr_limit``, ``delta(t) = t^-lr_limit_power``, while
    ``alpha^HD = base * factor`` follows its own, unblended hypergradient chain.

    Partial gradients. A parameter without a gradient at a step does not move (as in torch.optim),
    so at its next step its ``u_{t-1}`` is 0, whatever direction its state still holds: its
    record marks it idle and it is left out of the statistics once.

    ``group["lr"]`` is the current learning rate. Given as a tensor (of any one-element shape),
    each group keeps its own 0-dim copy. On CPU it is a Python float. For parameters on
    an accelerator it is kept as a 0-dim tensor on their device, so that ``step()`` never waits for
    the device; ``float(group["lr"])`` reads it either way (that read does synchronise). Under
    ``torch.compile`` it becomes a 0-dim tensor on the CPU too: a float changes every step and
    would recompile the step every time.

    ``capturable`` is torch.optim's flag: every group carries it (False unless the optimizer offers
    the keyword: SGDHD, AdamHD and AdamWHD do, and then keep their buffers at fixed addresses so that
    ``step()`` can be captured in a CUDA graph); torch.optim's health check refuses to capture a
    step of a group without it.
    """

    #: The defaults of the hypergradient keywords (the same for every base rule).
    hypergrad_defaults: dict[str, Any] = keyword_defaults()
    #: The paper's beta for this base rule: what ``hypergrad_lr=None`` means under the additive
    #: (and the multiplicative) rule.
    paper_hypergrad_lr: float
    #: The base rule's argument check (one of ``_validation``'s): run on the constructor's settings
    #: and on every group added or loaded; returns the normalised values to store.
    check_base_arguments: Callable[[Mapping[str, Any]], dict[str, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__.__signature__ = spelled_out(cls.__init__, cls.hypergrad_defaults)  # type: ignore[attr-defined]

    def __init__(self, params: Any, defaults: dict[str, Any], **hypergrad: Any) -> None:
        """``defaults``: the base rule's; ``hypergrad``: the keywords of the class's
        ``hypergrad_defaults`` it overrides. Every group is checked once, in ``add_param_group``."""
        watch_zero_redundancy(HypergradOptimizer)
        defaults = dict(defaults, **resolved(type(self).__name__, self.hypergrad_defaults, hypergrad))
        checked = self._checked_settings(defaults)
        if defaults["hypergrad_lr"] is None:  # stays "the rule's default": a group may choose its rule
            del checked["hypergrad_lr"]
        defaults.update(checked)
        # Every group has the key, whether or not the subclass offers the keyword: torch's
        # capture health check reads it, and torch.compile adds it while tracing (its guard on
        # the key then fails within the same frame when the key was absent).
        defaults.setdefault("capturable", False)
        self._layouts: dict[int, tuple[list[Tensor], GroupLayout]] = {}
        # For a base rule that recomputes a previous direction from the weights (AdamW): each
        # parameter's state and version after the step that reached its weights, so that a write
        # by anyone else since is seen. Not saved: after a load, or in a new process, the
        # parameters are taken as that step left them.
        self._reached: dict[int, tuple[dict[str, Any], int]] = {}
        super().__init__(params, defaults)

    def _checked_settings(self, settings: Mapping[str, Any], *, initial: bool = True) -> dict[str, Any]:
        """Every setting of one group checked (the base rule's, then the hypergradient keywords);
        the normalised values to store (``hypergrad_lr=None``: the group's rule's default)."""
        rule = rule_named(settings["hypergrad_rule"])
        beta = rule.beta(settings["hypergrad_lr"], self.paper_hypergrad_lr)
        settings = {**settings, "hypergrad_lr": beta}
        return {**self.check_base_arguments(settings), **checked_group_settings(settings, rule, initial=initial),
                "hypergrad_lr": beta}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch.optim's, after checking every setting of the group (its own keys over the
        defaults) and that it holds each parameter once: a refused group leaves the optimizer as
        it was."""
        check_distinct_params(param_group)
        checked = self._checked_settings({**self.defaults, **param_group})
        super().add_param_group(param_group)
        self.param_groups[-1].update(checked)

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's, each group's record copied as torch.optim copies the groups' own keys."""
        state_dict = super().state_dict()
        for group in state_dict["param_groups"]:
            if KEY in group:
                group[KEY] = snapshot(group[KEY])
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's, after checking what it would load; a refused one leaves the optimizer as
        it was (``ValueError``/``TypeError`` naming the group or parameter).

        A group without any hypergradient key comes from torch.optim (``torch.optim.Adam`` for
        ``AdamHD``, ...): its keys are filled from this optimizer's group, i.e. the constructor's
        settings, and the run continues as the base optimizer would, the learning rate adapting
        from the loaded one. A group with some but not all of the keys is refused. Each
        parameter's state must hold every buffer the base rule needs, each shaped like the
        parameter. A checkpoint of release 0.1.0, which kept the HD state in loose keys, loads into
        the record (``_rates.migrate``)."""
        groups = [migrate(dict(group), group=True) for group in state_dict["param_groups"]]
        states = {key: migrate(state, group=False) for key, state in state_dict["state"].items()}
        for index, (group, current) in enumerate(zip(groups, self.param_groups)):
            where = f"param group {index} of the loaded state_dict"
            present = [key for key in HYPERGRAD_KEYWORDS if key in group]
            if present:  # a group saved before a keyword existed loads with its LATER_KEYWORDS value
                group = groups[index] = {**LATER_KEYWORDS, **group}
                present = [key for key in HYPERGRAD_KEYWORDS if key in group]
            if not present:
                group.update({key: current[key] for key in HYPERGRAD_KEYWORDS})
            elif len(present) < len(HYPERGRAD_KEYWORDS):
                missing = [key for key in HYPERGRAD_KEYWORDS if key not in group]
                raise ValueError(f"Invalid {where}: missing {missing} (a hypergradient group has all of "
                                 f"{list(HYPERGRAD_KEYWORDS)}, a torch.optim group none)")
            try:
                group.update(self._checked_settings({**current, **group}, initial=False))
                if KEY in group:
                    check_loaded_record(where, group[KEY], rule_named(group["hypergrad_rule"]), [()])
            except (TypeError, ValueError) as error:
                raise type(error)(f"{where}: {error}") from None
            self._check_loaded_states(index, {**current, **group}, current["params"], states)
        super().load_state_dict({**state_dict, "state": states, "param_groups": groups})

    def _check_loaded_states(
        self, index: int, group: dict[str, Any], params: list[Tensor], states: Mapping[Any, dict[str, Any]]
    ) -> None:
        """The loaded states of one group's parameters (``group["params"]`` their keys in
        ``states``; see :meth:`load_state_dict`). The buffers a state needs are those
        ``_init_state`` creates for an empty state, less those it would still create for the
        loaded one (e.g. AdamW's ``previous_param``, which torch.optim.AdamW lacks)."""
        empty = torch.zeros(0)
        needed: dict[str, Any] = {}
        self._init_state(group, empty, needed)
        for position, (key, param) in enumerate(zip(group["params"], params)):
            state = states.get(key)
            if not state:
                continue
            added: dict[str, Any] = {name: torch.zeros(()) for name in state}
            self._init_state(group, empty, added)
            where = f"parameter {position} of param group {index}"
            check_loaded_state(where, param, state, set(needed) - (set(added) - set(state)))
            if KEY in state:
                shapes = [(), tuple(param.shape), *([tuple(as_real(param).shape)] if param.is_complex() else [])]
                check_loaded_record(f"state of {where}", state[KEY], rule_named(group["hypergrad_rule"]), shapes)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._layouts, self._reached = {}, {}
        for holders, group in ((self.param_groups, True), (self.state.values(), False)):
            for holder in holders:  # a 0.1.0 pickle, or torch.optim's load_state_dict: in place
                migrated = migrate(holder, group=group)
                if migrated is not holder:
                    holder.clear()
                    holder.update(migrated)
        for group in self.param_groups:
            for key, value in self.hypergrad_defaults.items():
                group.setdefault(key, LATER_KEYWORDS.get(key, value))
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)

    # -- what each base rule provides -------------------------------------------------------------
    def _init_state(self, group: dict[str, Any], param: Tensor, state: dict[str, Any]) -> None:
        """Create the base rule's state for ``param`` (complex parameters come viewed as real)
        where it is missing; torch.optim's layout where the rule has a torch.optim twin."""

    def _previous_directions(self, group: dict[str, Any], tensors: GroupTensors) -> PreviousDirections:
        """The base rule's last update directions ``u`` (before the update: ``u_{t-1}``; after it,
        ``u_t``), unscaled by the learning rate."""
        raise NotImplementedError

    def _update_params(self, group: dict[str, Any], tensors: GroupTensors, lr: LearningRate) -> None:
        raise NotImplementedError

    def _finish_step(self, group: dict[str, Any], tensors: GroupTensors) -> None:
        """After every parameter has moved (the bounds included): what the base rule notes about
        the step for the next one's previous directions (nothing by default)."""

    def _coupled_weight_decay(self, group: dict[str, Any]) -> float:
        """The L2 coefficient folded into the gradient (0 where the decay is decoupled)."""
        return group["weight_decay"]

    # -- shared machinery --------------------------------------------------------------------------
    def _init_group(self, group: dict[str, Any]) -> GroupTensors:
        """Phase 1: the parameters that have a gradient (and elements), their state, and the
        gradients the base rule uses. Complex parameters are stepped as real views."""
        fused = self._use_fused(group)
        tensors = GroupTensors(fused=fused)
        params, grads, states, optimizer_state = tensors.params, tensors.grads, tensors.states, self.state
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                state = optimizer_state.get(p)
                if state:
                    mark_idle(state)  # it does not move at this step: its stored direction is not u_t
                continue
            if p.numel() == 0:
                continue
            if grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = optimizer_state[p]
            if state:
                tensors.first = False
            elif fused:
                check_fused_param(p)  # once per parameter, as torch.optim checks once
            if take_idle(state):
                tensors.idle.add(len(params))
            if p.is_complex():
                p, grad = as_real(p), as_real(grad)
            self._init_state(group, p, state)
            params.append(p)
            grads.append(grad)
            states.append(state)
        if params:
            tensors.foreach = self._use_foreach(group, params)
            tensors.compiled = self._use_compiled(group)
            tensors.grads = effective_grads(
                params, grads, self._coupled_weight_decay(group), group["maximize"], tensors.foreach
            )
        return tensors

    def _use_fused(self, group: dict[str, Any]) -> bool:
        """``fused=True`` (where the base rule offers it); with neither ``fused`` nor ``foreach``
        given, the default path: fused where :func:`hypergrad._paths.fused_by_default` says so for the group's
        parameters (decided at the group's first step, as a state layout is), not ``capturable``
        and not inside ``torch.compile`` (which traces the eager paths)."""
        fused = group.get("fused")
        if fused is not None or "fused" not in group:
            return bool(fused)
        if group["foreach"] is not None or group["capturable"]:
            return False
        return self._layout(group).fused and not torch.compiler.is_compiling()

    def _layout(self, group: dict[str, Any]) -> GroupLayout:
        """What the group's parameters decide about its steps, once per group (as a state layout
        is decided at the first step)."""
        params = group["params"]
        known = self._layouts.get(id(params))
        if known is None or known[0] is not params:  # (the list is held: its id is not reused)
            known = self._layouts[id(params)] = (params, GroupLayout.of(params))
        return known[1]

    def _use_compiled(self, group: dict[str, Any]) -> bool:
        """Whether a fused step takes the compiled passes around its kernel (``_compiled.py``,
        which also checks dtypes, device and size): always with ``fused=True`` given; on the
        default path for groups of :data:`hypergrad._paths.COMPILED_BY_DEFAULT` elements or more."""
        if not self._use_fused(group):
            return False
        return bool(group.get("fused")) or self._layout(group).compiled

    def _use_foreach(self, group: dict[str, Any], params: list[Tensor]) -> bool:
        """torch.optim's choice: the user's ``foreach``, else multi-tensor kernels on devices
        that have them (not the CPU). A fused step takes everything around its kernel (effective
        gradients, statistics) in multi-tensor kernels too."""
        if self._use_fused(group):
            return True
        if group["foreach"] is not None:
            return bool(group["foreach"])
        return default_foreach(params)

    @staticmethod
    def _update_function(tensors: GroupTensors, single_tensor: Callable[..., None],
                         multi_tensor: Callable[..., None], fused: Callable[..., None]) -> Callable[..., None]:
        """The base rule's update kernel for the step's path (torch.optim's): fused, foreach or for-loop."""
        if tensors.fused:
            return fused
        return multi_tensor if tensors.foreach else single_tensor

    @staticmethod
    def _place_lr(group: dict[str, Any], device: torch.device) -> LearningRate:
        """Keep the group's lr where the step can use it without a host-device round trip."""
        lr = group["lr"]
        if device.type == "cpu" and not torch.compiler.is_compiling():
            return lr
        if not isinstance(lr, Tensor):
            dtype = torch.float64 if group["params"][0].dtype == torch.float64 else torch.float32
            # torch.full launches a fill; torch.tensor would copy from the host and synchronise.
            group["lr"] = lr = torch.full((), lr, dtype=dtype, device=device)
        elif lr.device != device:
            group["lr"] = lr = lr.to(device)
        return lr

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        capture_health_check(self)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        active = []
        for group in self.param_groups:
            # Called through the class: torch.compile intercepts `self._init_group` (it expects
            # torch.optim's signature, which returns a constant) and fails on ours.
            tensors = type(self)._init_group(self, group)
            if tensors.params:
                active.append((group, tensors))

        # Statistics of every group first, then the updates: sharded (FSDP2) runs sum all groups'
        # statistics over the ranks in one all-reduce, and no group's parameters move before all
        # previous directions have been read.
        # (A group whose rule climbs, read once here, adds |theta|^2 to its statistics.)
        climbs = [group["hypergrad_lr"] != 0 and climbing(group, tensors.states) for group, tensors in active]
        statistics = [group_statistics(self, group, tensors, climb) for (group, tensors), climb in zip(active, climbs)]
        statistics = all_reduce_statistics(
            [None if self._layout(group).plain else tensors.params for group, tensors in active], statistics)
        # The rates of every group, then (while a rule climbs) the bound on them, then the updates.
        steps = [self._group_rates(group, tensors, statistics_of_group, climb)
                 for (group, tensors), statistics_of_group, climb in zip(active, statistics, climbs)]
        bound_climbing_steps(steps)
        first_steps = [first for first in map(self._step_group, steps) if first is not None]
        if first_steps:
            bound_first_steps(self, first_steps)
        for group, tensors in active:
            self._finish_step(group, tensors)
        return loss

    def _group_rates(
        self, group: dict[str, Any], tensors: GroupTensors, statistics: Tensor | list[Tensor | None] | None,
        climbs: bool,
    ) -> GroupStep:
        """Phase 3a for one group, the same for every granularity, rule, schedule and blend: the
        rates ``blend(base * factor)``, the factors having learned from the statistics
        (``_rates.py``); ``|theta_0|^2`` where ``first_step_bound`` will need it at the group's first
        step, and the statistics where it bounds the rates of a rule that ``climbs``
        (``_step_bound.py``)."""
        lr = self._place_lr(group, tensors.params[0].device)
        bounded = group["first_step_bound"] is not None and group["hypergrad_lr"] != 0
        climbs = climbs and bounded and statistics is not None
        theta_squared = counted_squares(tensors.params) if bounded and tensors.first else None
        rates = step_rates(group, tensors.params, tensors.states, lr, statistics, compiled=tensors.compiled)
        return GroupStep(group, tensors, lr, rates, statistics if climbs else None, theta_squared)

    def _step_group(self, step: GroupStep) -> FirstStep | None:
        """Phase 3b for one group: the base step at the group's common rate and, where a tensor's
        or a weight's rate differs from it, the rest of that tensor's step. At the group's first
        step under ``first_step_bound`` that rest waits for the bound (returned, see
        :meth:`step`)."""
        group, tensors, rates = step.group, step.tensors, step.rates
        self._update_params(group, tensors, rates.common)
        if step.theta_squared is not None and tensors.first:
            return first_step(self, group, tensors, rates, step.lr, step.theta_squared)
        if rates.factors is not None:
            self._rescale_step(group, tensors, rates.factors, step.lr, rates.blend_step)
        return None

    def _rescale_step(
        self,
        group: dict[str, Any],
        tensors: GroupTensors,
        scales: list[Tensor],
        lr: LearningRate,
        blend_step: int | None,
    ) -> None:
        """The base step moved each tensor by ``-lr * u_t``; move it on to ``-rate * u_t`` with its
        own rate ``lr * scale`` (blended where ``lr_limit`` is set)."""
        previous = self._previous_directions(group, tensors)
        for index, direction in zip(previous.indices, previous.directions):
            extra = applied_rate(group, scales[index], lr, blend_step) - lr
            if previous.scales is not None:
                extra = extra * previous.scales[index]
            param = tensors.params[index]
            param.sub_(direction * extra.to(param.dtype))

    def learning_rates(self, named_parameters: Iterable[tuple[str, Tensor]]) -> dict[str, float | Tensor]:
        """The learning rate each parameter was stepped with at the last step, by name.

        ``blend(base * factor)`` (see the class docstring): a float per parameter at
        ``granularity="group"`` and ``"tensor"``, a new tensor shaped like the parameter at
        ``"element"``. Before the first step, the
        initial rates. ``named_parameters`` is typically ``model.named_parameters()``: frozen
        parameters (``requires_grad=False``) the optimizer does not hold are left out; a trainable
        one it does not hold is a ``ValueError``.
        """
        group_of = {id(p): group for group in self.param_groups for p in group["params"]}
        rates: dict[str, float | Tensor] = {}
        for name, param in named_parameters:
            group = group_of.get(id(param))
            if group is None and not param.requires_grad:
                continue
            if group is None:
                raise ValueError(f"Parameter {name!r} is not in this optimizer's param groups")
            rates[name] = parameter_rate(group, self.state[param])
        return rates


def effective_grads(
    params: list[Tensor], grads: list[Tensor], weight_decay: float, maximize: bool, foreach: bool
) -> list[Tensor]:
    """``g_t = ±grad + weight_decay * theta`` (coupled L2), computed as torch.optim computes it:
    new tensors only where the sign flips or the decay is added, ``p.grad`` itself otherwise."""
    if foreach:
        if maximize:
            grads = torch._foreach_neg(grads)
            if weight_decay != 0:
                torch._foreach_add_(grads, params, alpha=weight_decay)
        elif weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
        return list(grads)
    effective = []
    for p, g in zip(params, grads):
        g = -g if maximize else g
        effective.append(g.add(p, alpha=weight_decay) if weight_decay != 0 else g)
    return effective
