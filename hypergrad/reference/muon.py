"""Muon-HD's twin: momentum orthogonalised by Newton-Schulz iterations under hypergradient descent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._base import ReferenceHD


def newton_schulz(m: Tensor, a: float, b: float, c: float, steps: int, eps: float) -> Tensor:
    """``NS_k^{(a,b,c)}(M; eps)``: ``X_0 = M / max(|M|_F, eps)`` taken wide (``X^T`` of a tall
    ``M``), then ``X <- a X + (b A + c A A) X`` with ``A = X X^T``, ``k`` times; transposed back.
    In bfloat16 with torch.optim.Muon's fused multiply-adds (``addmm``), which round once per
    product: the iteration as torch defines it, so that the twins agree to float64's rounding."""
    tall = m.shape[0] > m.shape[1]
    x = (m.T if tall else m).to(torch.bfloat16)
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class MuonHDReference(ReferenceHD):
    """Muon-HD, one plain loop (see :class:`hypergrad.MuonHD`)::

        B_t = mu B_{t-1} + (1 - mu) g_t                  (B_0 = 0)
        M_t = (1 - mu) g_t + mu B_t  (nesterov)  or  B_t
        u_t = lambda theta_{t-1} + rho NS(M_t)           theta_t = theta_{t-1} - alpha_t u_t

    with ``rho = sqrt(max(1, A / B))`` (``adjust_lr_fn`` None or ``"original"``) or
    ``0.2 sqrt(max(A, B))`` (``"match_rms_adamw"``) for an ``A x B`` parameter.
    """

    paper_hypergrad_lr = 1e-6

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        hypergrad_lr: float | None = None,
        hypergrad_rule: str = "scalefree",
        lr_bounds: Sequence[float] | None = None,
        granularity: str = "group",
        lr_limit: float | None = None,
        lr_limit_power: float = 2.0,
        first_step_bound: float | None = 0.1,
    ) -> None:
        super().__init__(params, dict(locals(), maximize=False, decoupled_weight_decay=True))

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        mu = group["momentum"]
        state["B"] = mu * state.get("B", torch.zeros_like(p)) + (1 - mu) * g
        m = (1 - mu) * g + mu * state["B"] if group["nesterov"] else state["B"]
        o = newton_schulz(m, *group["ns_coefficients"], group["ns_steps"], group["eps"])
        rows, columns = p.shape
        if group["adjust_lr_fn"] == "match_rms_adamw":
            rho = 0.2 * math.sqrt(max(rows, columns))
        else:
            rho = math.sqrt(max(1.0, rows / columns))
        return group["weight_decay"] * p + rho * o.to(p.dtype)
