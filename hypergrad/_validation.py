"""Every argument check of the optimizers, in one place: the base rules' ranges, the
hypergradient keywords and what a loaded state_dict must hold. A refused argument raises before
anything is built or changed, naming the argument and the range it must lie in."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ._rules import Rule

GRANULARITIES: tuple[str, ...] = ("group", "tensor", "element")


def check_number(name: str, value: Any, allowed: str = "a float") -> None:
    """``TypeError`` unless ``value`` is an int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__}")


def check_nonnegative(**values: float) -> None:
    """A number (``TypeError`` otherwise) that is finite and ``>= 0`` (``ValueError``), for each."""
    for name, value in values.items():
        check_finite_nonnegative(name, value)


def check_finite_nonnegative(name: str, value: float) -> None:
    check_number(name, value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"Invalid {name}: {value} (must be a finite number >= 0)")


def check_interval(name: str, value: float, low: float, high: float, *, open_low: bool = False,
                   open_high: bool = False, meaning: str = "") -> None:
    """A number with ``low <= value <= high``, either end open where asked; ``meaning`` says what
    the value is."""
    check_number(name, value)
    above = low < value if open_low else low <= value
    below = value < high if open_high else value <= high
    if not (above and below):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"Invalid {name}: {value} ({meaning}must be in {interval})")


def check_count(name: str, value: Any, low: int) -> None:
    """An int (not a bool; ``TypeError`` otherwise) with ``value >= low`` (``ValueError``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"Invalid {name}: {value} (must be an int >= {low})")


def check_pair(name: str, value: Any, what: str = "(low, high)") -> tuple[float, float]:
    """Two numbers (ints or floats; strings are refused), returned as floats."""
    try:
        first, second = value
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {name}: {value!r} (must be a pair {what} of numbers)") from None
    for item in (first, second):
        check_number(name, item, f"a pair {what} of numbers")
    return float(first), float(second)


# -- the base rules' arguments: each takes a group's settings, returns the values to store ---------
def check_sgd_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    """torch.optim.SGD's checks, with messages that name the argument."""
    check_nonnegative(momentum=settings["momentum"])
    check_interval("dampening", settings["dampening"], 0.0, 1.0)
    check_nonnegative(weight_decay=settings["weight_decay"])
    if settings["nesterov"] and (settings["momentum"] <= 0 or settings["dampening"] != 0):
        raise ValueError("Invalid nesterov: Nesterov momentum requires momentum > 0 and dampening = 0")
    return {}


def check_adam_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    """torch.optim.Adam's checks, with messages that name the argument; ``betas`` as a tuple."""
    betas = check_pair("betas", settings["betas"], "(beta1, beta2)")
    for index, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index} of betas: {beta} (must be in [0, 1))")
    check_nonnegative(eps=settings["eps"], weight_decay=settings["weight_decay"])
    return {"betas": betas}


def _check_schedule_free_averaging(settings: Mapping[str, Any]) -> None:
    """Schedule-Free's warmup and averaging weights: ``warmup_steps`` an int >= 0, ``r`` and
    ``weight_lr_power`` finite and >= 0."""
    check_count("warmup_steps", settings["warmup_steps"], 0)
    check_nonnegative(r=settings["r"], weight_lr_power=settings["weight_lr_power"])


def check_schedule_free_adamw_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Schedule-Free AdamW's: ``betas[0]`` in (0, 1) (``eval()`` recovers the average from the
    parameters by dividing by it), ``betas[1]`` in [0, 1); ``betas`` as a tuple."""
    betas = check_adam_arguments(settings)["betas"]
    if betas[0] == 0.0:
        raise ValueError("Invalid beta parameter at index 0 of betas: 0.0 (must be in (0, 1): eval() divides by it)")
    _check_schedule_free_averaging(settings)
    return {"betas": betas}


def check_schedule_free_sgd_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Schedule-Free SGD's: ``momentum`` in (0, 1), as ``schedulefree.SGDScheduleFree`` requires."""
    check_interval("momentum", settings["momentum"], 0.0, 1.0, open_low=True, open_high=True)
    check_nonnegative(weight_decay=settings["weight_decay"])
    _check_schedule_free_averaging(settings)
    return {}


def check_adagrad_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    check_nonnegative(**{key: settings[key] for key in ("lr_decay", "weight_decay", "initial_accumulator_value", "eps")})
    return {}


def check_rmsprop_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    check_interval("alpha", settings["alpha"], 0.0, 1.0, meaning="the smoothing constant; ")
    check_nonnegative(eps=settings["eps"], momentum=settings["momentum"], weight_decay=settings["weight_decay"])
    return {}


#: torch.optim.Muon's learning-rate adjustments (None is "original").
MUON_ADJUST_LR_FNS: tuple[str | None, ...] = (None, "original", "match_rms_adamw")


def check_muon_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    """torch.optim.Muon's checks (its step's too: fewer than 100 Newton-Schulz steps, three
    coefficients), with messages that name the argument; ``ns_coefficients`` as a tuple of floats."""
    check_nonnegative(momentum=settings["momentum"], weight_decay=settings["weight_decay"], eps=settings["eps"])
    coefficients = settings["ns_coefficients"]
    if isinstance(coefficients, (str, bytes)) or not isinstance(coefficients, Sequence) or len(coefficients) != 3:
        raise ValueError(f"Invalid ns_coefficients: {coefficients!r} (must be three numbers (a, b, c))")
    for value in coefficients:
        check_number("ns_coefficients", value, "three numbers (a, b, c)")
    check_count("ns_steps", settings["ns_steps"], 0)
    if settings["ns_steps"] >= 100:
        raise ValueError(f"Invalid ns_steps: {settings['ns_steps']} (must be an int in [0, 100))")
    if settings["adjust_lr_fn"] not in MUON_ADJUST_LR_FNS:
        raise ValueError(f"Adjust learning rate function {settings['adjust_lr_fn']} is not supported "
                         f"(adjust_lr_fn must be one of {MUON_ADJUST_LR_FNS})")
    return {"ns_coefficients": tuple(float(value) for value in coefficients)}


def check_adaptive_gain_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    """AdaptiveGainSGD's arguments (``lr`` a plain number there); ``gain_bounds`` as floats."""
    check_nonnegative(lr=settings["lr"], momentum=settings["momentum"], gain_increase=settings["gain_increase"])
    check_interval("gain_decrease", settings["gain_decrease"], 0.0, 1.0, open_low=True)
    low, high = check_pair("gain_bounds", settings["gain_bounds"])
    if not 0.0 < low <= 1.0 <= high < math.inf:
        raise ValueError(f"Invalid gain_bounds: {settings['gain_bounds']!r} (must satisfy 0 < low <= 1 <= high < inf)")
    check_nonnegative(weight_decay=settings["weight_decay"])
    return {"gain_bounds": (low, high)}


# -- the hypergradient keywords ------------------------------------------------------------------
def check_lr(lr: float | Tensor, name: str = "lr") -> None:
    """A finite non-negative number, or a one-element floating-point tensor holding one that does
    not require grad."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"{name} as a tensor must have exactly one element, got shape {tuple(lr.shape)}")
        if not lr.is_floating_point():
            raise TypeError(f"{name} as a tensor must be floating point, got {lr.dtype}")
        if lr.requires_grad:
            raise ValueError(f"{name} as a tensor must not require grad")
        value = float(lr.item())
    else:
        check_number(name, lr, "a float or a 0-dim tensor")
        value = float(lr)
    check_finite_nonnegative(name, value)


def _check_bounds(lr_bounds: Sequence[float] | None) -> tuple[float, float] | None:
    if lr_bounds is None:
        return None
    low, high = check_pair("lr_bounds", lr_bounds)
    if math.isnan(low) or math.isnan(high) or not 0.0 <= low <= high:
        raise ValueError(f"Invalid lr_bounds: {lr_bounds!r} (must satisfy 0 <= low <= high)")
    return (low, high)


def _check_first_step_bound(first_step_bound: float | None) -> None:
    if first_step_bound is None:
        return
    check_number("first_step_bound", first_step_bound, "a float or None")
    if not (math.isfinite(first_step_bound) and first_step_bound > 0):
        raise ValueError(f"Invalid first_step_bound: {first_step_bound} (must be None or a finite number > 0)")


def _check_blend(lr_limit: float | None, lr_limit_power: float, lr_bounds: tuple[float, float] | None) -> None:
    check_number("lr_limit_power", lr_limit_power)
    if not (math.isfinite(lr_limit_power) and lr_limit_power > 1.0):
        # t * delta(t) -> 0 is what the paper's convergence argument needs: delta(t) = t^-p, p > 1.
        raise ValueError(f"Invalid lr_limit_power: {lr_limit_power} (must be a finite number > 1)")
    if lr_limit is None:
        return
    check_number("lr_limit", lr_limit, "a float or None")
    check_finite_nonnegative("lr_limit", lr_limit)
    if lr_bounds is not None and not lr_bounds[0] <= lr_limit <= lr_bounds[1]:
        raise ValueError(f"Invalid lr_limit: {lr_limit} (must lie inside lr_bounds {lr_bounds})")


def checked_group_settings(group: Mapping[str, Any], rule: Rule, *, initial: bool = True) -> dict[str, Any]:
    """The hypergradient keys of one param group (its own or the optimizer's defaults; ``rule``:
    the entry its ``hypergrad_rule`` names, which checks ``hypergrad_lr``), checked; returns the
    values to store: ``lr_bounds`` a pair of floats or None, a tensor ``lr`` as the group's own
    0-dim copy (no two groups, nor the defaults, share one rate). ``initial``: the ``lr`` is a
    starting rate, clipped into ``lr_bounds`` so that every step's rate lies inside them (not so
    for a loaded checkpoint, whose rate a scheduler may have set)."""
    lr = group["lr"]
    check_lr(lr)
    rule.check_beta(group["hypergrad_lr"])
    lr_bounds = _check_bounds(group["lr_bounds"])
    if group["granularity"] not in GRANULARITIES:
        raise ValueError(f"Invalid granularity: {group['granularity']!r} (must be one of {GRANULARITIES})")
    _check_blend(group["lr_limit"], group["lr_limit_power"], lr_bounds)
    _check_first_step_bound(group["first_step_bound"])
    checked: dict[str, Any] = {"lr_bounds": lr_bounds}
    if isinstance(lr, Tensor):
        checked["lr"] = lr = lr.detach().clone().reshape(())
    if initial and lr_bounds is not None and not lr_bounds[0] <= float(lr) <= lr_bounds[1]:
        checked["lr"] = lr.clamp(*lr_bounds) if isinstance(lr, Tensor) else min(max(lr, lr_bounds[0]), lr_bounds[1])
    return checked


def check_distinct_params(param_group: dict[str, Any]) -> None:
    """One param group holds each parameter once (torch.optim would step a repeated one twice).
    ``param_group["params"]`` becomes a list (an iterator is read once); a set is left for
    torch.optim to refuse (its order is not defined)."""
    params = param_group["params"]
    if isinstance(params, set):
        return
    params = param_group["params"] = [params] if isinstance(params, Tensor) else list(params)
    seen: dict[int, int] = {}
    for index, param in enumerate(params):
        if id(param) in seen:
            raise ValueError(
                f"Invalid params: the parameter at index {index} is the same tensor as the one at index "
                f"{seen[id(param)]} (a param group must hold each parameter once)"
            )
        seen[id(param)] = index


def check_loaded_state(where: str, param: Tensor, state: Mapping[str, Any], required: set[str]) -> None:
    """A loaded parameter state: every buffer of ``required`` present, and every tensor in it
    either a scalar (a step count) or shaped like ``param`` (or its real view, for a complex
    parameter). Its hypergradient record is checked by ``_rates.check_loaded_record``."""
    missing = sorted(required - set(state))
    if missing:
        raise ValueError(f"Invalid state of {where}: missing {missing}")
    shapes = {tuple(param.shape)}
    if param.is_complex():
        shapes.add(tuple(torch.view_as_real(param).shape))
    for key, value in state.items():
        if isinstance(value, Tensor) and value.dim() > 0 and tuple(value.shape) not in shapes:
            raise ValueError(
                f"Invalid state of {where}: {key!r} has shape {tuple(value.shape)}, the parameter {tuple(param.shape)}"
            )


def check_fused(fused: bool | None, foreach: bool | None) -> None:
    """torch.optim's refusal of ``fused=True`` with ``foreach=True``, with its message."""
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")

