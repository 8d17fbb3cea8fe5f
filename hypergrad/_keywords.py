"""The hypergradient keywords every HD optimizer (and every reference twin) takes, declared once.

An optimizer's ``__init__`` collects them as ``**hypergrad``; :func:`spelled_out` writes them back
into the signature, so that ``help()``, ``inspect.signature`` and editors show every keyword with
its default, as if each constructor declared it. ``hypergrad_lr=None`` (the default) means the
rule's own default beta, :func:`rule_hypergrad_lr`: dimensionless for the scale-free rule, the
same for every base rule; for the paper's additive rule (and the multiplicative one) the base
rule's ``paper_hypergrad_lr``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ._rules import rule_named

# name -> (annotation, default).
_BLOCK: dict[str, tuple[str, Any]] = {
    "hypergrad_lr": ("float | None", None),
    "hypergrad_rule": ("str", "scalefree"),
    "lr_bounds": ("Sequence[float] | None", None),
    "granularity": ("str", "group"),
    "lr_limit": ("float | None", None),
    "lr_limit_power": ("float", 2.0),
    "first_step_bound": ("float | None", 0.1),
}
HYPERGRAD_KEYWORDS: tuple[str, ...] = tuple(_BLOCK)
#: Keywords added after release 0.1.0, and the value a group saved without them loads with: such a
#: checkpoint's groups are past their first step, so ``first_step_bound`` could not act anyway.
LATER_KEYWORDS: dict[str, Any] = {"first_step_bound": None}

# torch.optim's flags that every HD optimizer takes with the one value it supports (so that code
# written for torch.optim runs unchanged), and why another value is refused.
_SUPPORTED_ONLY: dict[str, tuple[Any, str]] = {
    "differentiable": (False, "a hypergradient step updates the learning rate and the parameters in place under "
                              "torch.no_grad(), so autograd cannot differentiate through it; False, torch.optim's "
                              "default, is accepted"),
}


def keyword_defaults() -> dict[str, Any]:
    """The block's defaults."""
    return {name: default for name, (_, default) in _BLOCK.items()}


def rule_hypergrad_lr(rule: str, paper_hypergrad_lr: float) -> float:
    """The beta ``hypergrad_lr=None`` stands for under ``rule`` (``_rules.py``): the rule's own
    default where it has one (dimensionless betas), else the base rule's ``paper_hypergrad_lr``."""
    return rule_named(rule).beta(None, paper_hypergrad_lr)


def resolved(owner: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords a constructor was given, over its defaults; ``TypeError`` as Python raises it
    for an unknown keyword. torch.optim's ``differentiable`` is taken at its one supported value
    (False) and dropped; another value is a ``ValueError`` that says why."""
    given = dict(given)
    for name, (supported, why) in _SUPPORTED_ONLY.items():
        if name in given and given.pop(name) is not supported:
            raise ValueError(f"Invalid {name}: only {supported!r} is supported ({why})")
    for name in given:
        if name not in _BLOCK:
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}")
    return {**defaults, **given}


def spelled_out(init: Callable[..., None], defaults: Mapping[str, Any]) -> inspect.Signature:
    """``init``'s signature with its ``**hypergrad`` replaced by the keyword-only block (as it is
    where it does not collect them so)."""
    signature = inspect.signature(init)
    if "hypergrad" not in signature.parameters:
        return signature
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    block = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                          default=defaults.get(name, default))
        for name, (annotation, default) in _BLOCK.items()
    ]
    return signature.replace(parameters=kept + block)
