"""Adam-HD: ``torch.optim.Adam`` whose learning rate learns online."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from ._compat import flat_copy, fused_adam, fused_adamw, version
from ._compiled import recomputed_sums
from ._hypergradient import flat_pays, flat_statistics, statistics_rows
from ._kernels import LearningRate, by_device, increment_steps, one_kind
from ._rates import group_rate, remember, remembered
from ._rules import RULES
from ._validation import check_adam_arguments, check_fused
from .distributed import local_tensors
from .optimizer import GroupTensors, HypergradOptimizer, PreviousDirections

__all__ = ["AdamHD", "AdamWHD"]


class AdamHD(HypergradOptimizer):
    r"""Adam (optionally AMSGrad) whose learning rate adapts online by hypergradient descent
    (Baydin et al., ICLR 2018).

    Every argument of :class:`torch.optim.Adam` keeps its meaning (``weight_decay`` is the coupled
    L2 term, as there, unless ``decoupled_weight_decay=True``: then it is AdamW's, see
    :class:`AdamWHD`); with ``hypergrad_lr=0`` this is exactly ``torch.optim.Adam``.

    .. math::
        \begin{aligned}
            &g_t = \pm\nabla f_t(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
            &u_{t-1} = \hat m_{t-1} / (\sqrt{\hat v_{t-1}} + \epsilon)
                \quad(\text{recomputed from the state; } u_0 = 0) \\
            &\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot u_{t-1}
                \quad\text{or}\quad \alpha_{t-1}\bigl(1 + \beta\cos(g_t, u_{t-1})\bigr),
                \text{ clipped to lr\_bounds, kept if not finite} \\
            &m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2
                \quad(\text{AMSGrad: } v_t \leftarrow \max(v_{t-1}^{\max}, v_t)) \\
            &\hat m_t = m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t) \\
            &\theta_t = \theta_{t-1} - \alpha_t\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)
        \end{aligned}

    No extra memory: the previous direction is recomputed from ``exp_avg``, ``exp_avg_sq`` (or
    ``max_exp_avg_sq``) and ``step`` before they are updated. The state has torch.optim.Adam's
    layout, so checkpoints of either load into the other.

    Args:
        params: parameters or param groups; a group may override ``lr`` and ``hypergrad_lr``.
        lr: initial learning rate ``alpha_0``; afterwards ``param_groups[i]["lr"]`` holds the
            adapted one.
        betas, eps, weight_decay, amsgrad, decoupled_weight_decay, maximize, foreach: as in
            ``torch.optim.Adam``.
        capturable: as in ``torch.optim.Adam``: allows ``step()`` to be captured in a CUDA graph.
            The step never waits for the device either way (lr and step counts live there).
        fused: as in ``torch.optim.Adam``: ``True`` takes the update through torch's fused kernel
            (``torch._fused_adam_``, ``torch._fused_adamw_`` for the decoupled decay; CPU and CUDA,
            floating point parameters) with the new rate; only the statistics pass, which
            recomputes ``u_{t-1}`` from the moments, is extra. On the CPU (float32, float64) that
            pass is one ``torch.compile``d reduction (and a tensor ``lr``'s scale-free rule one
            compiled call; a float ``lr`` moves on host floats), compiled at the first step that
            takes statistics (seconds; eager where compiling fails or
            ``HYPERGRAD_COMPILED_STATISTICS=0``; see docs/performance.md).
            ``None`` (the default) with ``foreach=None``: the default path
            (:func:`hypergrad._paths.fused_by_default`: fused on the CPU). ``False``: never fused.
        hypergrad_lr: ``beta``; ``None`` (the default) is the rule's own: 0.05 for the
            scale-free rule, and for the additive and multiplicative rules the reference code's
            1e-7 for Adam-HD on MNIST logistic regression and MLP (it used 1e-8 for VGG on
            CIFAR-10), much smaller than SGD-HD's 1e-3 because Adam's direction is normalised per
            coordinate: ``g . u ~ sum |g_i|``, which for a network of ~1e6 weights is ~1e3..1e4
            times larger than SGD's ``|g|^2``.
        hypergrad_rule: ``"scalefree"`` (the default: Adam-normalised steps on ``log lr`` driven by
            the cosine of ``g_t`` and ``u_{t-1}``, with a guard that halves a diverging rate; no
            scale to tune), ``"additive"`` (the paper's HD), ``"multiplicative"`` (normalised
            HDM, ``hypergrad_lr`` in [0, 1)), or any other rule registered in ``hypergrad/_rules.py``;
            see ``docs/hypergradient.md``.
        lr_bounds: optional ``(low, high)``; the lr is clipped into it after every update.
        granularity, lr_limit, lr_limit_power: one rate per group, tensor or weight, and the
            convergence-ensuring blend; see :class:`hypergrad.HypergradOptimizer`.
        first_step_bound: a group's first update (under ``hypergrad_rule="bracket"``, every update
            while it climbs) moves its parameters by at most this fraction of their norm (default
            0.1; ``None``: no bound); see :class:`hypergrad.HypergradOptimizer`.
    """

    paper_hypergrad_lr = 1e-7
    check_base_arguments = staticmethod(check_adam_arguments)

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
        foreach: bool | None = None,
        capturable: bool = False,
        fused: bool | None = None,
        **hypergrad: Any,
    ) -> None:
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
            capturable=capturable, fused=fused,
        )
        super().__init__(params, defaults, **hypergrad)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("decoupled_weight_decay", False)

    def _init_state(self, group: dict[str, Any], param: Tensor, state: dict[str, Any]) -> None:
        if not state:
            # A step counter on the parameter's device keeps bias corrections off the host.
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if not _keeps_previous_param(group):
            state.pop("previous_param", None)  # (saved by an earlier version: recomputed instead)
        elif "previous_param" not in state:
            # theta_{t-2} for the decay term of u_{t-1}; zeros before the first step (u_0 = 0).
            # A state from elsewhere (a torch.optim.AdamW checkpoint) lacks it: the current
            # parameter is the nearest value we have.
            started = bool(state["step"] > 0)
            state["previous_param"] = param.detach().clone() if started else torch.zeros_like(param)

    def _coupled_weight_decay(self, group: dict[str, Any]) -> float:
        return 0.0 if group["decoupled_weight_decay"] else group["weight_decay"]

    def _previous_directions(self, group: dict[str, Any], tensors: GroupTensors) -> PreviousDirections:
        # The betas the previous step used: a scheduler may have moved them since (OneCycleLR and
        # CyclicLR cycle beta1).
        beta1, beta2 = remembered(group, "betas", group["betas"])
        second_moment = "max_exp_avg_sq" if group["amsgrad"] else "exp_avg_sq"
        foreach = tensors.foreach
        indices = list(range(len(tensors.states)))
        steps: list[float | Tensor] = [state["step"] for state in tensors.states]
        if _on_host(tensors.states[0]["step"]):
            # Host step counts, read once: skip parameters without a previous direction (u_0 = 0).
            steps = [step.item() for step in steps]  # type: ignore[union-attr]
            indices = [i for i in indices if steps[i] > 0]
            steps = [steps[i] for i in indices]
        # AdamW: u_{t-1} = weight_decay * theta_{t-2} + the Adam direction (torch decays the
        # parameter by lr * weight_decay before the Adam step, so the decay is part of the step).
        # Per tensor or weight theta_{t-2} is kept; at one rate per group it is recomputed.
        previous_params, weight_decay, decay_scale = None, 0.0, 1.0
        if _keeps_previous_param(group):
            previous_params, weight_decay = [tensors.states[i]["previous_param"] for i in indices], group["weight_decay"]
        elif group["decoupled_weight_decay"]:
            weight_decay, reached = _reached_by(group)
            if weight_decay != 0:
                indices, steps = self._unwritten(tensors, indices, steps)
                previous_params, decay_scale = [tensors.params[i] for i in indices], 1 / (1 - weight_decay * reached)
        states = [tensors.states[i] for i in indices]
        directions, scales, rows = previous_adam_directions(
            [s["exp_avg"] for s in states],
            [s[second_moment] for s in states],
            steps,
            beta1=beta1, beta2=beta2, eps=group["eps"], foreach=foreach,
            previous_params=previous_params, weight_decay=weight_decay, decay_scale=decay_scale,
            one_pass=tensors.compiled,
        )
        return PreviousDirections(indices, directions, scales, rows)

    def _unwritten(self, tensors: GroupTensors, indices: list[int],
                   steps: list[float | Tensor]) -> tuple[list[int], list[float | Tensor]]:
        """``indices`` (and their ``steps``) without the parameters something else has written
        since the step that reached them (their version moved): their ``theta_{t-1}`` cannot be
        recomputed, so they sit this hypergradient out, as at a first step."""
        if not self._reached or torch.compiler.is_compiling():  # (dynamo does not trace versions)
            return indices, steps
        kept = []
        for k, i in enumerate(indices):
            reached = self._reached.get(id(tensors.states[i]))
            if reached is None or (reached[0] is tensors.states[i] and reached[1] == version(tensors.params[i])):
                kept.append(k)
        if len(kept) == len(indices):
            return indices, steps
        return [indices[k] for k in kept], [steps[k] for k in kept]

    def _finish_step(self, group: dict[str, Any], tensors: GroupTensors) -> None:
        """AdamW at one rate per group: the decay and the rate that reached ``theta_t`` (for
        :func:`_reached_by` at the next step) and each parameter's version after it."""
        if not group["decoupled_weight_decay"] or group["granularity"] != "group":
            return
        rate = group_rate(group)
        remember(group, decay=(group["weight_decay"], rate.clone() if isinstance(rate, Tensor) else rate))
        if group["weight_decay"] != 0 and not torch.compiler.is_compiling():
            for param, state in zip(tensors.params, tensors.states):
                self._reached[id(state)] = (state, version(param))

    def _update_params(self, group: dict[str, Any], tensors: GroupTensors, lr: LearningRate) -> None:
        foreach, fused = tensors.foreach, tensors.fused
        decoupled_decay = group["weight_decay"] if group["decoupled_weight_decay"] else 0.0
        if _keeps_previous_param(group):  # theta_{t-1}, kept before it moves
            previous_params = [s["previous_param"] for s in tensors.states]
            if foreach:
                torch._foreach_copy_(local_tensors(previous_params), local_tensors(tensors.params))
            else:
                for param, previous_param in zip(tensors.params, previous_params):
                    previous_param.copy_(param)
        if decoupled_decay and not fused:
            # torch.optim.AdamW's decay, theta <- theta * (1 - lr * wd) (the fused kernel decays
            # inside its pass).
            decay = 1 - lr * decoupled_decay
            if foreach:
                torch._foreach_mul_(tensors.params, decay)
            else:
                for param in tensors.params:
                    param.mul_(decay)
        beta1, beta2 = group["betas"]
        remember(group, betas=group["betas"])
        settings = dict(lr=lr, beta1=beta1, beta2=beta2, eps=group["eps"], amsgrad=group["amsgrad"])
        if fused:
            _fused_update(tensors.params, tensors.grads, tensors.states, **settings, decoupled_decay=decoupled_decay)
        else:
            adam_update = _multi_tensor_update if foreach else _single_tensor_update
            adam_update(tensors.params, tensors.grads, tensors.states, **settings)


class AdamWHD(AdamHD):
    r"""AdamW (decoupled weight decay, Loshchilov and Hutter) whose learning rate adapts online by
    hypergradient descent.

    Every argument of :class:`torch.optim.AdamW` keeps its meaning; with ``hypergrad_lr=0`` this is
    exactly ``torch.optim.AdamW``. The decay is part of the update direction, because torch scales
    it with the learning rate (``theta_t = theta_{t-1} (1 - alpha_t lambda) - alpha_t a_t``):

    .. math::
        \begin{aligned}
            &u_t = \lambda\,\theta_{t-1} + \hat m_t / (\sqrt{\hat v_t} + \epsilon), \qquad
                \theta_t = \theta_{t-1} - \alpha_t u_t \\
            &\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot u_{t-1} \quad(g_t = \pm\nabla f_t(\theta_{t-1}),
                \text{ no decay term: the decay is not part of the loss})
        \end{aligned}

    Memory: the Adam part of ``u_{t-1}`` is recomputed from the state, as in :class:`AdamHD`; so
    is its decay term at one rate per group, from the weights the last step reached,
    ``u_{t-1} = (lambda theta_{t-1} + a_{t-1}) / (1 - alpha_{t-1} lambda)`` with that step's rate
    and decay (a parameter something else wrote since, detected by its version counter, sits
    one hypergradient out; docs/hypergradient.md). Per tensor or weight ``theta_{t-2}`` is kept in
    ``state["previous_param"]`` (one buffer, only when ``weight_decay != 0``).

    Args: as :class:`AdamHD`, without ``decoupled_weight_decay``; ``weight_decay`` defaults to
    1e-2, as in ``torch.optim.AdamW``.
    """

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
        foreach: bool | None = None,
        capturable: bool = False,
        fused: bool | None = None,
        **hypergrad: Any,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, decoupled_weight_decay=True, maximize=maximize,
            foreach=foreach, capturable=capturable, fused=fused, **hypergrad,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def _keeps_previous_param(group: dict[str, Any]) -> bool:
    """Whether AdamW keeps ``theta_{t-2}`` (``state["previous_param"]``): where rates differ
    within the group (per tensor or weight); at one rate per group it is recomputed."""
    return bool(group["decoupled_weight_decay"]) and group["weight_decay"] != 0 and group["granularity"] != "group"


def _reached_by(group: dict[str, Any]) -> tuple[float, LearningRate]:
    """The decay ``lambda`` and the rate ``alpha_t`` of the group's last step (``theta_t =
    theta_{t-1} (1 - alpha_t lambda) - alpha_t a_t``), as that step left them (the user or a
    scheduler may have written others into the group since); for a checkpoint that does not say
    (torch.optim.AdamW's, or one saved by an earlier version), the group's own."""
    decay = remembered(group, "decay", None)
    return (group["weight_decay"], group_rate(group)) if decay is None else decay


def _on_host(step: float | Tensor) -> bool:
    """Whether the step count is read on the host (a float: read already). Not under
    torch.compile, where a read would break the graph (torch.optim's ``_get_value``,
    ``_compat.step_value``, makes the same choice)."""
    return not isinstance(step, Tensor) or (step.is_cpu and not torch.compiler.is_compiling())


def _bias_corrections(step: float | Tensor, beta1: float, beta2: float) -> tuple[float | Tensor, float | Tensor]:
    """``(1 - beta1^t, sqrt(1 - beta2^t))`` as floats for a host step count (a float, or a
    tensor read here), tensors otherwise."""
    if _on_host(step):
        t = step.item() if isinstance(step, Tensor) else step
        return 1 - beta1**t, math.sqrt(1 - beta2**t)
    return 1 - torch.pow(beta1, step), (1 - torch.pow(beta2, step)).sqrt()


def previous_adam_directions(
    exp_avgs: list[Tensor],
    second_moments: list[Tensor],
    steps: list[float | Tensor],
    *,
    beta1: float,
    beta2: float,
    eps: float,
    foreach: bool,
    previous_params: list[Tensor] | None = None,
    weight_decay: float = 0.0,
    decay_scale: float | Tensor = 1.0,
    one_pass: bool = False,
) -> tuple[Iterator[Tensor], list[float | Tensor] | None, Callable[[list[Tensor], str, bool], Tensor | None] | None]:
    """Adam's last update direction ``m_hat / (sqrt(v_hat) + eps)`` from its state, factored as
    ``scale * m / (sqrt(v) + eps * sqrt(bc2))`` with ``scale = sqrt(bc2) / bc1``; returns the
    unscaled directions (a generator: each lives only while its dot product is taken) and scales.
    With ``previous_params`` (AdamW's ``theta_{t-2}``), the direction ``weight_decay * theta_{t-2}
    + m_hat / (sqrt(v_hat) + eps)``: for host step counts as ``weight_decay`` times
    ``theta_{t-2} + (scale / weight_decay) * m / denom``, one pass; else scaled in place. Times
    ``decay_scale`` where given: with ``previous_params`` the weights ``theta_{t-1}`` that step
    reached and ``decay_scale = 1 / (1 - alpha lambda)`` (its rate and decay), that is the same
    direction, ``(lambda theta_{t-1} + a_{t-1}) / (1 - alpha lambda)``, without ``theta_{t-2}``.

    On a device a step count may be 0 (host branches would synchronise): it is read as 1 there,
    which gives the right direction, 0, because ``m = v = 0`` then. Each direction is divided into
    its denominator's memory: one temporary per tensor, no more passes than the arithmetic needs.

    With ``one_pass`` and host step counts, also the statistics rows of those directions for
    given gradients and rule, taken in one compiled pass over ``g``, ``m`` and ``v`` (and
    ``theta_{t-2}``) without materialising them (``_compiled.py``; the rows callable returns
    ``None`` where the compiled pass is unavailable); else ``None`` in its place.
    """
    scales: list[float | Tensor] = []
    shifts: list[float | Tensor] = []
    for step in steps:
        if scales and isinstance(step, float) and step == steps[0]:  # (one step count: the common case)
            scales.append(scales[0])
            shifts.append(shifts[0])
            continue
        bias_correction1, bias_correction2_sqrt = _bias_corrections(
            step if _on_host(step) else step.clamp(min=1), beta1, beta2  # type: ignore[union-attr]
        )
        scales.append(bias_correction2_sqrt / bias_correction1)
        shifts.append(eps * bias_correction2_sqrt)
    decay_apart = previous_params is not None and all(isinstance(scale, float) for scale in scales)

    def directions() -> Iterator[Tensor]:
        if foreach and exp_avgs:
            denoms = torch._foreach_sqrt(second_moments)
            # (one number for every tensor: torch's CPU kernel takes a list one tensor at a time)
            torch._foreach_add_(denoms, shifts[0] if all(shift is shifts[0] for shift in shifts) else shifts)
        else:
            denoms = (v.sqrt().add_(shift) for v, shift in zip(second_moments, shifts))
        for index, (m, denom) in enumerate(zip(exp_avgs, denoms)):
            if previous_params is None:
                yield torch.div(m, denom, out=denom)
            elif decay_apart:
                yield torch.addcdiv(previous_params[index], m, denom, value=scales[index] / weight_decay, out=denom)
            else:
                yield torch.div(m, denom, out=denom).mul_(scales[index]).add_(previous_params[index], alpha=weight_decay)

    if previous_params is None:
        direction_scales: list[float | Tensor] | None = scales
    elif decay_apart:
        direction_scales = [weight_decay * decay_scale] * len(steps)
    else:
        direction_scales = None if isinstance(decay_scale, float) and decay_scale == 1.0 else [decay_scale] * len(steps)
    rows = None
    if all(isinstance(scale, float) for scale in scales) and (previous_params is None or decay_apart):
        coefficients = None if previous_params is None else [scale / weight_decay for scale in scales]

        def rows(grads: list[Tensor], rule: str, summed: bool) -> Tensor | None:
            if one_pass:
                sums = recomputed_sums(
                    grads, exp_avgs, second_moments, shifts, norms=RULES[rule].norms,  # type: ignore[arg-type]
                    previous_params=previous_params, coefficients=coefficients,  # type: ignore[arg-type]
                )
                return None if sums is None else statistics_rows(sums, rule, direction_scales)
            if not summed:
                return None
            return _flat_rows(grads, exp_avgs, second_moments, previous_params, shifts, coefficients,
                              direction_scales, rule)  # type: ignore[arg-type]

    return directions(), direction_scales, rows


def _flat_rows(
    grads: list[Tensor], exp_avgs: list[Tensor], second_moments: list[Tensor], previous_params: list[Tensor] | None,
    shifts: list[float], coefficients: list[float] | None, scales: list[float], rule: str,
) -> Tensor | None:
    """A small group's one row of statistics, its direction recomputed over one flat copy of
    ``g``, ``m`` and ``v`` (and ``theta_{t-2}``): a fixed number of calls, whatever the number of
    tensors (``_hypergradient.flat_pays``); ``None`` where that does not pay or the tensors differ
    (device, dtype, kind) or step counts (their shifts)."""
    # (the moments and weights are like the gradients: made like the parameters, or cast to their
    # dtype and device by load_state_dict)
    if (not flat_pays(grads, rule, scales, streams=4) or any(shift != shifts[0] for shift in shifts)
            or not grads[0].is_cpu or not one_kind(grads)):
        return None
    # Rows: m, v, g, then theta (AdamW) or a copy of m, so that u lands beside g.
    parts = flat_copy([*exp_avgs, *second_moments, *grads, *(previous_params or exp_avgs)]).view(4, -1)
    denom = parts[1].sqrt_().add_(shifts[0])
    if coefficients is None:
        torch.div(parts[0], denom, out=parts[3])
    else:
        parts[3].addcdiv_(parts[0], denom, value=coefficients[0])
    return flat_statistics(parts[2:], rule, scales[0])


def _single_tensor_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, beta1: float, beta2: float, eps: float, amsgrad: bool,
) -> None:
    """torch.optim.Adam's for-loop step, arithmetic for arithmetic."""
    for param, grad, state in zip(params, grads, states):
        exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        step_t += 1
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if amsgrad:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second_moment = state["max_exp_avg_sq"]
        else:
            second_moment = exp_avg_sq
        bias_correction1, bias_correction2_sqrt = _bias_corrections(step_t, beta1, beta2)
        if isinstance(lr, Tensor) or isinstance(bias_correction1, Tensor):
            # Device-resident lr or step: fold the step size into the denominator (no host read).
            step_size_neg = -(lr / bias_correction1)
            denom = (second_moment.sqrt() / (bias_correction2_sqrt * step_size_neg)).add_(eps / step_size_neg)
            param.addcdiv_(exp_avg, denom)
        else:
            denom = (second_moment.sqrt() / bias_correction2_sqrt).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))


def _multi_tensor_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, beta1: float, beta2: float, eps: float, amsgrad: bool,
) -> None:
    """torch.optim.Adam's foreach step, grouped by device and dtype."""
    for device_params, device_grads, device_states in by_device(params, grads, states):
        exp_avgs = [s["exp_avg"] for s in device_states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in device_states]
        steps = [s["step"] for s in device_states]
        increment_steps(steps)
        torch._foreach_lerp_(exp_avgs, device_grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, device_grads, device_grads, 1 - beta2)
        if amsgrad:
            second_moments = [s["max_exp_avg_sq"] for s in device_states]
            torch._foreach_maximum_(second_moments, exp_avg_sqs)
        else:
            second_moments = exp_avg_sqs
        denoms = torch._foreach_sqrt(second_moments)
        if _on_host(steps[0]) and not isinstance(lr, Tensor):
            corrections = [_bias_corrections(step, beta1, beta2) for step in steps]
            torch._foreach_div_(denoms, [bc2_sqrt for _, bc2_sqrt in corrections])
            torch._foreach_add_(denoms, eps)
            torch._foreach_addcdiv_(
                device_params, exp_avgs, denoms, [-(lr / bc1) for bc1, _ in corrections]
            )
        else:
            # torch.optim.Adam's capturable arithmetic: every scalar stays on the device.
            bias_corrections1 = torch._foreach_pow(beta1, steps)
            bias_corrections2 = torch._foreach_pow(beta2, steps)
            torch._foreach_sub_(bias_corrections1, 1)
            torch._foreach_sub_(bias_corrections2, 1)
            torch._foreach_neg_(bias_corrections2)
            torch._foreach_div_(bias_corrections1, lr)
            torch._foreach_reciprocal_(bias_corrections1)
            torch._foreach_sqrt_(bias_corrections2)
            torch._foreach_div_(denoms, bias_corrections2)
            torch._foreach_add_(denoms, eps)
            torch._foreach_div_(denoms, bias_corrections1)
            torch._foreach_addcdiv_(device_params, exp_avgs, denoms)


def _fused_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, beta1: float, beta2: float, eps: float, amsgrad: bool, decoupled_decay: float,
) -> None:
    """torch.optim.Adam's (AdamW's, with ``decoupled_decay``) fused step, grouped by device and
    dtype; the gradients come with the coupled decay and sign already applied."""
    fused_kernel = fused_adamw if decoupled_decay else fused_adam
    for device_params, device_grads, device_states in by_device(params, grads, states):
        steps = [s["step"] for s in device_states]
        increment_steps(steps)
        fused_kernel(
            device_params, device_grads, [s["exp_avg"] for s in device_states],
            [s["exp_avg_sq"] for s in device_states],
            [s["max_exp_avg_sq"] for s in device_states] if amsgrad else [], steps,
            amsgrad=amsgrad, lr=lr, beta1=beta1, beta2=beta2, weight_decay=decoupled_decay, eps=eps, maximize=False,
        )
