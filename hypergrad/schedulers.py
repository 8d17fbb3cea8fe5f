"""Scheduling the hypergradient learning rate ``hypergrad_lr`` (beta).

The learning rate itself is scheduled with torch's own schedulers, which work unchanged with
every hypergradient optimizer (see the README for how each kind composes with the adaptation).
torch's schedulers only write ``"lr"``; `LambdaHypergradLR` is their ``LambdaLR`` for
``"hypergrad_lr"``, e.g. to anneal the adaptation to zero so that the learning rate settles at
the end of training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from ._rules import RULES
from ._validation import check_finite_nonnegative, check_number

__all__ = ["LambdaHypergradLR"]


class LambdaHypergradLR:
    """Set each group's ``hypergrad_lr`` to its initial value times ``hypergrad_lambda(step)``.

    The counterpart of ``torch.optim.lr_scheduler.LambdaLR`` for the learning rate of the
    learning rate. Call `step` once per optimizer step (or per epoch, as you define ``step``);
    ``hypergrad_lambda(0)`` applies at construction. It composes with any lr scheduler, which
    only touches ``"lr"``.

    Cosine decay of beta to 0 over ``total`` steps (HD adapts early, the lr then freezes)::

        beta_schedule = LambdaHypergradLR(
            optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
        )

    Args:
        optimizer: a hypergradient optimizer: every param group must have ``"hypergrad_lr"``.
        hypergrad_lambda: factor as a function of the step count, one function for all
            groups or one per group. Factors must be finite and >= 0.

    Raises:
        ValueError: a group without ``"hypergrad_lr"``, a wrong number of functions, or (at a
            step) a negative or non-finite factor, or a multiplicative-rule beta pushed to >= 1;
            a refused step writes nothing (no group's ``hypergrad_lr`` changes, the count stays).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        hypergrad_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
    ) -> None:
        for i, group in enumerate(optimizer.param_groups):
            if "hypergrad_lr" not in group:
                raise ValueError(
                    f"param group {i} has no 'hypergrad_lr': optimizer must be a hypergradient "
                    f"optimizer (hypergrad.SGDHD, AdamHD, ...), got {type(optimizer).__name__}"
                )
        if callable(hypergrad_lambda):
            lambdas = [hypergrad_lambda] * len(optimizer.param_groups)
        else:
            lambdas = list(hypergrad_lambda)
            if len(lambdas) != len(optimizer.param_groups):
                raise ValueError(
                    f"hypergrad_lambda must be one function or one per param group "
                    f"({len(optimizer.param_groups)}), got {len(lambdas)}"
                )
        self.optimizer = optimizer
        self.hypergrad_lambdas = lambdas
        self.base_hypergrad_lrs = [float(g["hypergrad_lr"]) for g in optimizer.param_groups]
        self.last_step = -1
        self.step()

    def step(self) -> None:
        """Advance the step count by one and write the new ``hypergrad_lr`` of every group (all
        of them or, when one is refused, none)."""
        step = self.last_step + 1
        values = []
        for index, (group, base, fn) in enumerate(zip(
            self.optimizer.param_groups, self.base_hypergrad_lrs, self.hypergrad_lambdas,
            strict=True,
        )):
            factor = float(fn(step))
            if not (math.isfinite(factor) and factor >= 0):
                raise ValueError(
                    f"hypergrad_lambda({step}) of param group {index} must be finite and >= 0, got {factor}"
                )
            value = base * factor
            rule = RULES.get(group.get("hypergrad_rule"))
            if rule is not None and value >= rule.beta_below:
                raise ValueError(
                    f"hypergrad_rule={rule.name!r} needs hypergrad_lr < {rule.beta_below:g}, the schedule gives "
                    f"{value} at step {step} for param group {index}"
                )
            values.append(value)
        self.last_step = step
        for group, value in zip(self.optimizer.param_groups, values):
            if isinstance(group["hypergrad_lr"], Tensor):
                group["hypergrad_lr"].fill_(value)
            else:
                group["hypergrad_lr"] = value

    def get_last_hypergrad_lr(self) -> list[float]:
        """The ``hypergrad_lr`` of every group as last written."""
        return [float(g["hypergrad_lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The step count and initial values (the functions themselves are not saved)."""
        return {"last_step": self.last_step, "base_hypergrad_lrs": list(self.base_hypergrad_lrs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from `state_dict`; load the optimizer's own state as well. A state_dict for a
        different number of param groups, or with a base that is not a finite number >= 0, or a
        step count that is not an int >= -1, is refused and nothing changes."""
        last_step, bases = state_dict["last_step"], list(state_dict["base_hypergrad_lrs"])
        check_number("last_step", last_step, "an int")
        if not (float(last_step).is_integer() and last_step >= -1):
            raise ValueError(f"Invalid last_step: {last_step} (must be an int >= -1)")
        if len(bases) != len(self.optimizer.param_groups):
            raise ValueError(
                f"Invalid base_hypergrad_lrs: {len(bases)} values for {len(self.optimizer.param_groups)} param groups"
            )
        for index, base in enumerate(bases):
            check_finite_nonnegative(f"base_hypergrad_lrs[{index}]", base)
        self.last_step = int(last_step)
        self.base_hypergrad_lrs = [float(v) for v in bases]
