"""The one loop every twin runs: rates per group, tensor or weight, kept as absolute values
(``group["lr_hd"]``, ``state["rate"]``, ``state["rates"]``), blended when ``lr_limit`` is set; a
twin adds its constructor (its own signature, defaults written out) and its base rule's direction."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._rules import MODELLED_RULES, blend, clipped, default_hypergrad_lr, next_lr, next_weight_rates


class ReferenceHD(Optimizer):
    """Hypergradient descent over a base rule's direction ``u_t`` (:meth:`_direction`), one plain
    loop. No argument is checked but the rule (a twin follows the rules it writes out): it trusts
    its input.

    A subclass sets ``paper_hypergrad_lr`` (the paper's beta for its base rule, what
    ``hypergrad_lr=None`` stands for under the additive and multiplicative rules) and passes its
    constructor's ``locals()``: its arguments by name are the group defaults.
    """

    paper_hypergrad_lr: float

    def __init__(self, params: Any, arguments: dict[str, Any]) -> None:
        defaults = {k: v for k, v in arguments.items() if k not in ("self", "params", "__class__")}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["hypergrad_rule"] not in MODELLED_RULES:  # the one check: a rule it would not follow
            raise ValueError(f"the reference twins write out the rules {MODELLED_RULES}, not "
                             f"hypergrad_rule={group['hypergrad_rule']!r}")
        if group["hypergrad_lr"] is None:
            group["hypergrad_lr"] = default_hypergrad_lr(group["hypergrad_rule"], self.paper_hypergrad_lr)

    def _gradient(self, group: dict[str, Any], p: Tensor) -> Tensor:
        """``g_t``, the effective gradient of ``p``: the loss's (negated under ``maximize``) plus
        the coupled decay ``wd theta_{t-1}``."""
        g = -p.grad if group["maximize"] else p.grad.clone()
        coupled_decay = 0.0 if group.get("decoupled_weight_decay", False) else group["weight_decay"]
        return g + coupled_decay * p

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
        """``u_t`` for ``p`` from its effective gradient ``g``, updating the base rule's ``state``."""
        raise NotImplementedError

    def _group_rates(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> list[Any]:
        """The rate each parameter steps with at this step (updating the group's or its own rate)."""
        adapt = group["hypergrad_lr"] != 0
        started = [i for i, p in enumerate(params) if "previous_direction" in self.state[p]]
        previous = [self.state[params[i]]["previous_direction"] for i in started]
        granularity = group["granularity"]
        if granularity == "group" and "initial_lr" in group:
            # An lr scheduler owns group["lr"]; HD learns the factor lr_scale beside it.
            factor = group.setdefault("lr_scale", 1.0)
            if started and adapt:
                memory = group.setdefault("memory", [0.0, 0.0, 0.0])
                new_rate = next_lr(group["lr"] * factor, [grads[i] for i in started], previous, group, memory)
                if group["lr"] != 0:  # a zero lr (a warmup from 0) leaves the factor as it is
                    group["lr_scale"] = new_rate / group["lr"]
            return [blend(group["lr"] * group["lr_scale"], group)] * len(params)
        if granularity == "group":
            hd_rate = group.setdefault("lr_hd", clipped(group["lr"], group))
            if started and adapt:
                memory = group.setdefault("memory", [0.0, 0.0, 0.0])
                hd_rate = next_lr(hd_rate, [grads[i] for i in started], previous, group, memory)
            group["lr_hd"] = hd_rate
            group["lr"] = blend(hd_rate, group)
            return [group["lr"]] * len(params)
        # Per tensor or weight, a rate is the group's times a scale: at a zero group lr every rate
        # is zero and stays so (see HypergradOptimizer, "Granularity").
        adapt_each = adapt and group["lr"] != 0
        rates = []
        for i, (p, g) in enumerate(zip(params, grads)):
            state = self.state[p]
            if granularity == "tensor":
                state.setdefault("rate", clipped(group["lr"], group))
                if i in started and adapt_each:
                    memory = state.setdefault("memory", [0.0, 0.0, 0.0])
                    state["rate"] = next_lr(state["rate"], [g], [state["previous_direction"]], group, memory)
                rates.append(blend(state["rate"], group))
            else:
                state.setdefault("rates", torch.full_like(p, clipped(group["lr"], group)))
                if i in started and adapt_each:
                    memories = state.setdefault("memories", [[0.0, 0.0, 0.0] for _ in range(p.numel())])
                    state["rates"] = next_weight_rates(state["rates"], g, state["previous_direction"], group, memories)
                rates.append(blend(state["rates"], group))
        return rates

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], rates: list[Any],
                first: bool) -> None:
        """The base step with each parameter's rate: ``theta_t = theta_{t-1} - alpha_t u_t``; at the
        group's ``first`` step every rate is first scaled so that ``|Delta_1| <= rho |theta_0|``."""
        directions = []
        for p, g in zip(params, grads):
            state = self.state[p]
            u = self._direction(group, p, g, state)
            state["previous_direction"] = u.clone()
            directions.append(u)
        if first and group["first_step_bound"] is not None and group["hypergrad_lr"] != 0:
            rates = self._bounded_first_rates(group, params, directions, rates)
        for p, u, rate in zip(params, directions, rates):
            p.sub_(rate * u)

    def _bounded_first_rates(self, group: dict[str, Any], params: list[Tensor], directions: list[Tensor],
                             rates: list[Any]) -> list[Any]:
        """``first_step_bound``: where ``|sum alpha u| > rho |theta_0|``, every rate times
        ``s = rho |theta_0| / |Delta|`` (at most up to ``lr_bounds``' lower end), and the rates the
        twin keeps with them."""
        theta = math.sqrt(sum(float(p.double().pow(2).sum()) for p in params))
        moved = math.sqrt(sum(float((torch.as_tensor(r, dtype=torch.float64) * u.double()).pow(2).sum())
                              for r, u in zip(rates, directions)))
        if theta == 0 or moved == 0 or moved <= group["first_step_bound"] * theta:
            return rates
        scale = group["first_step_bound"] * theta / moved
        low = 0.0 if group["lr_bounds"] is None else group["lr_bounds"][0]
        scaled = []
        for p, rate in zip(params, rates):
            if isinstance(rate, Tensor):
                new_rate = torch.where(rate > 0, torch.clamp(rate * scale, min=low), rate)
            else:
                new_rate = max(rate * scale, low) if rate > 0 else rate
            scaled.append(new_rate)
            state = self.state[p]
            if group["granularity"] == "tensor":
                state["rate"] = state["rate"] * new_rate / rate
            elif group["granularity"] == "element":
                state["rates"] = torch.where(rate > 0, state["rates"] * new_rate / rate, state["rates"])
        if group["granularity"] == "group":
            if "initial_lr" in group:
                group["lr_scale"] *= scaled[0] / rates[0]
            else:
                group["lr_hd"] *= scaled[0] / rates[0]
                group["lr"] = scaled[0]
        return scaled

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None and p in self.state:
                    # It does not move at this step: u_t = 0, nothing to carry to the next one.
                    self.state[p].pop("previous_direction", None)
            params = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
            if not params:
                continue  # a group that takes no step does not count one
            if group["lr_limit"] is not None:
                group["t"] = group.get("t", 0) + 1
            grads = [self._gradient(group, p) for p in params]
            first = not any(self.state[p] for p in params)  # the group's first step
            self._update(group, params, grads, self._group_rates(group, params, grads), first)
        return loss
