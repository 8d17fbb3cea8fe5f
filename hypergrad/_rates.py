"""A group's hypergradient state, in one record, and the rates it gives: every rate is a base rate
times a learned factor.

The record
----------
Everything HD keeps about a group's rates is one dict, ``"hypergrad_state"``, which only this
module writes (the base rules' own buffers, e.g. ``state[p]["hypergrad_direction"]``, are theirs):

* ``group["hypergrad_state"]``, saved with the param groups in ``state_dict``:

  - ``"factor"``: the learned factor of the group's rate at ``granularity="group"``: a float, or a
    0-dim tensor beside a tensor ``lr``; absent means 1.
  - ``"memory"``: the memory the group's rule keeps for that rate (``_rules.py``; a tensor of
    shape ``(len(rule.memory),)``, or a list of as many floats where the rate moves on the host,
    :func:`_on_host`; ``state_dict`` saves the tensor either way), for a rule that keeps one.
  - ``"step"``: ``t``, the steps the group has taken, counted where ``lr_limit`` is set (the blend).
  - ``"base_lr"``: the base rate the last step used, where an lr scheduler owns ``group["lr"]``
    (it writes the next value before anyone reads the rates).
  - ``"settings"``: the base rule's settings its last step used that its previous direction
    depends on (:func:`remember`; Adam's ``betas``, which OneCycleLR and CyclicLR move).

* ``state[p]["hypergrad_state"]``, saved with the parameter's state:

  - ``"factor"``: the parameter's factor at ``granularity="tensor"`` (a 0-dim tensor, float64
    where the device has it) or ``"element"`` (shaped like ``p``, float32 at least).
  - ``"memory"``: its rule's memory, ``(len(rule.memory),)`` per tensor or
    ``(len(rule.memory), *p.shape)`` per weight.
  - ``"idle"``: ``True`` while the parameter had no gradient at the last step (it did not move:
    its ``u_{t-1}`` is 0 at its next step).

Release 0.1.0 kept the same values as loose keys (``lr_scale``, ``lr_hd``, ``stepped_lr``,
``hypergrad_step``, ``hypergrad_memory``, ``hypergrad_betas``, ``hypergrad_idle``);
:func:`migrate` moves them into the record when such a checkpoint is loaded.

The rates
---------
The rate of every step is ``blend(base * factor)`` (the blend towards ``lr_limit`` where it is
set, paper Sec. 5), with ``base = group["lr"]`` as the step finds it, the value the user or an lr
scheduler (torch's, Hugging Face's, timm's: they record ``"initial_lr"`` in the group) wrote. The
group's rule (``_rules.py``) moves the rate ``base * factor`` from the statistics of
``g_t . u_{t-1}``, and the new rate over ``base`` is the new factor (kept where that is not finite:
a zero base, e.g. a warmup from 0, leaves the factors as they are). For the multiplicative and
scale-free rules, which move ``log alpha``, that is the same step on ``log factor``; the additive
rule's step ``beta * g . u`` is in units of the rate, so it moves the factor by
``beta * g . u / base``. One factor per group (``granularity="group"``), per tensor or per weight.

Where nobody else owns ``group["lr"]`` (one rate per group, no scheduler), the step writes the rate
it used back into ``group["lr"]``: there ``group["lr"]`` is the adapted rate, as the paper's HD
and torch.optim's readers have it, and a value written into it between steps is where the next
step starts. The factor is then what the HD rate is relative to it: absent (1), or under the blend
the unblended ``alpha^HD`` over the blended rate the step used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import _compiled
from ._hypergradient import accumulation_dtype
from ._kernels import LearningRate
from ._rules import CLIMB_ENDS, FLOAT_OPS, RULES, TENSOR_OPS, Rule, next_host_rate, next_rate
from ._validation import check_count, check_lr, check_number

__all__ = ["KEY", "StepRates", "applied_rate", "check_loaded_record", "climbing", "group_rate", "is_scheduled", "migrate",
           "parameter_rate", "remember", "remembered", "scale_rates", "snapshot", "step_rates", "take_idle", "mark_idle",
           "updated_lr"]

KEY = "hypergrad_state"


def is_scheduled(group: dict[str, Any]) -> bool:
    """Whether an lr scheduler owns ``group["lr"]`` (torch's and timm's record ``initial_lr``)."""
    return "initial_lr" in group


def _owns_lr(group: dict[str, Any]) -> bool:
    """Whether HD writes ``group["lr"]``: one rate per group and no scheduler."""
    return group["granularity"] == "group" and not is_scheduled(group)


def _record(holder: dict[str, Any]) -> dict[str, Any]:
    record = holder.get(KEY)
    if record is None:
        record = holder[KEY] = {}
    return record


# -- the step ------------------------------------------------------------------------------------
@dataclass
class StepRates:
    """A group's rates at one step: ``common`` is the rate the base step takes; ``factors``, at
    ``granularity="tensor"``/``"element"``, each parameter's factor (its rate
    ``blend(base * factor)`` differs from ``common = base``); ``blend_step`` the blend's ``t``."""

    common: LearningRate
    factors: list[Tensor] | None
    blend_step: int | None


def step_rates(group: dict[str, Any], params: list[Tensor], states: list[dict[str, Any]], lr: LearningRate,
               statistics: Tensor | list[Tensor | None] | None, *, compiled: bool = False) -> StepRates:
    """One step's rates for the parameters ``params`` (``states`` theirs) of ``group`` at base
    rate ``lr``: the factors learn from ``statistics`` (``None``: no previous direction, or
    ``hypergrad_lr = 0``), then the rates ``blend(lr * factor)``. One float rate per group moves on
    host floats (:func:`_on_host`). ``compiled``: one tensor rate's rule in one compiled call where
    the rule is marked so (the fused CPU path, ``_compiled.py``)."""
    record = _record(group)
    blend_step = None
    if group["lr_limit"] is not None:
        blend_step = record["step"] = record.get("step", 0) + 1
    if is_scheduled(group):
        record["base_lr"] = lr.clone() if isinstance(lr, Tensor) else lr
    if group["granularity"] != "group":
        records = [_record(state) for state in states]
        factors = _parameter_factors(group, params, records)
        if statistics is not None:
            _learn_parameter_factors(group, factors, records, statistics, lr)
        return StepRates(lr, factors, blend_step)
    owns = _owns_lr(group)
    host = _on_host(group, lr)
    factor = _group_factor(record, lr, create=not owns)
    if host and isinstance(statistics, Tensor):
        statistics = statistics.tolist()  # the one read of the step's statistics
    if owns:
        _fold(group, record, lr, factor, statistics, blend_step, compiled)  # type: ignore[arg-type]
        return StepRates(group["lr"], None, blend_step)
    if statistics is not None:
        scale = factor if host else torch.as_tensor(factor, dtype=torch.float64)
        memory = _memory(record, group, scale, host=host)
        new_factor = rescaled(lr, scale, statistics, group, memory, compiled=compiled)  # type: ignore[arg-type]
        _store(record, "factor", new_factor, like=lr)
        factor = record["factor"]
    return StepRates(applied_rate(group, factor, lr, blend_step), None, blend_step)


def _on_host(group: dict[str, Any], lr: LearningRate) -> bool:
    """Whether the group's one rate moves in Python floats: a float ``lr`` (the CPU outside
    ``torch.compile``, where the statistics are read without waiting for a device) and a rule
    with a :attr:`~hypergrad._rules.Rule.host_update`. Its memory is then a list of floats."""
    return not isinstance(lr, Tensor) and RULES[group["hypergrad_rule"]].host_update is not None


def _fold(group: dict[str, Any], record: dict[str, Any], lr: LearningRate, factor: LearningRate,
          statistics: Tensor | None, blend_step: int | None, compiled: bool) -> None:
    """Where HD owns ``group["lr"]``: the HD rate ``lr * factor`` moves by the rule, the step's
    rate (blended) goes into ``group["lr"]``, and the factor becomes the HD rate over it (none,
    i.e. 1, without the blend)."""
    if statistics is None and blend_step is None and "factor" not in record:
        return  # nothing moves: group["lr"] is the rate
    hd_rate = lr if "factor" not in record else lr * factor
    if statistics is not None:
        memory = _memory(record, group, lr, host=isinstance(statistics, list))
        hd_rate = updated_lr(hd_rate, statistics, group, memory, compiled=compiled)
    if blend_step is None:
        record.pop("factor", None)
        _store_lr(group, hd_rate)
        return
    rate = blended_lr(hd_rate, group, blend_step)
    if isinstance(rate, Tensor) or isinstance(factor, Tensor):
        hd_rate, rate, factor = (torch.as_tensor(value, dtype=torch.float64) for value in (hd_rate, rate, factor))
    _store_lr(group, rate)
    _store(record, "factor", kept_ratio(hd_rate, rate, factor), like=group["lr"])


def applied_rate(group: dict[str, Any], scale: LearningRate, lr: LearningRate, blend_step: int | None) -> LearningRate:
    """The rate a step uses: ``lr * scale``, blended towards ``lr_limit`` at step ``blend_step``."""
    rate = lr * scale
    return rate if blend_step is None else blended_lr(rate, group, blend_step)


def blend_weight(step: int, power: float) -> float:
    """``delta(t) = t^-power``: the weight of the HD rate in the blend at step ``t >= 1``."""
    return float(step) ** -power


def blended_lr(hypergrad_rate: LearningRate, group: dict[str, Any], step: int) -> LearningRate:
    """The paper's convergence-ensuring blend (Sec. 5):
    ``alpha_t = delta(t) * alpha_t^HD + (1 - delta(t)) * lr_limit`` with ``delta(t) = t^-p``.
    ``alpha^HD`` keeps its own, unblended chain, as in the paper's proof (it grows at most
    linearly in t, which is why ``t * delta(t) -> 0`` makes the blend converge to ``lr_limit``)."""
    delta = blend_weight(step, group["lr_limit_power"])
    return delta * hypergrad_rate + (1.0 - delta) * group["lr_limit"]


def updated_lr(
    lr: LearningRate, statistics: Tensor, group: dict[str, Any], memory: Tensor | None = None, *,
    compiled: bool = False,
) -> Tensor:
    """The next rate(s) by the group's rule from the statistics of ``g_t . u_{t-1}``
    (:func:`hypergrad._rules.next_rate`: clipped into ``lr_bounds``, kept where not finite;
    ``memory`` the rate's, updated in place). Elementwise: ``lr`` may be one rate (a float or a
    0-dim tensor) or a tensor of rates with the statistics stacked along dimension 0; one float
    rate with the statistics and memory as lists of floats moves on the host
    (:func:`hypergrad._rules.next_host_rate`). ``compiled``: one tensor rate on the CPU in one
    compiled call, for a rule marked ``compiled``."""
    settings = (group["hypergrad_lr"], group["hypergrad_rule"], group["lr_bounds"])
    if isinstance(statistics, list):  # one rate on the host (step_rates read the statistics)
        return next_host_rate(lr, statistics, *settings, memory)  # type: ignore[arg-type,return-value]
    if compiled and RULES[settings[1]].compiled and statistics.dim() == 1:
        new_lr = _compiled.rule_update(next_rate, lr, statistics, memory, *settings)
        if new_lr is not None:
            return new_lr
    return next_rate(lr, statistics, *settings, memory)


def rescaled(lr: LearningRate, scale: LearningRate, statistics: Tensor | list[float], group: dict[str, Any],
             memory: Tensor | list[float] | None, *, compiled: bool = False) -> LearningRate:
    """The factor after one HD step: the rule moves the rate ``lr * scale``, the new rate over
    ``lr`` is the new factor; kept where that is not finite (``lr == 0``). On the host (float
    ``lr`` and ``scale``, statistics and memory lists) a float."""
    new_rate = updated_lr(lr * scale, statistics, group, memory, compiled=compiled)
    ratio = kept_ratio(new_rate, lr, scale)
    return ratio.to(scale.dtype) if isinstance(scale, Tensor) else ratio


def kept_ratio(numerator: LearningRate, denominator: LearningRate, kept: LearningRate) -> LearningRate:
    """``numerator / denominator``, ``kept`` where that is not finite (a zero denominator): on
    Python floats where all three are, else on tensors."""
    xp = TENSOR_OPS if any(isinstance(value, Tensor) for value in (numerator, denominator, kept)) else FLOAT_OPS
    ratio = xp.divide(numerator, denominator)
    return xp.where(xp.isfinite(ratio), ratio, kept)


def _memory(record: dict[str, Any], group: dict[str, Any], like: LearningRate, *,
            host: bool = False) -> Tensor | list[float] | None:
    """``record["memory"]`` of the group's rule: with ``host`` (one rate in Python floats,
    :func:`_on_host`) a list of floats, else a tensor shaped ``(len(rule.memory), *like.shape)``
    in ``like``'s dtype and device (float64 for a float); zeros where there is none yet (one in
    the other form, e.g. loaded, is converted once); ``None`` for a rule without memory."""
    size = len(RULES[group["hypergrad_rule"]].memory)
    if size == 0:
        return None
    memory = record.get("memory")
    if host:
        if not isinstance(memory, list):
            memory = record["memory"] = [0.0] * size if memory is None else memory.tolist()
        return memory
    if not isinstance(memory, Tensor):
        like = _as_tensor(like)
        memory = record["memory"] = (like.new_zeros((size, *like.shape)) if memory is None
                                     else torch.tensor(memory, dtype=like.dtype, device=like.device))
    return memory


def _as_tensor(value: LearningRate) -> Tensor:
    """A tensor as it is; a float as a float64 tensor."""
    return value if isinstance(value, Tensor) else torch.tensor(value, dtype=torch.float64)


def _group_factor(record: dict[str, Any], lr: LearningRate, *, create: bool) -> LearningRate:
    """The group's factor in the form its ``lr`` has (a float, or a 0-dim tensor on its device);
    1 where there is none (kept so with ``create``: a scheduled group's factor exists from its
    first step)."""
    if create and "factor" not in record:
        record["factor"] = 1.0
    factor = record.get("factor")
    if factor is None:
        return 1.0  # (never multiplied: the HD rate is then the base rate itself)
    if isinstance(lr, Tensor) and not isinstance(factor, Tensor):
        factor = record["factor"] = torch.full_like(lr, factor)
    elif isinstance(factor, Tensor) and not isinstance(lr, Tensor):
        factor = record["factor"] = factor.item()  # (once: beside a float rate it is kept a float)
    elif isinstance(factor, Tensor) and factor.device != lr.device:  # type: ignore[union-attr]
        factor = record["factor"] = factor.to(lr.device)  # type: ignore[union-attr]
    return factor


def _store(record: dict[str, Any], key: str, value: LearningRate, like: LearningRate | None = None) -> None:
    """Write a one-rate value into the record in the form it is kept: a float beside a float
    rate, else a 0-dim tensor (written in place once it exists)."""
    current = record.get(key)
    if isinstance(current, Tensor):
        current.view(1).copy_(_as_tensor(value).reshape(1))
    elif current is None and isinstance(like, Tensor):
        record[key] = _as_tensor(value).to(like.dtype).reshape(()).clone()
    else:
        record[key] = value.item() if isinstance(value, Tensor) else value


def _store_lr(group: dict[str, Any], new_lr: LearningRate) -> None:
    """Write the new rate into ``group["lr"]`` in the form the group keeps it (float or tensor, in
    place: written through a 1-element view, because torch.compile (2.13) drops in-place writes to
    a 0-dim CPU tensor that lives outside the compiled function)."""
    lr = group["lr"]
    if isinstance(lr, Tensor):
        lr.view(1).copy_(_as_tensor(new_lr).reshape(1))
    else:
        group["lr"] = new_lr.item() if isinstance(new_lr, Tensor) else new_lr


def _parameter_factors(group: dict[str, Any], params: list[Tensor], records: list[dict[str, Any]]) -> list[Tensor]:
    """Each parameter's factor (``"tensor"``: 0-dim, float64 where the device has it;
    ``"element"``: shaped like the parameter), created at 1 on first use."""
    factors = []
    for param, record in zip(params, records):
        if "factor" not in record:
            if group["granularity"] == "tensor":
                dtype = torch.float64 if param.device.type != "mps" else torch.float32
                record["factor"] = torch.ones((), dtype=dtype, device=param.device)
            else:
                if param.is_complex():
                    raise ValueError("granularity='element' needs real parameters (got a complex one)")
                record["factor"] = torch.ones_like(
                    param, dtype=accumulation_dtype(param.dtype), memory_format=torch.preserve_format
                )
        factors.append(record["factor"])
    return factors


def _learn_parameter_factors(group: dict[str, Any], factors: list[Tensor], records: list[dict[str, Any]],
                             statistics: Tensor | list[Tensor | None], lr: LearningRate) -> None:
    """Each tensor's (or weight's) factor after one HD step (see :func:`rescaled`), in place; per
    tensor, all of a group's factors in one stacked computation."""
    memories = [_memory(record, group, factor) for record, factor in zip(records, factors)]
    if group["granularity"] == "tensor":
        assert isinstance(statistics, Tensor)
        stacked = torch.stack(factors)
        memory = None if memories[0] is None else torch.stack(memories, 1)  # type: ignore[arg-type]
        new = rescaled(lr, stacked, statistics.T.to(stacked.dtype), group, memory)
        torch._foreach_copy_(factors, list(new.unbind()))
        if memory is not None:
            torch._foreach_copy_(memories, list(memory.unbind(1)))
        return
    assert isinstance(statistics, list)
    for factor, tensor_statistics, memory in zip(factors, statistics, memories):
        if tensor_statistics is not None:
            factor.copy_(rescaled(lr, factor, tensor_statistics, group, memory))


def scale_rates(group: dict[str, Any], factors: list[Tensor] | None, scales: list[Tensor]) -> None:
    """Every rate of a group times its scale (``first_step_bound``, ``_step_bound.py``): per
    tensor or weight each factor in ``factors`` (local tensors), in place; one rate per group
    ``group["lr"]`` where HD owns it (under the blend the factor beside it, the HD rate over the
    step's, is unchanged), else the factor beside a scheduler's ``lr``; ``scales`` one per factor,
    or one."""
    if factors is not None:
        for factor, scale in zip(factors, scales):
            factor.mul_(scale.to(factor.dtype))
        return
    (scale,) = scales
    if is_scheduled(group):
        record = _record(group)
        _store(record, "factor", record["factor"] * scale, like=group["lr"])
    else:
        _store_lr(group, group["lr"] * scale)


def climbing(group: dict[str, Any], states: list[dict[str, Any]]) -> bool:
    """Whether any rate of ``group`` (``states``: its stepping parameters' states) is still
    climbing: its rule has a :attr:`~hypergrad._rules.Rule.climbing_row` and that row of the
    rate's memory is below :data:`~hypergrad._rules.CLIMB_ENDS` (a rate without memory yet has
    not begun). A memory on a device is read on the host, one read per rate and step, for such a
    rule only."""
    rule = RULES[group["hypergrad_rule"]]
    if rule.climbing_row is None:
        return False
    row = rule.memory.index(rule.climbing_row)
    for holder in [group] if group["granularity"] == "group" else states:
        memory = holder.get(KEY, {}).get("memory")
        if memory is None:
            return True
        value = memory[row]
        if bool((value < CLIMB_ENDS).any()) if isinstance(value, Tensor) else value < CLIMB_ENDS:
            return True
    return False


# -- reading the rates ---------------------------------------------------------------------------
def group_rate(group: dict[str, Any]) -> LearningRate:
    """The rate the group's last step used (before the first step, the one it will use): at
    ``granularity="group"``, ``group["lr"]`` where HD owns it, else the schedule's value that step
    used (the scheduler may have written the next one since) times the factor, blended where
    ``lr_limit`` is set; per tensor or weight, the base rate the last step used."""
    record = group.get(KEY, {})
    base = record.get("base_lr", group["lr"])
    if group["granularity"] != "group" or not is_scheduled(group) or "factor" not in record:
        return base
    return applied_rate(group, record["factor"], base, record.get("step") if group["lr_limit"] is not None else None)


def parameter_rate(group: dict[str, Any], state: dict[str, Any]) -> float | Tensor:
    """The rate a parameter (``state`` its state) was stepped with at the last step: a float at
    ``granularity="group"`` and ``"tensor"``, a tensor shaped like it at ``"element"``."""
    factor = state.get(KEY, {}).get("factor") if group["granularity"] != "group" else None
    if factor is None:
        return float(group_rate(group))
    record = group.get(KEY, {})
    blend_step = record.get("step") if group["lr_limit"] is not None else None
    rate = applied_rate(group, factor, record.get("base_lr", group["lr"]), blend_step)
    return rate.item() if group["granularity"] == "tensor" else rate


# -- what else the record keeps ------------------------------------------------------------------
def remember(group: dict[str, Any], **settings: Any) -> None:
    """Keep (add or replace) base-rule settings of this step that the next step's previous
    direction depends on."""
    _record(group).setdefault("settings", {}).update(settings)


def remembered(group: dict[str, Any], name: str, default: Any) -> Any:
    """A setting kept by :func:`remember` at the last step (``default`` before the first)."""
    return group.get(KEY, {}).get("settings", {}).get(name, default)


def mark_idle(state: dict[str, Any]) -> None:
    """The parameter has no gradient at this step: it does not move, its stored direction is not
    ``u_t``."""
    _record(state)["idle"] = True


def take_idle(state: dict[str, Any]) -> bool:
    """Whether the parameter was idle at its last step (the mark is cleared: it moves now)."""
    record = state.get(KEY)
    return record is not None and record.pop("idle", False)


# -- checkpoints ---------------------------------------------------------------------------------
def snapshot(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a group's record for ``state_dict``, as torch.optim copies the groups' own keys:
    later steps do not change its numbers (its tensors are shared, as torch.optim shares them). A
    memory kept as floats (:func:`_on_host`) is saved as the float64 tensor it stands for."""
    return {key: dict(value) if isinstance(value, dict)
            else torch.tensor(value, dtype=torch.float64) if isinstance(value, list) else value
            for key, value in record.items()}


_GROUP_KEYS_0_1 = {"lr_scale": "factor", "hypergrad_memory": "memory", "hypergrad_step": "step",
                   "stepped_lr": "base_lr"}
_STATE_KEYS_0_1 = {"lr_scale": "factor", "hypergrad_memory": "memory", "hypergrad_idle": "idle"}
_OLD_KEYS = {*_GROUP_KEYS_0_1, *_STATE_KEYS_0_1, "lr_hd", "hypergrad_betas"}


def migrate(holder: dict[str, Any], *, group: bool) -> dict[str, Any]:
    """``holder`` (a param group, or with ``group=False`` a parameter's state) with release
    0.1.0's loose keys moved into the record: a new dict where there were any, else ``holder``.
    0.1.0's ``lr_hd`` (the unblended HD rate beside a blended ``lr``) becomes the factor
    ``lr_hd / lr`` (unless the group's scheduler factor ``lr_scale`` was in force)."""
    if not _OLD_KEYS.intersection(holder):
        return holder
    holder = dict(holder)
    record = dict(holder.get(KEY, {}))
    for old, new in (_GROUP_KEYS_0_1 if group else _STATE_KEYS_0_1).items():
        if old in holder:
            record[new] = holder.pop(old)
    if "hypergrad_betas" in holder:
        record["settings"] = {"betas": tuple(holder.pop("hypergrad_betas"))}
    if "lr_hd" in holder:
        lr_hd, lr = holder.pop("lr_hd"), holder["lr"]
        if "factor" not in record:
            ratio = torch.as_tensor(lr_hd, dtype=torch.float64) / torch.as_tensor(lr, dtype=torch.float64)
            ratio = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
            record["factor"] = ratio.to(lr.dtype) if isinstance(lr, Tensor) else ratio.item()
    holder[KEY] = record
    return holder


def check_loaded_record(where: str, record: Any, rule: Rule, rate_shapes: list[tuple[int, ...]]) -> None:
    """A loaded ``"hypergrad_state"`` (``where`` names its holder): a dict of the documented keys,
    ``factor`` finite (a number, or a tensor of one of ``rate_shapes``: the additive rule may take
    a weight's rate below 0 where no ``lr_bounds`` hold it), the rule's
    ``memory``, ``step`` an int >= 1, ``base_lr`` a rate."""
    if not isinstance(record, dict):
        raise TypeError(f"Invalid {where}: {KEY!r} must be a dict, got {type(record).__name__}")
    unknown = set(record) - {"factor", "memory", "step", "base_lr", "settings", "idle"}
    if unknown:
        raise ValueError(f"Invalid {where}: {KEY!r} holds unknown keys {sorted(unknown)}")
    factor = record.get("factor")
    if isinstance(factor, Tensor):
        # (A sharded factor's values are not read here: that would gather it.)
        if tuple(factor.shape) not in rate_shapes or (type(factor) is Tensor and not bool(torch.isfinite(factor).all())):
            raise ValueError(f"Invalid {where}: the factor must be finite, shaped as one of {rate_shapes}")
    elif factor is not None:
        check_number(f"the factor of {where}", factor)
        if not math.isfinite(factor):
            raise ValueError(f"Invalid {where}: the factor must be finite, got {factor}")
    if "memory" in record and rule.memory:
        rule.check_memory(f"{where}: the memory", record["memory"], rate_shapes)
    if "step" in record:
        check_count(f"the step count of {where}", record["step"], 1)
    if "base_lr" in record:
        check_lr(record["base_lr"], f"the base_lr of {where}")
