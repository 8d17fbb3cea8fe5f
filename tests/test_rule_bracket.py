"""The bracketing scale-free rule (``hypergrad_rule="bracket"``): its update is the documented
equations (held to a plain-float transcription of them), it climbs from a rate far too small
within a few tens of steps where the scale-free rule cannot, it still halves a rate that diverges,
and once its first bracket is closed it moves ``log alpha`` by at most ``beta`` a step. The rule
alone (``first_step_bound=None``): the bound that holds while it climbs is
tests/test_first_step.py's."""

from __future__ import annotations

import math

import pytest
import torch

from cases import quadratic_descent
from hypergrad import SGDHD, AdamHD
from hypergrad._rules import RULES

EIGENVALUES = torch.linspace(1.0, 10.0, 10, dtype=torch.float64)


def reference_bracket(rate, statistics, beta, memory):
    """The docstring's equations in plain floats, one rate (``memory`` a list, updated in place);
    with a fourth statistic ``|theta|^2``, the gain's gate at a relative update of 0.01."""
    dot, g_squared, u_squared = statistics[:3]
    m, v, r, k, p = memory
    finite = all(math.isfinite(x) for x in statistics[:3])
    norm = math.sqrt(g_squared * u_squared) if finite else 0.0
    if not finite:
        return rate / 2  # the guard; the memory is left as it was
    if norm == 0:
        return rate
    c = dot / norm
    m_new = 0.9 * m + 0.1 * c
    v_new = 0.99 * v + 0.01 * c * c
    s = max(-1.0, min(1.0, m_new / math.sqrt(v_new))) if v_new > 0 else 0.0
    guard = r > 0 and g_squared > 16.0 * r
    flip = m * s < 0
    p_new = min(p + (1 if flip else 0), 2)
    if guard:
        p_new = max(p_new, 1)
    k_new = min(1.5 * max(k, 1.0), 16.0) if (c * s > 0 and not flip and not guard and p_new < 2) else 1.0
    step = -math.log(2.0) if guard else beta * k_new * s
    if guard:
        m_new = min(m_new, 0.0)
    r_new = 0.9 * r + 0.1 * g_squared if r > 0 else g_squared
    memory[:] = [m_new, v_new, r_new, k_new, p_new]
    new_rate = rate * math.exp(step)
    plain = rate * math.exp(step if guard else beta * s)
    if len(statistics) > 3 and new_rate > plain:
        new_rate = max(plain, min(new_rate, 0.01 * math.sqrt(statistics[3] / u_squared)))
    return new_rate


def _statistics_sequence(steps: int, seed: int) -> list[tuple[float, float, float]]:
    """Cosines mostly of one sign, then the other, noise, a zero step, a jump of |g|^2 (the
    guard) and a non-finite one: every branch of the rule."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for t in range(steps):
        g_squared = float(torch.rand((), generator=generator, dtype=torch.float64)) + 0.5
        u_squared = float(torch.rand((), generator=generator, dtype=torch.float64)) + 0.5
        drift = 0.6 if t < 12 else (-0.6 if t < 20 else (0.6 if t < 28 else 0.0))
        c = max(-1.0, min(1.0, drift + 0.4 * float(torch.randn((), generator=generator, dtype=torch.float64))))
        if t == 25:
            g_squared *= 100.0
        rows.append((c * math.sqrt(g_squared * u_squared), g_squared, u_squared))
    rows[5] = (0.0, 0.0, 1.0)
    rows[30] = (math.nan, 1.0, 1.0)
    return rows


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_update_is_its_equations(seed, weights):
    """Without and with ``|theta|^2`` (the gate: here 0.01 sqrt(theta^2 / u^2) is 3e-4 to 1.5e-3,
    inside the climb from 1e-4)."""
    rule = RULES["bracket"]
    memory = torch.zeros(len(rule.memory), dtype=torch.float64)
    reference_memory = [0.0] * len(rule.memory)
    rate, reference_rate = torch.tensor(1e-4, dtype=torch.float64), 1e-4
    phases, gated = set(), 0
    for row in _statistics_sequence(40, seed):
        if weights:
            row = (*row, 0.001 * row[2])
            plain_memory = list(reference_memory)
            gained = reference_bracket(reference_rate, row[:3], 0.05, plain_memory)
        rate = rule.update(rate, torch.tensor(row, dtype=torch.float64), 0.05, memory)
        reference_rate = reference_bracket(reference_rate, row, 0.05, reference_memory)
        assert float(rate) == pytest.approx(reference_rate, rel=1e-12)
        torch.testing.assert_close(memory, torch.tensor(reference_memory, dtype=torch.float64), rtol=1e-12, atol=0)
        phases.add(reference_memory[4])
        gated += weights and reference_rate < gained
    assert phases == {0.0, 1.0, 2.0}  # the sequence went through every phase
    if weights:
        assert gated > 0  # the gate acted


def _climb(rule: str, steps: int) -> list[float]:
    """SGD-HD on f(x) = x^T A x / 2, A = diag(1..10), from alpha_0 = 1e-6 (the stable range of plain
    GD ends at 2 / 10 = 0.2): the rate after each step."""
    x = torch.nn.Parameter(torch.full((10,), 1.0, dtype=torch.float64))
    optimizer = SGDHD([x], lr=1e-6, hypergrad_rule=rule, first_step_bound=None)
    rates = []
    quadratic_descent(optimizer, x, EIGENVALUES, steps, record=lambda o: rates.append(o.param_groups[0]["lr"]))
    return rates


def test_it_climbs_from_a_rate_far_too_small_within_tens_of_steps():
    """From 1e-6 the rate passes 1e-3 within 25 steps (a climb of ln(1e3) = 6.9, up to the gain's
    gate: an update of 1% of |x| is a rate of about 0.01 / 6.2 here); the scale-free rule moves
    log alpha by at most beta = 0.05 a step, and gets less than 4x in the same steps."""
    rates = _climb("bracket", 25)
    assert max(rates) > 1e-3, rates
    slow = _climb("scalefree", 25)
    assert max(slow) < 4e-6, slow


def test_after_its_first_bracket_it_is_the_scalefree_rule():
    """On the quadratic the climb overshoots, comes back, and from then on no step changes
    log alpha by more than beta = 0.05 (or log 2, the guard's halving); the rate stays below
    the largest stable one, 2 / 1 = 2 for the flattest direction, and the loss falls."""
    x = torch.nn.Parameter(torch.full((10,), 1.0, dtype=torch.float64))
    optimizer = SGDHD([x], lr=1e-6, hypergrad_rule="bracket", first_step_bound=None)
    phases, rates = [], []

    def record(o):
        memory = o.param_groups[0]["hypergrad_state"].get("memory")  # none before the first statistics
        phases.append(0.0 if memory is None else float(memory[4]))
        rates.append(o.param_groups[0]["lr"])

    losses = quadratic_descent(optimizer, x, EIGENVALUES, 250, record=record)
    closed = phases.index(2.0)
    steps = [abs(math.log(b / a)) for a, b in zip(rates[closed:], rates[closed + 1:])]
    assert all(s <= 0.05 + 1e-12 or s == pytest.approx(math.log(2.0)) for s in steps), max(steps)
    assert max(rates[closed:]) < 2.0 and losses[-1] < 1e-6 * losses[0]


def test_it_halves_a_diverging_rate():
    """From five times the largest stable rate (SGDN on the quadratic, alpha_0 = 1) the guard halves
    the rate until it is stable, as the scale-free rule's does, and the loss comes back down."""
    x = torch.nn.Parameter(torch.full((10,), 1.0, dtype=torch.float64))
    optimizer = SGDHD([x], lr=1.0, momentum=0.9, nesterov=True, hypergrad_rule="bracket", first_step_bound=None)
    losses = quadratic_descent(optimizer, x, EIGENVALUES, 40)
    assert optimizer.param_groups[0]["lr"] * 10 < 2 and losses[-1] < losses[0]


def test_its_default_beta_is_the_scalefree_one_and_adam_takes_it():
    x = torch.nn.Parameter(torch.ones(3))
    optimizer = AdamHD([x], hypergrad_rule="bracket")
    assert optimizer.param_groups[0]["hypergrad_lr"] == RULES["scalefree"].default_beta == 0.05
