"""RMSprop-HD: ``torch.optim.RMSprop`` whose learning rate learns online."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._kernels import (
    LearningRate,
    as_real,
    by_device,
    descend,
    direction_buffer,
    foreach_descend,
    stored_copies,
)
from ._validation import check_rmsprop_arguments
from .optimizer import GroupTensors, HypergradOptimizer, PreviousDirections

__all__ = ["RMSpropHD"]


class RMSpropHD(HypergradOptimizer):
    r"""RMSprop (optionally centered, optionally with momentum) whose learning rate adapts online
    by hypergradient descent.

    Every argument of :class:`torch.optim.RMSprop` keeps its meaning (``alpha`` is the smoothing
    constant, not the learning rate); with ``hypergrad_lr=0`` this is exactly
    ``torch.optim.RMSprop``.

    .. math::
        \begin{aligned}
            &g_t = \pm\nabla f_t(\theta_{t-1}) + \lambda\,\theta_{t-1}, \qquad
                s_t = \rho\, s_{t-1} + (1 - \rho)\, g_t^2 \quad(\rho = \text{alpha}) \\
            &d_t = g_t / (\sqrt{s_t} + \epsilon) \quad\text{or, centered,}\quad
                d_t = g_t / (\sqrt{s_t - \bar g_t^2} + \epsilon),
                \ \bar g_t = \rho\, \bar g_{t-1} + (1 - \rho)\, g_t \\
            &u_t = d_t \quad(\mu = 0), \qquad u_t = b_t = \mu\, b_{t-1} + d_t \quad(b_0 = 0;
                \ \mu = \text{momentum}) \\
            &\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot u_{t-1}
                \quad\text{or}\quad \alpha_{t-1}\bigl(1 + \beta\cos(g_t, u_{t-1})\bigr) \\
            &\theta_t = \theta_{t-1} - \alpha_t u_t
        \end{aligned}

    Memory: with momentum nothing extra (the momentum buffer is ``u_{t-1}``); without, one buffer,
    ``state["hypergrad_direction"]`` (``g_{t-1}`` cannot be recovered from ``s``).

    Args:
        params: parameters or param groups; a group may override ``lr`` and ``hypergrad_lr``.
        lr: initial learning rate ``alpha_0`` (default 1e-2, as torch.optim.RMSprop).
        alpha, eps, weight_decay, momentum, centered, foreach, maximize: as in
            ``torch.optim.RMSprop`` (``foreach`` and ``maximize`` keyword-only here: torch's next
            positional argument is ``capturable``, which this optimizer does not take).
        hypergrad_lr: ``beta``; ``None`` (the default) is the rule's own: 0.05 for the
            scale-free rule; for the additive and multiplicative rules 1e-6 (the direction is
            normalised per coordinate like Adam's: Adam-HD's 1e-7 scaled by RMSprop's 10x larger
            default lr).
        hypergrad_rule, lr_bounds, granularity, lr_limit, lr_limit_power, first_step_bound: see
            :class:`hypergrad.HypergradOptimizer`.
    """

    paper_hypergrad_lr = 1e-6
    check_base_arguments = staticmethod(check_rmsprop_arguments)

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
        foreach: bool | None = None,
        maximize: bool = False,
        **hypergrad: Any,
    ) -> None:
        defaults = dict(
            lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
            centered=centered, foreach=foreach, maximize=maximize,
        )
        super().__init__(params, defaults, **hypergrad)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0.0)
            group.setdefault("centered", False)

    def _init_state(self, group: dict[str, Any], param: Tensor, state: dict[str, Any]) -> None:
        if not state:
            # torch.optim.RMSprop's layout (its step counter is kept though nothing reads it).
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["square_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if group["momentum"] > 0:
                state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if group["centered"]:
                state["grad_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def _previous_directions(self, group: dict[str, Any], tensors: GroupTensors) -> PreviousDirections:
        # With momentum u_{t-1} is the momentum buffer (zeros before the first step: u_0 = 0).
        key = "momentum_buffer" if group["momentum"] > 0 else "hypergrad_direction"
        indices = [i for i, s in enumerate(tensors.states) if key in s]
        return PreviousDirections(indices, [as_real(tensors.states[i][key]) for i in indices])

    def _update_params(self, group: dict[str, Any], tensors: GroupTensors, lr: LearningRate) -> None:
        rmsprop_update = _multi_tensor_update if tensors.foreach else _single_tensor_update
        rmsprop_update(
            tensors.params, tensors.grads, tensors.states,
            lr=lr, alpha=group["alpha"], eps=group["eps"], momentum=group["momentum"], centered=group["centered"],
        )


def _single_tensor_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, alpha: float, eps: float, momentum: float, centered: bool,
) -> None:
    """torch.optim.RMSprop's for-loop step; without momentum ``g / avg`` is kept for the next
    hypergradient."""
    for param, grad, state in zip(params, grads, states):
        state["step"] += 1
        square_avg = as_real(state["square_avg"])
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            grad_avg = as_real(state["grad_avg"])
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if momentum > 0:
            direction = as_real(state["momentum_buffer"])
            direction.mul_(momentum).addcdiv_(grad, avg)
        else:
            direction = torch.div(grad, avg, out=direction_buffer(state, grad))
        descend(param, direction, lr)


def _multi_tensor_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, alpha: float, eps: float, momentum: float, centered: bool,
) -> None:
    """torch.optim.RMSprop's foreach step, grouped by device and dtype."""
    for device_params, device_grads, device_states in by_device(params, grads, states):
        torch._foreach_add_([s["step"] for s in device_states], torch.tensor(1.0, device="cpu"), alpha=1.0)
        square_avgs = [as_real(s["square_avg"]) for s in device_states]
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, device_grads, device_grads, value=1 - alpha)
        if centered:
            grad_avgs = [as_real(s["grad_avg"]) for s in device_states]
            torch._foreach_lerp_(grad_avgs, device_grads, 1 - alpha)
            avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, eps)
        if momentum > 0:
            directions = [as_real(s["momentum_buffer"]) for s in device_states]
            torch._foreach_mul_(directions, momentum)
            torch._foreach_addcdiv_(directions, device_grads, avg)
        else:
            directions = stored_copies(device_states, device_grads)
            torch._foreach_div_(directions, avg)
        foreach_descend(device_params, directions, lr)
