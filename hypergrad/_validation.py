"""Every argument check of the optimizers, in one place: the base rules' ranges and the
hypergradient keywords. A refused argument raises before anything is built, naming the argument
and the range it must lie in."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.optim.optimizer import _device_dtype_check_for_fused

HYPERGRAD_RULES: tuple[str, ...] = ("additive", "multiplicative")
GRANULARITIES: tuple[str, ...] = ("group", "tensor", "element")


def check_nonnegative(**values: float) -> None:
    """``ValueError`` for the first argument that is not ``>= 0`` (NaN included)."""
    for name, value in values.items():
        if not 0.0 <= value:
            raise ValueError(f"Invalid {name}: {value} (must be >= 0)")


def check_finite_nonnegative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"Invalid {name}: {value} (must be a finite number >= 0)")


def check_interval(name: str, value: float, low: float, high: float, *, open_low: bool = False,
                   open_high: bool = False, meaning: str = "") -> None:
    """``low <= value <= high``, either end open where asked; ``meaning`` says what the value is."""
    above = low < value if open_low else low <= value
    below = value < high if open_high else value <= high
    if not (above and below):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"Invalid {name}: {value} ({meaning}must be in {interval})")


def check_pair(name: str, value: Sequence[float], what: str = "(low, high)") -> tuple[float, float]:
    """Two numbers, returned as floats."""
    try:
        first, second = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {name}: {value!r} (must be a pair {what} of numbers)") from None
    return first, second


def check_number(name: str, value: Any, allowed: str = "a float") -> None:
    """``TypeError`` unless ``value`` is an int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__}")


def check_adam_arguments(betas: Sequence[float], eps: float, weight_decay: float) -> None:
    """The checks torch.optim.Adam makes, with messages that name the argument."""
    if len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r} (must be a pair (beta1, beta2))")
    for index, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index} of betas: {beta} (must be in [0, 1))")
    check_nonnegative(eps=eps, weight_decay=weight_decay)


def check_lr(lr: float | Tensor, name: str = "lr") -> None:
    """A finite non-negative number, or a 1-element tensor holding one that does not require grad."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"{name} as a tensor must have exactly one element, got shape {tuple(lr.shape)}")
        if lr.requires_grad:
            raise ValueError(f"{name} as a tensor must not require grad")
        value = float(lr.item())
    else:
        check_number(name, lr, "a float or a 0-dim tensor")
        value = float(lr)
    check_finite_nonnegative(name, value)


def _check_hypergrad_lr(hypergrad_lr: float, hypergrad_rule: str) -> None:
    check_number("hypergrad_lr", hypergrad_lr)
    check_finite_nonnegative("hypergrad_lr", hypergrad_lr)
    if hypergrad_rule not in HYPERGRAD_RULES:
        raise ValueError(f"Invalid hypergrad_rule: {hypergrad_rule!r} (must be one of {HYPERGRAD_RULES})")
    if hypergrad_rule == "multiplicative" and hypergrad_lr >= 1.0:
        raise ValueError(
            f"Invalid hypergrad_lr: {hypergrad_lr} for hypergrad_rule='multiplicative' "
            "(must be in [0, 1) so that the learning rate stays positive)"
        )


def _check_bounds(lr_bounds: Sequence[float] | None) -> tuple[float, float] | None:
    if lr_bounds is None:
        return None
    low, high = check_pair("lr_bounds", lr_bounds)
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(f"Invalid lr_bounds: {lr_bounds!r} (must satisfy low <= high)")
    return (low, high)


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


def checked_group_settings(group: dict[str, Any]) -> dict[str, Any]:
    """The hypergradient keys of one param group (its own or the optimizer's defaults), checked;
    returns the values to store, ``lr_bounds`` normalised to a pair of floats or None."""
    check_lr(group["lr"])
    _check_hypergrad_lr(group["hypergrad_lr"], group["hypergrad_rule"])
    lr_bounds = _check_bounds(group["lr_bounds"])
    if group["granularity"] not in GRANULARITIES:
        raise ValueError(f"Invalid granularity: {group['granularity']!r} (must be one of {GRANULARITIES})")
    _check_blend(group["lr_limit"], group["lr_limit_power"], lr_bounds)
    return {"lr_bounds": lr_bounds}


def check_fused(fused: bool | None, foreach: bool | None) -> None:
    """torch.optim's refusal of ``fused=True`` with ``foreach=True``, with its message."""
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def check_fused_param(param: Tensor) -> None:
    """torch.optim's check of a parameter stepped by a fused kernel: a floating point tensor on a
    device that has the kernels (CPU, CUDA, ...); complex parameters are refused, as by torch."""
    _device_dtype_check_for_fused(param)
