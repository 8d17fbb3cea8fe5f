"""Adagrad-HD's twin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._base import ReferenceHD


class AdagradHDReference(ReferenceHD):
    """Adagrad-HD, one plain loop (see :class:`hypergrad.AdagradHD`)."""

    paper_hypergrad_lr = 1e-6

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        hypergrad_lr: float | None = None,
        hypergrad_rule: str = "scalefree",
        lr_bounds: Sequence[float] | None = None,
        granularity: str = "group",
        lr_limit: float | None = None,
        lr_limit_power: float = 2.0,
        first_step_bound: float | None = 0.1,
    ) -> None:
        super().__init__(params, locals())

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        if "t" not in state:
            state.update(t=0, G=torch.full_like(p, group["initial_accumulator_value"]))
        state["t"] += 1
        state["G"] = state["G"] + g * g
        decay = 1 + (state["t"] - 1) * group["lr_decay"]
        return g / (decay * (state["G"].sqrt() + group["eps"]))
