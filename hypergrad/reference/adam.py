"""Adam-HD's and AdamW-HD's twins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._base import ReferenceHD


class AdamHDReference(ReferenceHD):
    """Adam-HD / AMSGrad-HD, one plain loop (see :class:`hypergrad.AdamHD`)."""

    paper_hypergrad_lr = 1e-7

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        decoupled_weight_decay: bool = False,
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
        beta1, beta2 = group["betas"]
        if "t" not in state:
            state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p), v_max=torch.zeros_like(p))
        state["t"] += 1
        t = state["t"]
        state["m"] = beta1 * state["m"] + (1 - beta1) * g
        state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
        state["v_max"] = torch.maximum(state["v_max"], state["v"])
        v = state["v_max"] if group["amsgrad"] else state["v"]
        m_hat = state["m"] / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        adam_direction = m_hat / (v_hat.sqrt() + group["eps"])
        if group["decoupled_weight_decay"]:
            return group["weight_decay"] * p + adam_direction  # theta_t = theta_{t-1} - alpha (wd theta_{t-1} + ...)
        return adam_direction


class AdamWHDReference(AdamHDReference):
    """AdamW-HD: the decoupled decay is part of the direction (see :class:`hypergrad.AdamWHD`)."""

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
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
        ReferenceHD.__init__(self, params, dict(locals(), decoupled_weight_decay=True))
