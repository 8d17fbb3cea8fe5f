"""SGD-HD's twin: plain SGD, heavy ball and Nesterov under hypergradient descent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ._base import ReferenceHD


class SGDHDReference(ReferenceHD):
    """SGD-HD / heavy-ball HD / SGDN-HD, one plain loop (see :class:`hypergrad.SGDHD`)."""

    paper_hypergrad_lr = 1e-3

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
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
        mu = group["momentum"]
        if mu == 0:
            return g
        if "velocity" not in state:
            state["velocity"] = g.clone()  # v_1 = g_1
        else:
            state["velocity"] = mu * state["velocity"] + (1 - group["dampening"]) * g
        return g + mu * state["velocity"] if group["nesterov"] else state["velocity"]
