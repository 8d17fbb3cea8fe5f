"""Schedule-Free AdamW and SGD (Defazio et al., 2024) whose learning rate learns online.

Schedule-Free keeps three sequences per parameter: ``z`` takes the base optimizer's steps, ``x``
is their weighted average (what one evaluates) and the gradient is taken at the interpolation
``y = (1 - b) z + b x`` (``b`` = ``betas[0]`` or ``momentum``). The parameters hold ``y`` in train
mode and ``x`` in eval mode; the state holds ``z``. In the package's indexing (the gradient of step
``t`` is taken at ``y_{t-1}``), with ``s_t = min(t / warmup_steps, 1)`` and the scheduled rate
``gamma_t = s_t alpha_t``::

    z_t = z_{t-1} - gamma_t u_t
    x_t = (1 - c_t) x_{t-1} + c_t z_t,        c_t = w_t / sum_{j <= t} w_j,
                                               w_t = t^r (max_{j <= t} gamma_j)^weight_lr_power
    y_t = y_{t-1} + c_t (z_{t-1} - y_{t-1}) + gamma_t (b (1 - c_t) - 1) u_t

so the derivative of the new parameters with respect to the rate of the step is

    d y_t / d alpha_t = -s_t ((1 - b) + b c_t) u_t + [gamma_t > max_{j<t} gamma_j] (p c_t / alpha_t) (z_t - y_t)

(the second term: the averaging weight ``c_t`` grows with the rate while the rate sets a new
maximum, ``p`` = ``weight_lr_power``; derivation in docs/hypergradient.md). HD descends
``g_{t+1} . d y_t / d alpha_t``: the optimizer offers ``U_t = -d y_t / d alpha_t`` as its previous
direction, and every rule and granularity of :class:`HypergradOptimizer` applies to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch
from torch import Tensor

from ._keywords import keyword_defaults
from ._kernels import LearningRate, adopt_directions, as_real, descend, foreach_descend, stored_copies
from ._rates import applied_rate, remember, remembered
from ._validation import check_schedule_free_adamw_arguments, check_schedule_free_sgd_arguments
from .optimizer import GroupTensors, HypergradOptimizer, PreviousDirections

__all__ = ["ScheduleFreeAdamWHD", "ScheduleFreeSGDHD"]

#: The group keys Schedule-Free keeps (its names and starting values): the step count, the
#: train/eval switch, the sum of the averaging weights, the largest scheduled rate so far, the
#: scheduled rate of the last step (for logging).
_AVERAGING_KEYS: dict[str, Any] = dict(k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)


def warmup_factor(k: int, warmup_steps: int) -> float:
    """``s = (k + 1) / warmup_steps`` during the warmup, 1 after it (``k`` steps taken before)."""
    return (k + 1) / warmup_steps if k < warmup_steps else 1.0


def averaging_weight(group: dict[str, Any], scheduled_lr: LearningRate) -> tuple[LearningRate, LearningRate]:
    """Schedule-Free's averaging weight ``c_t`` for a step at ``scheduled_lr`` (its arithmetic),
    advancing ``group["lr_max"]`` and ``group["weight_sum"]``; and whether the rate set a new
    maximum (where ``c_t`` depends on it). ``c_t = 0`` while every weight is 0 (a zero rate)."""
    previous = group["lr_max"]
    if isinstance(scheduled_lr, Tensor):
        previous = torch.as_tensor(previous, dtype=scheduled_lr.dtype, device=scheduled_lr.device)
        lr_max = torch.maximum(scheduled_lr, previous)
    else:
        lr_max = max(scheduled_lr, previous)
    record = scheduled_lr > previous
    weight = ((group["k"] + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
    weight_sum = group["weight_sum"] + weight
    group["lr_max"], group["weight_sum"] = lr_max, weight_sum
    if isinstance(weight_sum, Tensor):
        return torch.where(weight_sum > 0, weight / weight_sum, torch.zeros_like(weight_sum)), record
    return (weight / weight_sum if weight_sum != 0 else 0.0), record


class _ScheduleFreeHD(HypergradOptimizer):
    """What both Schedule-Free optimizers share: the train/eval switch, the averaging, the step of
    ``y`` and ``z`` along the base rule's direction ``u_t`` (``_directions``), and ``U_t``."""

    #: No bound on the first update (``first_step_bound``): the averaging weight of the first step
    #: depends on its rate, so a retracted step is not the one a smaller rate would have taken;
    #: Schedule-Free's own ``warmup_steps`` is the safety net from above here.
    hypergrad_defaults = {**keyword_defaults(), "first_step_bound": None}

    def __init__(self, params: Any, defaults: dict[str, Any], **hypergrad: Any) -> None:
        super().__init__(params, {**defaults, **_AVERAGING_KEYS, "maximize": False}, **hypergrad)

    def _checked_settings(self, settings: Mapping[str, Any], *, initial: bool = True) -> dict[str, Any]:
        if settings.get("first_step_bound") is not None:
            raise ValueError(f"Invalid first_step_bound: {settings['first_step_bound']!r} ({type(self).__name__} takes "
                             "only None: the averaging weight of the first step depends on its rate; use warmup_steps)")
        return super()._checked_settings(settings, initial=initial)

    def _interpolation(self, group: dict[str, Any]) -> float:
        """``b``: where between ``z`` (0) and ``x`` (1) the gradient is taken."""
        raise NotImplementedError

    def _directions(self, group: dict[str, Any], tensors: GroupTensors, foreach: bool) -> list[Tensor]:
        """The base rule's ``u_t`` per parameter (kept as ``state["hypergrad_direction"]``)."""
        raise NotImplementedError

    @torch.no_grad()
    def eval(self) -> None:
        """Parameters to ``x`` (the average), as ``schedulefree``'s ``eval()``: call it before
        evaluating or saving the model."""
        self._switch(train=False)

    @torch.no_grad()
    def train(self) -> None:
        """Parameters to ``y`` (where gradients are taken), as ``schedulefree``'s ``train()``:
        call it before training (a step in eval mode is an error)."""
        self._switch(train=True)

    def _switch(self, train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == train:
                continue
            b = self._interpolation(group)
            weight = 1 - b if train else 1 - 1 / b  # y = x + (1 - b) (z - x); x = y + (1 - 1/b) (z - y)
            for p in group["params"]:
                state = self.state[p]
                if "z" in state:
                    as_real(p).lerp_(state["z"].to(p.device), weight)
            group["train_mode"] = train

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step (see :meth:`HypergradOptimizer.step`); only in train mode, as ``schedulefree``'s."""
        if not self.param_groups[0]["train_mode"]:
            raise RuntimeError(
                f"{type(self).__name__} was not in train mode when step was called: call optimizer.train() "
                "before training and optimizer.eval() before evaluating (as with schedulefree)"
            )
        return super().step(closure)

    def _init_state(self, group: dict[str, Any], param: Tensor, state: dict[str, Any]) -> None:
        if "z" not in state:
            state["z"] = param.detach().clone(memory_format=torch.preserve_format)

    def _previous_directions(self, group: dict[str, Any], tensors: GroupTensors) -> PreviousDirections:
        # U_t = s_t ((1 - b) + b c_t) (u_t + ratio (y_t - z_t)), ratio = the weight term's scale over
        # the first's (both remembered at step t); the weight term only for one rate per group
        # (c_t depends on the group's rate, not on a tensor's or weight's factor).
        scale = remembered(group, "direction_scale", None)
        if scale is None:
            return PreviousDirections([], [])
        indices = [i for i, state in enumerate(tensors.states) if "hypergrad_direction" in state]
        directions = [tensors.states[i]["hypergrad_direction"] for i in indices]
        average = remembered(group, "average_scale", 0.0) if group["granularity"] == "group" else 0.0
        if isinstance(average, Tensor) or average != 0:
            ratio = average / scale
            directions = (
                torch.sub(tensors.params[i], tensors.states[i]["z"]).mul_(ratio).add_(u)
                for i, u in zip(indices, directions)
            )
        return PreviousDirections(indices, directions, [scale] * len(indices))

    def _update_params(self, group: dict[str, Any], tensors: GroupTensors, lr: LearningRate) -> None:
        foreach = tensors.foreach
        sched = warmup_factor(group["k"], group["warmup_steps"])
        scheduled_lr = group["scheduled_lr"] = lr * sched
        c, record = averaging_weight(group, scheduled_lr)
        b = self._interpolation(group)
        directions = self._directions(group, tensors, foreach)
        coefficient = scheduled_lr * (b * (1 - c) - 1)
        if foreach:
            zs = [state["z"] for state in tensors.states]
            torch._foreach_lerp_(tensors.params, zs, c)
            foreach_descend(tensors.params, directions, -coefficient)
            foreach_descend(zs, directions, scheduled_lr)
        else:
            for y, state, u in zip(tensors.params, tensors.states, directions):
                y.lerp_(state["z"], c)
                descend(y, u, -coefficient)
                descend(state["z"], u, scheduled_lr)
        group["k"] += 1
        power = group["weight_lr_power"]
        if isinstance(c, Tensor):
            new_maximum = record & (c > 0) & (c < 1)
            average_scale = torch.where(new_maximum, power * c / lr, torch.zeros_like(c))
        else:
            average_scale = power * c / lr if record and 0 < c < 1 else 0.0
        # U_t's two scales: s_t ((1 - b) + b c_t), and p c_t / alpha_t on a new maximum (else 0).
        remember(group, direction_scale=sched * ((1 - b) + b * c), average_scale=average_scale)

    def _rescale_step(self, group: dict[str, Any], tensors: GroupTensors, scales: list[Tensor],
                      lr: LearningRate, blend_step: int | None) -> None:
        """Per tensor or weight: the step moved ``z`` by ``-s_t lr u_t`` and ``y`` by
        ``-s_t ((1 - b) + b c_t) lr u_t`` along ``u_t``; move both on to the tensor's (weight's)
        own rate ``lr * scale``. The averaging weight stays the group's."""
        sched = warmup_factor(group["k"] - 1, group["warmup_steps"])
        direction_scale = remembered(group, "direction_scale", None)
        for param, state, scale in zip(tensors.params, tensors.states, scales):
            extra = applied_rate(group, scale, lr, blend_step) - lr
            u = state["hypergrad_direction"]
            param.sub_(u * (extra * direction_scale).to(param.dtype))
            state["z"].sub_(u * (extra * sched).to(param.dtype))



class ScheduleFreeAdamWHD(_ScheduleFreeHD):
    r"""Schedule-Free AdamW (Defazio et al., 2024) whose learning rate adapts online by
    hypergradient descent.

    Every argument of ``schedulefree.AdamWScheduleFree`` keeps its meaning and default, and so do
    ``train()`` and ``eval()``: the parameters hold ``y`` (where gradients are taken) in train mode
    and the average ``x`` in eval mode; call ``optimizer.train()`` before training (a step in eval
    mode is an error) and ``optimizer.eval()`` before evaluating or saving the model. With
    ``hypergrad_lr=0`` this is exactly ``AdamWScheduleFree``. HD adapts ``group["lr"]``, the
    rate before the warmup factor (``group["scheduled_lr"]`` is the one the last step used).

    .. math::
        \begin{aligned}
            &g_t = \nabla f_t(y_{t-1}), \quad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \quad
                u_t = \frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon} + \lambda\, y_{t-1} \\
            &\alpha_t = \text{rule}(\alpha_{t-1}, g_t \cdot U_{t-1}), \quad
                \gamma_t = s_t \alpha_t, \quad s_t = \min(t / \text{warmup\_steps}, 1) \\
            &c_t = w_t / \textstyle\sum_{j \le t} w_j, \quad
                w_t = t^r \bigl(\max_{j \le t} \gamma_j\bigr)^p \quad (p = \text{weight\_lr\_power}) \\
            &z_t = z_{t-1} - \gamma_t u_t, \quad
                y_t = y_{t-1} + c_t (z_{t-1} - y_{t-1}) + \gamma_t (\beta_1 (1 - c_t) - 1) u_t \\
            &U_t = -\frac{\partial y_t}{\partial \alpha_t} = s_t \bigl((1 - \beta_1) + \beta_1 c_t\bigr) u_t
                - [\gamma_t > \max_{j<t} \gamma_j]\, \frac{p\, c_t}{\alpha_t} (z_t - y_t)
        \end{aligned}

    (``y = (1 - beta1) z + beta1 x``; the decay is taken at ``y`` and is not part of the loss HD
    descends.) The second term of ``U_t`` is the averaging weight's dependence on the rate; it
    applies at ``granularity="group"`` only (per tensor or weight, ``c_t`` is the group's and does
    not depend on a tensor's factor). Memory: ``z``, ``exp_avg_sq`` and ``u_t``
    (``state["hypergrad_direction"]``), one buffer more than ``AdamWScheduleFree``. A checkpoint of
    ``AdamWScheduleFree`` loads (HD starts at the next step).

    Batch norm: the running statistics of a model trained at ``y`` do not belong to ``x``.
    Recompute them at ``x`` before evaluating, as with ``schedulefree``: ``model.train();
    optimizer.eval()``, then a few training batches forward under ``torch.no_grad()``, then
    ``model.eval()``.

    Args:
        params: parameters or param groups.
        lr, betas, eps, weight_decay, warmup_steps, r, weight_lr_power, foreach: as in
            ``schedulefree.AdamWScheduleFree`` (``lr`` is the initial rate ``alpha_0``; afterwards
            ``param_groups[i]["lr"]`` holds the adapted one). ``betas[0]`` must be in (0, 1).
        hypergrad_lr, hypergrad_rule, lr_bounds, granularity, lr_limit, lr_limit_power: as in
            :class:`hypergrad.AdamWHD` (the paper has no beta for Schedule-Free; the additive and
            multiplicative rules take Adam's, 1e-7). ``first_step_bound``: only ``None``.
    """

    paper_hypergrad_lr = 1e-7
    check_base_arguments = staticmethod(check_schedule_free_adamw_arguments)

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = True,
        **hypergrad: Any,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                        weight_lr_power=weight_lr_power, foreach=foreach)
        super().__init__(params, defaults, **hypergrad)

    def _interpolation(self, group: dict[str, Any]) -> float:
        return group["betas"][0]

    def _coupled_weight_decay(self, group: dict[str, Any]) -> float:
        return 0.0  # the decay is part of u_t, after the normalisation (see _directions)

    def _init_state(self, group: dict[str, Any], param: Tensor, state: dict[str, Any]) -> None:
        super()._init_state(group, param, state)
        if "exp_avg_sq" not in state:
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def _directions(self, group: dict[str, Any], tensors: GroupTensors, foreach: bool) -> list[Tensor]:
        """``u_t = g_t / (sqrt(v_t / (1 - beta2^t)) + eps) + weight_decay * y_{t-1}``, written into
        the denominator's fresh memory and kept (``AdamWScheduleFree``'s arithmetic)."""
        beta2, eps, decay = group["betas"][1], group["eps"], group["weight_decay"]
        bias_correction2 = 1 - beta2 ** (group["k"] + 1)
        second_moments = [state["exp_avg_sq"] for state in tensors.states]
        if foreach:
            torch._foreach_mul_(second_moments, beta2)
            torch._foreach_addcmul_(second_moments, tensors.grads, tensors.grads, value=1 - beta2)
            denoms = torch._foreach_div(second_moments, bias_correction2)
            torch._foreach_sqrt_(denoms)
            torch._foreach_add_(denoms, eps)
            directions = list(torch._foreach_div(tensors.grads, denoms))
            if decay != 0:
                torch._foreach_add_(directions, tensors.params, alpha=decay)
        else:
            directions = []
            for y, g, v in zip(tensors.params, tensors.grads, second_moments):
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = v.div(bias_correction2).sqrt_().add_(eps)
                u = torch.div(g, denom, out=denom)
                directions.append(u.add_(y, alpha=decay) if decay != 0 else u)
        return adopt_directions(tensors.states, directions)


class ScheduleFreeSGDHD(_ScheduleFreeHD):
    r"""Schedule-Free SGD (Defazio et al., 2024) whose learning rate adapts online by
    hypergradient descent.

    Every argument of ``schedulefree.SGDScheduleFree`` keeps its meaning and default, and so do
    ``train()`` and ``eval()`` (see :class:`ScheduleFreeAdamWHD`, also for batch norm); with
    ``hypergrad_lr=0`` this is exactly ``SGDScheduleFree``. As there but with
    ``u_t = g_t = \nabla f_t(y_{t-1}) + \lambda y_{t-1}`` (the decay is an L2 term of the loss HD
    descends) and ``b = momentum``:

    .. math::
        \begin{aligned}
            &z_t = z_{t-1} - \gamma_t g_t, \quad
                y_t = y_{t-1} + c_t (z_{t-1} - y_{t-1}) + \gamma_t (\mu (1 - c_t) - 1) g_t \\
            &U_t = s_t \bigl((1 - \mu) + \mu c_t\bigr) g_t
                - [\gamma_t > \max_{j<t} \gamma_j]\, \frac{p\, c_t}{\alpha_t} (z_t - y_t)
        \end{aligned}

    Memory: ``z`` and ``u_t`` (``state["hypergrad_direction"]``; with ``weight_decay`` the step's
    own ``g_t + lambda y`` is kept, else ``p.grad`` is copied), one buffer more than
    ``SGDScheduleFree``.

    Args:
        params: parameters or param groups.
        lr, momentum, weight_decay, warmup_steps, r, weight_lr_power, foreach: as in
            ``schedulefree.SGDScheduleFree`` (``lr``, default 1.0, is the initial rate).
            ``momentum`` must be in (0, 1).
        hypergrad_lr, hypergrad_rule, lr_bounds, granularity, lr_limit, lr_limit_power: as in
            :class:`hypergrad.SGDHD` (the additive and multiplicative rules take SGD's beta, 1e-3).
            ``first_step_bound``: only ``None``.
    """

    paper_hypergrad_lr = 1e-3
    check_base_arguments = staticmethod(check_schedule_free_sgd_arguments)

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        foreach: bool | None = True,
        **hypergrad: Any,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                        weight_lr_power=weight_lr_power, foreach=foreach)
        super().__init__(params, defaults, **hypergrad)

    def _interpolation(self, group: dict[str, Any]) -> float:
        return group["momentum"]

    def _directions(self, group: dict[str, Any], tensors: GroupTensors, foreach: bool) -> list[Tensor]:
        """``u_t = g_t`` (with the L2 term): the step's own tensor kept where the decay made one,
        ``p.grad`` copied otherwise."""
        if group["weight_decay"] != 0:
            return adopt_directions(tensors.states, tensors.grads)
        return stored_copies(tensors.states, tensors.grads)
