"""The rules registry (``hypergrad/_rules.py``): every entry keeps the contract its module states,
and a rule added as one entry works with every optimizer path without another change."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import hypergrad
from cases import TinyNet, make_batches, train
from hypergrad._rules import DOT, DOT_AND_NORMS, RULES, Rule, next_host_rate, next_rate, register

RATE_SHAPES = [(), (3,), (2, 3)]


def _statistics(rule: Rule, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Statistics a step could give: a dot product and the norms it is bounded by."""
    generator = torch.Generator().manual_seed(seed)
    g, u = torch.randn(2, 5, *shape, generator=generator, dtype=torch.float64)
    dot, g_squared, u_squared = (g * u).sum(0), (g * g).sum(0), (u * u).sum(0)
    return torch.stack((dot, g_squared, u_squared)[: len(rule.statistics)])


def _memory(rule: Rule, shape: tuple[int, ...]) -> torch.Tensor | None:
    return torch.zeros((len(rule.memory), *shape), dtype=torch.float64) if rule.memory else None


@pytest.mark.parametrize("shape", RATE_SHAPES, ids=str)
@pytest.mark.parametrize("name", list(RULES))
def test_an_update_is_elementwise_and_keeps_its_memory_in_place(name, shape):
    rule = RULES[name]
    rate = torch.full(shape, 0.1, dtype=torch.float64)
    memory = _memory(rule, shape)
    before = None if memory is None else memory.clone()
    statistics = _statistics(rule, shape)
    new_rate = rule.update(rate, statistics, 0.05, memory)
    assert new_rate.shape == rate.shape and torch.isfinite(new_rate).all()
    if memory is not None:
        assert memory.shape == (len(rule.memory), *shape) and not torch.equal(memory, before)
    # Elementwise: each rate moves as it would alone.
    for index in [()] if shape == () else [(0,) * len(shape), (-1,) * len(shape)]:
        alone_memory = None if memory is None else _memory(rule, ())
        alone = rule.update(rate[index], statistics[(slice(None), *index)], 0.05, alone_memory)
        torch.testing.assert_close(new_rate[index], alone, rtol=1e-14, atol=0.0)


@pytest.mark.parametrize("name", list(RULES))
def test_without_information_nothing_moves(name):
    rule = RULES[name]
    rate, memory = torch.tensor([0.1, 0.2], dtype=torch.float64), _memory(rule, (2,))
    statistics = torch.zeros(len(rule.statistics), 2, dtype=torch.float64)
    assert torch.equal(rule.update(rate, statistics, 0.05, memory), rate)
    assert memory is None or not memory.any()


@pytest.mark.parametrize("name", list(RULES))
def test_next_rate_clips_and_keeps_a_rate_whose_update_is_not_finite(name):
    rule = RULES[name]
    rate = torch.tensor([0.1, 0.1], dtype=torch.float64)
    statistics = _statistics(rule, (2,))
    statistics[:, 1] = math.nan
    new_rate = next_rate(rate, statistics, 0.05, name, None, _memory(rule, (2,)))
    assert new_rate[1] in (0.1, 0.05)  # kept; the scale-free guard halves it at a non-finite gradient
    bounded = next_rate(rate, _statistics(rule, (2,)), 0.05, name, (0.1, 0.1), _memory(rule, (2,)))
    assert torch.equal(bounded, rate)


@pytest.mark.parametrize("granularity", ["group", "tensor", "element"])
@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_runs_and_resumes_at_every_granularity(name, granularity):
    beta = 0.01 if RULES[name].default_beta is None else None
    models = [TinyNet(), TinyNet()]
    batches = make_batches(6)
    whole = hypergrad.AdamHD(models[0].parameters(), lr=0.01, hypergrad_rule=name, hypergrad_lr=beta,
                             granularity=granularity)
    train(models[0], whole, batches)
    half = hypergrad.AdamHD(models[1].parameters(), lr=0.01, hypergrad_rule=name, hypergrad_lr=beta,
                            granularity=granularity)
    train(models[1], half, batches[:3])
    resumed = hypergrad.AdamHD(models[1].parameters(), lr=0.01, hypergrad_rule=name, hypergrad_lr=beta,
                               granularity=granularity)
    resumed.load_state_dict(copy.deepcopy(half.state_dict()))
    train(models[1], resumed, batches[3:])
    for ours, theirs in zip(models[1].parameters(), models[0].parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15)
    rates = whole.learning_rates(models[0].named_parameters())
    assert any(not torch.equal(torch.as_tensor(rate), torch.tensor(0.01, dtype=torch.float64)) for rate in rates.values())


SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-300, 1e300]


@pytest.mark.parametrize("bounds", [None, (1e-4, 0.3)], ids=["unbounded", "bounded"])
@pytest.mark.parametrize("name", list(RULES))
def test_the_host_floats_are_the_tensor_rule(name, bounds):
    """One rate's rule on Python floats (the CPU's group rates) against the same rule on float64
    tensors, step by step from the same rate and memory: the same rate and memory to the last
    bits of torch's square root and exponential (not correctly rounded on the CPU: 1 ulp), and
    the same branches (guard, no information, non-finite statistics, clipping) throughout."""
    rule = RULES[name]
    generator = torch.Generator().manual_seed(3)
    rate, memory = 0.01, [0.0] * len(rule.memory)
    beta = 0.05 if rule.default_beta is not None else 0.3
    for step in range(600):
        g, u = torch.randn(2, 4, generator=generator, dtype=torch.float64)
        u = u * 10.0 ** float(torch.randint(-3, 4, (), generator=generator))
        statistics = [float(g @ u), float(g @ g), float(u @ u)][: len(rule.statistics)]
        if step % 7 == 0:  # a gradient jump: the guard
            statistics[1:] = [value * 1e3 for value in statistics[1:]]
        if step % 11 == 0:
            statistics[step % len(statistics)] = SPECIAL[step % len(SPECIAL)]
        tensor_memory = torch.tensor(memory, dtype=torch.float64) if rule.memory else None
        expected = next_rate(rate, torch.tensor(statistics, dtype=torch.float64), beta, name, bounds, tensor_memory)
        host_memory = list(memory) if rule.memory else None
        new_rate = next_host_rate(rate, list(statistics), beta, name, bounds, host_memory)
        assert isinstance(new_rate, float)
        torch.testing.assert_close(new_rate, expected.item(), rtol=1e-14, atol=0)
        if rule.memory:
            torch.testing.assert_close(torch.tensor(host_memory, dtype=torch.float64), tensor_memory, rtol=1e-14,
                                       atol=1e-300)
            memory = host_memory
        rate = new_rate
    assert rate != 0.01


@pytest.mark.parametrize("name", list(RULES))
def test_a_group_rate_moves_alike_on_host_floats_and_on_tensors(name):
    """AdamHD with a float ``lr`` (the rule on host floats, its memory a list of floats) and with a
    tensor one (the rule on tensors) take the same steps; a float group switched to a tensor
    ``lr`` midway, and back, goes on alike (its memory converted), and ``state_dict`` holds the
    memory as the tensor it always saved."""
    beta = 0.01 if RULES[name].default_beta is None else None
    models = [TinyNet(), TinyNet(), TinyNet()]
    optimizers = [hypergrad.AdamHD(model.parameters(), lr=lr, hypergrad_rule=name, hypergrad_lr=beta)
                  for model, lr in zip(models, (0.01, torch.tensor(0.01, dtype=torch.float64), 0.01))]
    for index, batch in enumerate(make_batches(9)):
        if index in (3, 6):  # the third switches: to a tensor lr, then back to a float
            group = optimizers[2].param_groups[0]
            group["lr"] = torch.tensor(group["lr"], dtype=torch.float64) if index == 3 else float(group["lr"])
        for model, optimizer in zip(models, optimizers):
            train(model, optimizer, [batch])
        if RULES[name].memory and index in (2, 5):
            saved = optimizers[2].state_dict()["param_groups"][0]["hypergrad_state"]["memory"]
            assert isinstance(saved, torch.Tensor) and saved.dtype == torch.float64
            live = optimizers[2].param_groups[0]["hypergrad_state"]["memory"]
            assert isinstance(live, list if index == 2 else torch.Tensor)
    rates = [float(optimizer.param_groups[0]["lr"]) for optimizer in optimizers]
    assert rates[0] != 0.01
    assert rates[1] == pytest.approx(rates[0], rel=1e-13) and rates[2] == pytest.approx(rates[0], rel=1e-13)
    for model in models[1:]:
        for ours, theirs in zip(model.parameters(), models[0].parameters()):
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15)


def _halving(lr, statistics, beta, memory):
    """A toy rule: shrink the rate by ``1 - beta`` at every negative ``g . u``, counting those steps
    in its memory."""
    negative = statistics[0] < 0
    memory[0].add_(negative.to(memory.dtype))
    return torch.where(negative, lr * (1 - beta), lr * torch.ones_like(statistics[0]))


def test_a_rule_is_one_entry(monkeypatch):
    monkeypatch.delitem(RULES, "halving", raising=False)
    rule = register(Rule("halving", _halving, DOT, memory=("count",), nonnegative_memory=("count",), default_beta=0.5,
                         beta_below=1.0, beta_reason="for the test"))
    monkeypatch.setitem(RULES, "halving", rule)  # removed again after the test
    model = TinyNet()
    optimizer = hypergrad.SGDHD(model.parameters(), lr=0.5, momentum=0.9, hypergrad_rule="halving",
                                first_step_bound=None)  # the rule alone moves the rate
    assert optimizer.param_groups[0]["hypergrad_lr"] == 0.5  # its default beta
    train(model, optimizer, make_batches(8))
    halvings = optimizer.state_dict()["param_groups"][0]["hypergrad_state"]["memory"]
    assert float(halvings[0]) >= 1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * 0.5 ** float(halvings[0]), rel=1e-12)
    with pytest.raises(ValueError, match=r"hypergrad_rule='halving' \(must be in \[0, 1\) for the test\)"):
        hypergrad.SGDHD(model.parameters(), hypergrad_rule="halving", hypergrad_lr=1.0)
    with pytest.raises(ValueError, match="already registered"):
        register(rule)


def test_an_entry_is_checked_when_registered():
    with pytest.raises(ValueError, match="statistics"):
        register(Rule("odd", _halving, ("g.u", "|g|^2")))
    with pytest.raises(ValueError, match="nonnegative_memory"):
        register(Rule("odd", _halving, DOT_AND_NORMS, memory=("m",), nonnegative_memory=("v",)))
    assert "odd" not in RULES


def test_an_unknown_rule_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"Invalid hypergrad_rule: 'nope' \(must be one of \("):
        hypergrad.SGDHD(TinyNet().parameters(), hypergrad_rule="nope")
