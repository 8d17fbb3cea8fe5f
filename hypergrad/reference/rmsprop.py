"""RMSprop-HD's twin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._base import ReferenceHD


class RMSpropHDReference(ReferenceHD):
    """RMSprop-HD (centered, momentum), one plain loop (see :class:`hypergrad.RMSpropHD`)."""

    paper_hypergrad_lr = 1e-6

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
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
        rho = group["alpha"]
        if "s" not in state:
            state.update(s=torch.zeros_like(p), g_bar=torch.zeros_like(p), b=torch.zeros_like(p))
        state["s"] = rho * state["s"] + (1 - rho) * g * g
        state["g_bar"] = rho * state["g_bar"] + (1 - rho) * g
        variance = state["s"] - state["g_bar"] ** 2 if group["centered"] else state["s"]
        d = g / (variance.sqrt() + group["eps"])
        if group["momentum"] == 0:
            return d
        state["b"] = group["momentum"] * state["b"] + d  # b_0 = 0
        return state["b"]
