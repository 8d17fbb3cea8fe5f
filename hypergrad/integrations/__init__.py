"""Hooks into training frameworks: Lightning, Hugging Face (Trainer, accelerate) and timm.

Each submodule imports its framework when it is imported itself, never before: ``import
hypergrad`` and ``import hypergrad.integrations`` need only torch. What every integration shares
lives here, once: finding the hypergradient optimizer behind a framework's wrapper
(:func:`unwrap_optimizer`), and reading its adapted rates as plain floats (:func:`logged_rates`),
never as references to the 0-dim tensor a step updates in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from .._rates import group_rate
from ..optimizer import HypergradOptimizer

__all__ = ["learning_rates", "logged_rates", "unwrap_optimizer"]

# Where a wrapper keeps the optimizer it wraps: accelerate's AcceleratedOptimizer (and so the HF
# Trainer's ``trainer.optimizer``) ``.optimizer``, Lightning's LightningOptimizer ``._optimizer``,
# timm's Lookahead ``._base_optimizer``.
_WRAPPED_ATTRIBUTES = ("optimizer", "_optimizer", "_base_optimizer")


def unwrap_optimizer(optimizer: Any) -> HypergradOptimizer:
    """The hypergradient optimizer ``optimizer`` is or wraps (through any number of wrappers);
    ``TypeError`` naming ``optimizer`` when there is none."""
    seen = []
    current = optimizer
    while not isinstance(current, HypergradOptimizer):
        seen.append(type(current).__name__)
        inner = next((getattr(current, name) for name in _WRAPPED_ATTRIBUTES if hasattr(current, name)), None)
        if inner is None or inner is current or len(seen) > 8:
            raise TypeError(
                f"optimizer must be a hypergrad optimizer or wrap one, got {' -> '.join(seen)}"
            )
        current = inner
    return current


def learning_rates(optimizer: Any, named_parameters: Iterable[tuple[str, Tensor]]) -> dict[str, float | Tensor]:
    """:meth:`HypergradOptimizer.learning_rates` through any wrapper (accelerate's
    ``AcceleratedOptimizer``, the HF Trainer's ``trainer.optimizer``, Lightning's
    ``LightningOptimizer``, timm's ``Lookahead``)."""
    return unwrap_optimizer(optimizer).learning_rates(named_parameters)


def logged_rates(
    optimizer: Any, named_parameters: Iterable[tuple[str, Tensor]] | None = None, *, key: str = "lr"
) -> dict[str, float]:
    """The adapted rates to log, as Python floats: ``{key: rate}`` for ``param_groups[0]`` and
    ``{key}/pg{i}`` for ``param_groups[i]``, i >= 1; with ``named_parameters``, also
    ``{key}/{name}`` for each parameter of a group at ``granularity="tensor"`` (its own rate) or
    ``"element"`` (the mean of its per-weight rates). After a step these are the rates that step
    used (with an lr scheduler, its value times HD's factor); a group at ``"tensor"``/``"element"``
    granularity logs its base rate. Reading a rate
    kept on an accelerator synchronises with it (log every few steps there)."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"key must be a non-empty str, got {key!r}")
    hd = unwrap_optimizer(optimizer)
    rates = {key if i == 0 else f"{key}/pg{i}": float(group_rate(group)) for i, group in enumerate(hd.param_groups)}
    if named_parameters is None:
        return rates
    own_rate = {id(p) for group in hd.param_groups if group["granularity"] != "group" for p in group["params"]}
    named = [(name, p) for name, p in named_parameters if id(p) in own_rate]
    for name, rate in hd.learning_rates(named).items():
        rates[f"{key}/{name}"] = rate.mean().item() if isinstance(rate, Tensor) else float(rate)
    return rates
