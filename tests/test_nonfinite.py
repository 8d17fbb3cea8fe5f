"""What a NaN or inf gradient does to the learning rate, held to each rule's definition.

The statistics of ``g_t . u_{t-1}`` are not finite at the step whose gradient is not, and again at
the next step, whose previous direction ``u_{t-1}`` holds it (for plain SGD ``u_{t-1} = g_{t-1}``;
a momentum buffer or Adam's moments keep it at every later step). The additive and multiplicative
rules then leave the rate as it was; the scale-free rule's guard halves it and leaves the rule's
memory as it was.

The expected rates come from the rules written out below for plain SGD, where the statistics are
plain dot products of the gradients the test feeds in (``u_{t-1} = g_{t-1}``).
"""

from __future__ import annotations

import math

import pytest
import torch

import hypergrad

# The scale-free rule's constants, as its definition states them (docs/hypergradient.md).
MU, NU, KAPPA, RHO = 0.9, 0.99, 16.0, 0.9
BAD_STEP = 4  # 0-based index of the step whose gradient holds the NaN or inf


def gradients(bad: float, steps: int = 9, size: int = 6) -> list[torch.Tensor]:
    """Gradients that mostly agree (the rate moves) and one, at BAD_STEP, with a non-finite entry."""
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(size, generator=generator, dtype=torch.float64) + 0.5 for _ in range(steps)]
    grads[BAD_STEP][1] = bad
    return grads


def finite(*values: float) -> bool:
    return all(math.isfinite(value) for value in values)


def reference_rates(rule: str, grads: list[torch.Tensor], lr: float, beta: float) -> list[float]:
    """The rate after each step of plain SGD-HD under ``rule``, from the rule's definition."""
    rates, previous = [], None
    m = v = r = 0.0  # the scale-free rule's memory
    for g in grads:
        if previous is not None:
            dot, q, uu = float(g @ previous), float(g @ g), float(previous @ previous)
            if rule == "additive":
                new = lr + beta * dot
                lr = new if math.isfinite(new) else lr
            elif rule == "multiplicative":
                new = lr * (1 + beta * dot / math.sqrt(q * uu)) if finite(dot, q, uu) else math.nan
                lr = new if math.isfinite(new) else lr
            elif not finite(dot, q, uu):
                lr = lr / 2  # the guard; the memory stays as it was
            else:
                c = dot / math.sqrt(q * uu)
                m, v = MU * m + (1 - MU) * c, NU * v + (1 - NU) * c * c
                if r > 0 and q > KAPPA * r:
                    lr, m = lr / 2, min(m, 0.0)
                else:
                    lr = lr * math.exp(beta * max(-1.0, min(1.0, m / math.sqrt(v))))
                r = RHO * r + (1 - RHO) * q if r > 0 else q
        rates.append(lr)
        previous = g
    return rates


def run(optimizer: torch.optim.Optimizer, param: torch.Tensor, grads: list[torch.Tensor]) -> list[float]:
    rates = []
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
        rates.append(float(optimizer.param_groups[0]["lr"]))
    return rates


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize(("rule", "beta"), [("scalefree", 0.05), ("additive", 0.01), ("multiplicative", 0.1)])
def test_rate_at_a_non_finite_gradient_and_the_step_after_follows_the_rule(rule, beta, bad, foreach):
    grads = gradients(bad)
    param = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    optimizer = hypergrad.SGDHD([param], lr=0.1, hypergrad_rule=rule, hypergrad_lr=beta, foreach=foreach)
    rates = run(optimizer, param, grads)
    assert rates == pytest.approx(reference_rates(rule, grads, 0.1, beta), rel=1e-12)
    before, at_bad, after = rates[BAD_STEP - 1], rates[BAD_STEP], rates[BAD_STEP + 1]
    if rule == "scalefree":  # halved at the bad step and again while u_{t-1} holds the bad gradient
        assert (at_bad, after) == pytest.approx((before / 2, before / 4), rel=1e-12)
    else:  # left as it was at both steps
        assert at_bad == before and after == before
    assert rates[BAD_STEP + 2] != after  # then the rule moves the rate again


@pytest.mark.parametrize(
    "make",
    [
        lambda params: hypergrad.SGDHD(params, lr=0.1, momentum=0.9),
        lambda params: hypergrad.AdamHD(params, lr=0.1),
        lambda params: hypergrad.AdagradHD(params, lr=0.1),
        lambda params: hypergrad.RMSpropHD(params, lr=0.1),
    ],
    ids=["heavy_ball", "adam", "adagrad", "rmsprop"],
)
def test_scalefree_halves_at_every_step_while_the_state_holds_the_nan(make):
    """A momentum buffer, Adam's moments, Adagrad's and RMSprop's sums of squares keep the NaN,
    so every later previous direction holds it and the guard halves the rate at every step."""
    grads = gradients(math.nan)
    param = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    rates = run(make([param]), param, grads)
    assert rates[BAD_STEP - 1] != rates[BAD_STEP - 2]  # the rate moved by the rule before
    for step in range(BAD_STEP, len(grads)):
        assert rates[step] == pytest.approx(rates[step - 1] / 2, rel=1e-12)


def test_per_tensor_rates_halve_only_where_the_gradient_was_not_finite():
    """With one rate per tensor, the guard halves the rate of the tensor with the NaN; the other
    tensor's rate follows the rule on its own gradients as if nothing had happened."""
    bad_grads, good_grads = gradients(math.nan), gradients(0.25)
    bad, good = (torch.nn.Parameter(torch.zeros(6, dtype=torch.float64)) for _ in range(2))
    optimizer = hypergrad.SGDHD([bad, good], lr=0.1, granularity="tensor")
    rates = {"bad": [], "good": []}
    for bad_grad, good_grad in zip(bad_grads, good_grads):
        bad.grad, good.grad = bad_grad.clone(), good_grad.clone()
        optimizer.step()
        for name, rate in optimizer.learning_rates([("bad", bad), ("good", good)]).items():
            rates[name].append(float(rate))
    assert rates["bad"] == pytest.approx(reference_rates("scalefree", bad_grads, 0.1, 0.05), rel=1e-12)
    assert rates["good"] == pytest.approx(reference_rates("scalefree", good_grads, 0.1, 0.05), rel=1e-12)
    assert rates["bad"][BAD_STEP + 1] == pytest.approx(rates["bad"][BAD_STEP - 1] / 4, rel=1e-12)
