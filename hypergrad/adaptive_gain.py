"""Per-weight adaptive gains (Jacobs 1988; Hinton's Coursera lecture 6b): the idea that
hypergradient descent makes exact, in its classic sign-based form. Not an HD optimizer: nothing
here differentiates the loss with respect to a learning rate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from ._validation import check_adaptive_gain_arguments, check_distinct_params

__all__ = ["AdaptiveGainSGD"]


class AdaptiveGainSGD(Optimizer):
    r"""SGD (optionally with heavy-ball momentum) with one adaptive gain per weight.

    .. math::
        \begin{aligned}
            &g_t = \pm\nabla f_t(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
            &k_t = \operatorname{clip}\Bigl(\begin{cases}
                k_{t-1} + a & \text{if } \operatorname{sign} g_t = \operatorname{sign} g_{t-1} \neq 0 \\
                k_{t-1} \cdot d & \text{if } \operatorname{sign} g_t = -\operatorname{sign} g_{t-1} \neq 0 \\
                k_{t-1} & \text{otherwise (a zero gradient, or the first step)}
            \end{cases}, k_{\min}, k_{\max}\Bigr), \quad k_0 = 1 \\
            &v_t = \mu v_{t-1} + k_t \odot g_t \quad (v_1 = k_1 \odot g_1), \qquad
                \theta_t = \theta_{t-1} - \gamma\, v_t \quad(\mu = 0:\ \theta_t = \theta_{t-1} - \gamma\, k_t \odot g_t)
        \end{aligned}

    with ``a = gain_increase``, ``d = gain_decrease``, ``(k_min, k_max) = gain_bounds``. A weight
    whose gradient keeps its sign is taking steps that are too small, one whose gradient flips is
    overshooting. Use large or full batches: sign flips caused by minibatch noise shrink the gains.

    State per parameter: ``state["gain"]`` (the gains ``k``), ``state["previous_sign"]`` (the sign
    of ``g_{t-1}``) and, with momentum, ``state["momentum_buffer"]``. Read the gains with
    ``optimizer.state[p]["gain"]``. The step is a plain for-loop: the sign comparisons have no
    multi-tensor kernels, so a foreach path would not be faster.

    Args:
        params: parameters or param groups.
        lr: the global learning rate ``gamma``.
        momentum: heavy-ball momentum ``mu`` applied to the gained gradient.
        gain_increase: ``a >= 0``, added to a gain while the sign of its gradient holds.
        gain_decrease: ``d`` in (0, 1], the factor a gain is multiplied by when the sign flips.
        gain_bounds: ``(k_min, k_max)`` with ``0 < k_min <= 1 <= k_max`` (gains start at 1).
        weight_decay, maximize: as in ``torch.optim.SGD``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.0,
        gain_increase: float = 0.05,
        gain_decrease: float = 0.95,
        gain_bounds: Sequence[float] = (0.1, 10.0),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, gain_increase=gain_increase, gain_decrease=gain_decrease,
            gain_bounds=gain_bounds, weight_decay=weight_decay, maximize=maximize,
        )
        defaults.update(check_adaptive_gain_arguments(defaults))
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch.optim's, after checking every setting of the group (its own keys over the
        defaults) and that it holds each parameter once: a refused group is not added."""
        check_distinct_params(param_group)
        checked = check_adaptive_gain_arguments({**self.defaults, **param_group})
        super().add_param_group(param_group)
        self.param_groups[-1].update(checked)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """Perform one optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            low, high = group["gain_bounds"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdaptiveGainSGD does not support sparse gradients")
                if p.is_complex():
                    raise RuntimeError("AdaptiveGainSGD needs real parameters: a sign has no meaning otherwise")
                grad = -p.grad if group["maximize"] else p.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["gain"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["previous_sign"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                gain, previous_sign = state["gain"], state["previous_sign"]
                sign = torch.sign(grad)
                agreement = sign * previous_sign  # +1 kept, -1 flipped, 0 no information
                increased = (gain + group["gain_increase"]).clamp_(low, high)
                decreased = (gain * group["gain_decrease"]).clamp_(low, high)
                gain.copy_(torch.where(agreement > 0, increased, torch.where(agreement < 0, decreased, gain)))
                previous_sign.copy_(sign)
                gained = gain * grad
                if group["momentum"] != 0:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = gained.clone()
                    else:
                        buf.mul_(group["momentum"]).add_(gained)
                    gained = buf
                p.add_(gained, alpha=-group["lr"])
        return loss
