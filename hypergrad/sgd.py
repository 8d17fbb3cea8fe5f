"""SGD-HD, heavy-ball HD and SGDN-HD: ``torch.optim.SGD`` whose learning rate learns online."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._compat import flat_copy, fused_sgd, version
from ._compiled import nesterov_sums
from ._hypergradient import flat_pays, flat_statistics, statistics_rows
from ._kernels import (
    DIRECTION,
    LearningRate,
    adopt_directions,
    by_device,
    descend,
    direction_buffer,
    foreach_descend,
    one_kind,
    stored_copies,
)
from ._rates import remember, remembered
from ._rules import RULES
from ._validation import check_fused, check_sgd_arguments
from .optimizer import GroupTensors, HypergradOptimizer, PreviousDirections

__all__ = ["SGDHD"]

#: Parameter dtypes that torch's CPU fused SGD kernel does not update (torch 2.13).
HALF_DTYPES = (torch.float16, torch.bfloat16)
#: Nesterov's kept ``g_{t-1}`` (its ``u_{t-1}`` is recomputed from it and the momentum buffer).
GRADIENT = "hypergrad_gradient"


def _kept_key(group: dict[str, Any]) -> str | None:
    """The state key of what the group's rule keeps for ``u_{t-1}`` beside its own buffers:
    plain SGD's direction, Nesterov's gradient; ``None`` for heavy ball (the momentum buffer)."""
    if group["momentum"] == 0:
        return DIRECTION
    return GRADIENT if group["nesterov"] else None


class SGDHD(HypergradOptimizer):
    r"""Stochastic gradient descent (optionally with momentum or Nesterov momentum) whose learning
    rate adapts online by hypergradient descent (Baydin et al., ICLR 2018).

    Every argument of :class:`torch.optim.SGD` keeps its meaning; with ``hypergrad_lr=0`` this is
    exactly ``torch.optim.SGD``. Plain SGD gives SGD-HD, ``momentum > 0`` heavy-ball HD and
    ``nesterov=True`` SGDN-HD.

    .. math::
        \begin{aligned}
            &g_t = \pm\nabla f_t(\theta_{t-1}) + \lambda\,\theta_{t-1}
                \quad(\text{minus with } \textit{maximize};\ \lambda = \text{weight\_decay}) \\
            &\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot u_{t-1}
                \quad(\text{additive; } u_0 = 0,\ \beta = \text{hypergrad\_lr}) \\
            &\alpha_t = \alpha_{t-1}\,\bigl(1 + \beta \cos(g_t, u_{t-1})\bigr)
                \quad(\text{multiplicative}) \\
            &\alpha_t \leftarrow \operatorname{clip}(\alpha_t, \text{lr\_bounds});\quad
                \alpha_t \leftarrow \alpha_{t-1} \text{ if not finite} \\
            &v_t = \mu v_{t-1} + (1 - \tau) g_t \quad (v_1 = g_1;\ \mu = \text{momentum},
                \ \tau = \text{dampening}) \\
            &u_t = g_t \ (\mu = 0), \quad u_t = v_t \ (\text{heavy ball}),
                \quad u_t = g_t + \mu v_t \ (\text{Nesterov}) \\
            &\theta_t = \theta_{t-1} - \alpha_t u_t
        \end{aligned}

    ``g_t . u_{t-1} = -d f_t / d alpha_{t-1}``: the learning rate descends the derivative of the
    current loss with respect to the learning rate used one step earlier. It is one dot product
    over all parameters of the group, taken once per step, before the parameters move. Memory:
    heavy ball needs nothing extra (the momentum buffer is ``u_{t-1}``); plain SGD keeps
    ``u_{t-1} = g_{t-1}`` in ``state["hypergrad_direction"]``; Nesterov keeps ``g_{t-1}`` in
    ``state["hypergrad_gradient"]`` and recomputes ``u_{t-1} = g_{t-1} + mu v_{t-1}`` from it and
    the momentum buffer (not yet moved at step t) with the momentum that step used: the update
    writes nothing for HD, and the statistics read ``g_{t-1}`` and ``v_{t-1}``.

    Args:
        params: parameters or param groups; a group may override ``lr`` and ``hypergrad_lr``.
        lr: initial learning rate ``alpha_0``; afterwards ``param_groups[i]["lr"]`` holds the
            adapted one.
        momentum, dampening, weight_decay, nesterov, maximize, foreach: as in ``torch.optim.SGD``.
        fused: as in ``torch.optim.SGD``: ``True`` takes the update through torch's fused kernel
            (``torch._fused_sgd_``, CPU and CUDA, floating point parameters; not float16 or
            bfloat16 ones on the CPU, which torch 2.13's CPU kernel leaves unchanged). On the CPU
            (float32, float64) the scale-free rule's statistics are then one ``torch.compile``d
            pass over ``g_t`` and ``u_{t-1}`` (from 2^17 elements a step), and a tensor ``lr``'s
            rule one compiled call (a float ``lr`` moves on host floats; compiled at the first
            step that takes statistics: seconds; eager where compiling fails or
            ``HYPERGRAD_COMPILED_STATISTICS=0``; see docs/performance.md); Nesterov's recomputed
            ``u_{t-1}`` is summed in the same pass, which reads ``g_t``, ``g_{t-1}`` and ``v_{t-1}``.
            ``None`` (the default) with ``foreach=None``: the default path
            (:func:`hypergrad._paths.fused_by_default`: fused on the CPU). ``False``: never fused.
        capturable: keep the stored direction in a fixed buffer (one copy per step), so that
            ``step()`` can be captured in a CUDA graph. Without it, a gradient the step does not
            change becomes the stored direction instead of being copied: an effective gradient
            the step computes anyway (with ``weight_decay`` or ``maximize``), and plain SGD's and
            Nesterov's ``p.grad`` itself. The latter is checked at the next step (its version counter): a
            gradient whose memory was written since (``zero_grad(set_to_none=False)``, a backward
            accumulating into it, DDP's ``gradient_as_bucket_view``) no longer holds
            ``u_{t-1}``, so that step's hypergradient leaves the tensor out and the optimizer
            copies gradients from then on. The step never waits for the device either way.
        hypergrad_lr: ``beta``, the learning rate of the learning rate; ``None`` (the default) is
            the rule's own: 0.05 for the scale-free rule (dimensionless: the largest change of
            ``log lr`` in one step), and for the additive and multiplicative rules the reference
            code's 1e-3 for the SGD variants at ``lr=1e-3`` (MNIST logistic regression and MLP):
            for additive HD, ``beta * g . u`` has the units of ``lr``, and ``|g|^2 ~ 1e-2..1`` in
            those networks moves ``lr`` by ~1e-5..1e-3 per step. See the README.
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

    paper_hypergrad_lr = 1e-3
    check_base_arguments = staticmethod(check_sgd_arguments)

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
        foreach: bool | None = None,
        capturable: bool = False,
        fused: bool | None = None,
        **hypergrad: Any,
    ) -> None:
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, maximize=maximize, foreach=foreach, capturable=capturable, fused=fused,
        )
        super().__init__(params, defaults, **hypergrad)
        self._track_adopted()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
        self._track_adopted()

    def _track_adopted(self) -> None:
        # The gradients kept as plain SGD's stored directions (Nesterov's stored gradients):
        # id(state) -> (that gradient, its
        # version when kept), and whether gradients may still be kept (not once one's memory was
        # seen reused). Not in the state: a loaded direction is a tensor of its own. Keyed by the
        # state dict, so that it holds one entry per parameter; an entry whose gradient is not
        # the state's direction (the state was replaced or the direction copied) counts for
        # nothing (the entry holds its gradient: no other tensor can share that id). Loading a
        # state_dict starts afresh (torch.optim's load_state_dict calls __setstate__).
        self._adopted: dict[int, tuple[Tensor, int]] = {}
        self._adopt_gradients = True

    def _kept_gradient(self, state: dict[str, Any], direction: Tensor | None) -> tuple[Tensor, int] | None:
        kept = self._adopted.get(id(state))
        return kept if kept is not None and kept[0] is direction else None

    def _intact(self, state: dict[str, Any], direction: Tensor) -> bool:
        """Whether a stored direction still holds ``u_{t-1}``: not a kept gradient written since."""
        kept = self._kept_gradient(state, direction)
        if kept is None or version(direction) == kept[1]:
            return True
        self._adopt_gradients = False  # its memory is reused: copy gradients from now on
        return False

    def _init_state(self, group: dict[str, Any], param: Tensor, state: dict[str, Any]) -> None:
        """Nothing up front: the momentum buffer and the direction are created at the first step.
        A fused step refuses half-precision parameters on the CPU, before anything changes. A
        Nesterov state saved by an earlier version, which kept ``u_{t-1}``, keeps
        ``g_{t-1} = u_{t-1} - mu v_{t-1}`` instead."""
        if param.dtype in HALF_DTYPES and param.device.type == "cpu" and self._use_fused(group):
            raise RuntimeError(
                f"SGDHD(fused=True) cannot step {param.dtype} parameters on the CPU: torch "
                f"{torch.__version__}'s CPU fused SGD kernel leaves them unchanged (torch.optim.SGD(fused=True) "
                "too); use foreach=True"
            )
        if group["nesterov"] and DIRECTION in state:
            direction = state.pop(DIRECTION)
            if "momentum_buffer" in state:
                momentum = remembered(group, "momentum", group["momentum"])
                state[GRADIENT] = direction.sub(state["momentum_buffer"], alpha=momentum)

    def _previous_directions(self, group: dict[str, Any], tensors: GroupTensors) -> PreviousDirections:
        # u_{t-1} is the momentum buffer for heavy ball, the stored direction for plain SGD, and
        # recomputed for Nesterov; a parameter without one (its first step) adds nothing.
        key = _kept_key(group) or "momentum_buffer"
        indices = [i for i, s in enumerate(tensors.states) if key in s]
        if not torch.compiler.is_compiling() and self._adopted:  # (dynamo does not trace the dict)
            indices = [i for i in indices if self._intact(tensors.states[i], tensors.states[i][key])]
        if key != GRADIENT:
            return PreviousDirections(indices, [tensors.states[i][key] for i in indices])
        momentum = remembered(group, "momentum", group["momentum"])
        kept = [tensors.states[i][GRADIENT] for i in indices]
        bufs = [tensors.states[i]["momentum_buffer"] for i in indices]
        directions = (torch.add(g, buf, alpha=momentum) for g, buf in zip(kept, bufs))  # one at a time

        def rows(grads: list[Tensor], rule: str, summed: bool) -> Tensor | None:
            return _nesterov_rows(grads, kept, bufs, momentum, rule, summed, tensors.compiled)

        return PreviousDirections(indices, directions, None, rows)

    def _update_params(self, group: dict[str, Any], tensors: GroupTensors, lr: LearningRate) -> None:
        sgd_hd_update = self._update_function(
            tensors, _single_tensor_update, _multi_tensor_update, _fused_update
        )
        # With maximize or weight decay the effective gradients are this step's own temporaries:
        # they can become the stored direction (Nesterov's stored gradient) instead of being
        # copied into it. So can p.grad, which the step only reads (checked by _intact at the next
        # step). Neither in a CUDA graph, which replays the buffers' addresses of its capture, nor
        # compiled.
        key = _kept_key(group)
        if group["nesterov"]:
            remember(group, momentum=group["momentum"])
        temporaries = group["maximize"] or group["weight_decay"] != 0
        keep_gradients = key is not None and not temporaries and not torch.compiler.is_compiling()
        adopt = not group["capturable"] and (temporaries or (keep_gradients and self._adopt_gradients))
        if keep_gradients and not adopt and self._adopted:
            for state in tensors.states:  # a kept gradient is not a buffer to copy into
                if self._kept_gradient(state, state.get(key)) is not None:
                    del state[key]
                    del self._adopted[id(state)]
        sgd_hd_update(
            tensors.params, tensors.grads, tensors.states,
            lr=lr, momentum=group["momentum"], dampening=group["dampening"], nesterov=group["nesterov"],
            adopt_grads=adopt,
        )
        if keep_gradients and adopt:
            for grad, state in zip(tensors.grads, tensors.states):
                self._adopted[id(state)] = (grad, version(grad))


def _updated_momentum_buffer(state: dict[str, Any], grad: Tensor, momentum: float, dampening: float) -> Tensor:
    """torch.optim.SGD's ``v_1 = g_1``, ``v_t = momentum * v_{t-1} + (1 - dampening) * g_t``."""
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = grad.detach().clone()
    else:
        buf.mul_(momentum).add_(grad, alpha=1 - dampening)
    return buf


def _single_tensor_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, momentum: float, dampening: float, nesterov: bool, adopt_grads: bool,
) -> None:
    for param, grad, state in zip(params, grads, states):
        if momentum == 0 or nesterov:  # u_t = g_t (plain), or g_t kept for u_t = g_t + mu v_t
            key = DIRECTION if momentum == 0 else GRADIENT
            if adopt_grads:
                state[key] = grad
            else:
                direction_buffer(state, grad, key).copy_(grad)
        if momentum != 0:
            buf = _updated_momentum_buffer(state, grad, momentum, dampening)
            direction = torch.add(grad, buf, alpha=momentum) if nesterov else buf
        else:
            direction = grad
        descend(param, direction, lr)


def _multi_tensor_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, momentum: float, dampening: float, nesterov: bool, adopt_grads: bool,
) -> None:
    for device_params, device_grads, device_states in by_device(params, grads, states):
        if momentum != 0:
            if all("momentum_buffer" in s for s in device_states):
                bufs = [s["momentum_buffer"] for s in device_states]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, device_grads, alpha=1 - dampening)
            else:
                bufs = [
                    _updated_momentum_buffer(state, grad, momentum, dampening)
                    for grad, state in zip(device_grads, device_states)
                ]
            if not nesterov:
                directions = bufs
            else:
                _stored_gradients(device_states, device_grads, adopt_grads, GRADIENT)
                directions = torch._foreach_add(device_grads, bufs, alpha=momentum)
        else:
            directions = _stored_gradients(device_states, device_grads, adopt_grads)
        foreach_descend(device_params, directions, lr)


def _stored_gradients(states: list[dict[str, Any]], grads: list[Tensor], adopt_grads: bool,
                      key: str = DIRECTION) -> list[Tensor]:
    """``g_t`` kept for the next step (plain SGD's ``u_t``, Nesterov's ``g_t`` under ``key``):
    adopted, or copied into the buffers."""
    return adopt_directions(states, grads, key) if adopt_grads else stored_copies(states, grads, key)


def _fused_update(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
    *, lr: LearningRate, momentum: float, dampening: float, nesterov: bool, adopt_grads: bool,
) -> None:
    """torch.optim.SGD's fused kernel takes the step (the gradients come with the decay and
    sign already applied); plain SGD and Nesterov keep ``g_t`` (Nesterov's ``u_t = g_t + mu v_t``
    is recomputed at the next step: nothing is written after the kernel)."""
    for device_params, device_grads, device_states in by_device(params, grads, states):
        if momentum == 0:
            _stored_gradients(device_states, device_grads, adopt_grads)
            _fused_sgd(device_params, device_grads, [], lr, 0.0, 0.0, False, False)
            continue
        if nesterov:
            _stored_gradients(device_states, device_grads, adopt_grads, GRADIENT)
        # The kernel starts a momentum buffer (v_1 = g_1) only for a whole list at once.
        started = [i for i, s in enumerate(device_states) if "momentum_buffer" in s]
        new = [i for i, s in enumerate(device_states) if "momentum_buffer" not in s]
        for first, chosen in ((True, new), (False, started)):
            if not chosen:
                continue
            if first:
                for i in chosen:
                    device_states[i]["momentum_buffer"] = torch.empty_like(device_grads[i])
            _fused_sgd(
                [device_params[i] for i in chosen], [device_grads[i] for i in chosen],
                [device_states[i]["momentum_buffer"] for i in chosen], lr, momentum, dampening, nesterov, first,
            )


def _fused_sgd(
    params: list[Tensor], grads: list[Tensor], bufs: list[Tensor], lr: LearningRate,
    momentum: float, dampening: float, nesterov: bool, first: bool,
) -> None:
    """``torch._fused_sgd_`` as torch.optim.SGD calls it, a float or tensor ``lr``."""
    fused_sgd(
        params, grads, bufs, weight_decay=0.0, momentum=momentum, lr=lr, dampening=dampening,
        nesterov=nesterov, maximize=False, is_first_step=first,
    )


def _nesterov_rows(grads: list[Tensor], kept: list[Tensor], bufs: list[Tensor], momentum: float, rule: str,
                   summed: bool, compiled: bool) -> Tensor | None:
    """The statistics rows of Nesterov's ``u_{t-1} = g_{t-1} + mu v_{t-1}`` without writing it:
    on the compiled path one pass over ``g_t``, ``g_{t-1}`` and ``v_{t-1}`` (for every rule: the
    eager way writes ``u`` before its dot product; on the MLP of docs/performance.md the additive
    rule's step takes 1.25 ms this way against 2.18 ms); for a small group's one row, over one
    flat copy of the three (``_hypergradient.flat_pays``); else ``None``."""
    if compiled:
        sums = nesterov_sums(grads, kept, bufs, momentum, norms=RULES[rule].norms)
        return None if sums is None else statistics_rows(sums, rule)
    # (the kept gradients and momentum buffers are like the gradients: made from them, or cast to
    # the parameters' dtype and device by load_state_dict)
    if not summed or not flat_pays(grads, rule, streams=3) or not grads[0].is_cpu or not one_kind(grads):
        return None
    parts = flat_copy([*grads, *kept, *bufs]).view(3, -1)
    parts[1].add_(parts[2], alpha=momentum)  # u_{t-1}, beside g_t
    return flat_statistics(parts[:2], rule)
