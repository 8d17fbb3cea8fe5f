"""Adagrad-HD: ``torch.optim.Adagrad`` whose learning rate learns online."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor
from ._compat import fused_adagrad, step_value
from ._compiled import adagrad_directions
from ._kernels import LearningRate, as_real, by_device, descend, direction_buffer, increment_steps
from ._validation import check_adagrad_arguments, check_fused
from .distributed import local_tensors
from .optimizer import GroupTensors, HypergradOptimizer, PreviousDirections

__all__ = ["AdagradHD"]


class AdagradHD(HypergradOptimizer):
    r"""Adagrad whose learning rate adapts online by hypergradient descent.

    Every argument of :class:`torch.optim.Adagrad` keeps its meaning; with ``hypergrad_lr=0`` this
    is exactly ``torch.optim.Adagrad``.

    .. math::
        \begin{aligned}
            &g_t = \pm\nabla f_t(\theta_{t-1}) + \lambda\,\theta_{t-1}, \qquad
                G_t = G_{t-1} + g_t^2 \quad(G_0 = \text{initial\_accumulator\_value}) \\
            &u_t = \frac{g_t}{(1 + (t-1)\,\eta)\,(\sqrt{G_t} + \epsilon)}
                \quad(\eta = \text{lr\_decay}) \\
            &\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot u_{t-1}
                \quad\text{or}\quad \alpha_{t-1}\bigl(1 + \beta\cos(g_t, u_{t-1})\bigr) \\
            &\theta_t = \theta_{t-1} - \alpha_t u_t
        \end{aligned}

    ``lr_decay`` is part of the direction: the adapted rate is the one before the decay, so that
    ``float(group["lr"])`` is comparable with the initial ``lr``. Memory: one buffer,
    ``state["hypergrad_direction"] = g_t / (sqrt(G_t) + eps)`` (``g_{t-1}`` cannot be recovered
    from ``G``); the decay factor is recomputed from ``state["step"]``.

    Args:
        params: parameters or param groups; a group may override ``lr`` and ``hypergrad_lr``.
        lr: initial learning rate ``alpha_0`` (default 1e-2, as torch.optim.Adagrad).
        lr_decay, weight_decay, initial_accumulator_value, eps, foreach, maximize: as in
            ``torch.optim.Adagrad``.
        fused: as in ``torch.optim.Adagrad``: ``True`` takes the update through torch's fused
            kernel (``torch._fused_adagrad_``; the step count then lives on the parameter's
            device, as there), then writes the direction ``g / (sqrt(G) + eps)`` for the next
            step (on the CPU, float32 and float64, in one compiled pass; eager where compiling
            fails). On the CPU the scale-free rule's statistics and the rule are compiled as for
            :class:`hypergrad.SGDHD`. ``None`` (the default) with ``foreach=None``: the fused
            path for float32/float64 parameters on the CPU (not ``capturable``), the fastest there
            at every model size, compiled around the kernel only for groups of ten million
            elements or more (compiling takes seconds); elsewhere torch's default (foreach on
            accelerators). ``False``: never fused.
        hypergrad_lr: ``beta``; ``None`` (the default) is the rule's own: 0.05 for the
            scale-free rule; for the additive and multiplicative rules 1e-6 (Adagrad's direction is
            normalised per coordinate like Adam's, ``g . u ~ sum |g_i|`` once ``G`` holds a few
            gradients: Adam-HD's 1e-7 scaled by Adagrad's 10x larger default lr).
        hypergrad_rule, lr_bounds, granularity, lr_limit, lr_limit_power, first_step_bound: see
            :class:`hypergrad.HypergradOptimizer`.
    """

    paper_hypergrad_lr = 1e-6
    check_base_arguments = staticmethod(check_adagrad_arguments)

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        fused: bool | None = None,
        **hypergrad: Any,
    ) -> None:
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize, fused=fused,
        )
        super().__init__(params, defaults, **hypergrad)

    def _init_state(self, group: dict[str, Any], param: Tensor, state: dict[str, Any]) -> None:
        if not state:
            # torch.optim.Adagrad's layout: a host step counter (on the device for the fused
            # kernel) and the sum of squares.
            device = param.device if self._use_fused(group) else None
            state["step"] = torch.tensor(0.0, dtype=torch.float32, device=device)
            state["sum"] = torch.full_like(
                param, group["initial_accumulator_value"], memory_format=torch.preserve_format
            )

    def _previous_directions(self, group: dict[str, Any], tensors: GroupTensors) -> PreviousDirections:
        indices = [i for i, s in enumerate(tensors.states) if "hypergrad_direction" in s]
        directions = [tensors.states[i]["hypergrad_direction"] for i in indices]
        if group["lr_decay"] == 0:
            return PreviousDirections(indices, directions)
        # The direction of step t was divided by 1 + (t - 1) * lr_decay; state["step"] is that t.
        scales: list[float | Tensor] = [
            1.0 / (1.0 + (step_value(tensors.states[i]["step"]) - 1) * group["lr_decay"]) for i in indices
        ]
        return PreviousDirections(indices, directions, scales)

    def _update_params(self, group: dict[str, Any], tensors: GroupTensors, lr: LearningRate) -> None:
        fused_update = functools.partial(_fused_update, compiled=tensors.compiled)
        adagrad_update = self._update_function(
            tensors, _single_tensor_update, _multi_tensor_update, fused_update
        )
        adagrad_update(
            tensors.params, tensors.grads, tensors.states, lr=lr, lr_decay=group["lr_decay"], eps=group["eps"]
        )


def _step_size(lr: LearningRate, step: float | Tensor, lr_decay: float) -> LearningRate:
    """torch.optim.Adagrad's ``clr = lr / (1 + (step - 1) * lr_decay)``."""
    return lr / (1 + (step - 1) * lr_decay)


def _single_tensor_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, lr_decay: float, eps: float,
) -> None:
    """torch.optim.Adagrad's for-loop step, keeping ``g / std`` for the next hypergradient."""
    for param, grad, state in zip(params, grads, states):
        step_t = state["step"]
        step_t += 1
        step_size = _step_size(lr, step_value(step_t), lr_decay)
        state_sum = as_real(state["sum"])
        state_sum.addcmul_(grad, grad, value=1)
        direction = direction_buffer(state, grad)
        _stored_directions([direction], [grad], [state_sum], eps)
        descend(param, direction, step_size)


def _multi_tensor_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, lr_decay: float, eps: float,
) -> None:
    """torch.optim.Adagrad's foreach step, grouped by device and dtype."""
    for device_params, device_grads, device_states in by_device(params, grads, states):
        steps = [s["step"] for s in device_states]
        increment_steps(steps)
        state_sums = [as_real(s["sum"]) for s in device_states]
        torch._foreach_addcmul_(state_sums, device_grads, device_grads, value=1)
        directions = _direction_buffers(device_states, device_grads)
        _stored_directions(directions, device_grads, state_sums, eps)
        steps_down = torch._foreach_mul(directions, [-_step_size(1.0, step_value(step), lr_decay) for step in steps])
        torch._foreach_mul_(steps_down, lr)
        torch._foreach_add_(device_params, steps_down)


def _direction_buffers(states: list[dict[str, Any]], grads: list[Tensor]) -> list[Tensor]:
    return [direction_buffer(state, grad) for state, grad in zip(states, grads)]


def _stored_directions(directions: list[Tensor], grads: list[Tensor], state_sums: list[Tensor], eps: float) -> None:
    """``u = g / (sqrt(G) + eps)`` (before the decay factor) into the direction buffers, tensor by
    tensor on the local shards, with no temporary: a parameter-sized temporary is fresh memory at
    every step, which costs more than the arithmetic (on the CPU, page faults)."""
    for direction, state_sum, grad in zip(local_tensors(directions), local_tensors(state_sums), local_tensors(grads)):
        torch.sqrt(state_sum, out=direction).add_(eps)
        torch.div(grad, direction, out=direction)


def _fused_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, lr_decay: float, eps: float, compiled: bool,
) -> None:
    """torch.optim.Adagrad's fused step (the gradients come with the decay and sign applied), then
    the direction the kernel does not keep (on the CPU in one compiled pass where ``compiled``,
    ``_compiled.py``)."""
    for device_params, device_grads, device_states in by_device(params, grads, states):
        steps = [s["step"] for s in device_states]
        increment_steps(steps)
        state_sums = [s["sum"] for s in device_states]
        fused_adagrad(
            device_params, device_grads, state_sums, steps,
            lr=lr, lr_decay=lr_decay, weight_decay=0.0, eps=eps, maximize=False,
        )
        directions = _direction_buffers(device_states, device_grads)
        if not (compiled and adagrad_directions(_stored_directions, directions, device_grads, state_sums, eps)):
            _stored_directions(directions, device_grads, state_sums, eps)
