"""The scale-free rule (``hypergrad_rule="scalefree"``): its lr change is the documented function of
the finite-difference hypergradient, it ignores the scale of the loss, its guard brings a far too
large rate down without a closure, one default beta serves every base rule, and its memory is
saved, restored and checked on load."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

from cases import CASES, TinyNet, batch_loss, make_batches, quadratic_descent, train
from hypergrad import AdagradHD, AdamHD, AdamWHD, RMSpropHD, SGDHD
from test_exactness import STEPS_BEFORE, _group_hypergradient, _train_to_snapshot, objective, relative_error

GRANULARITIES = ["group", "tensor", "element"]
SCALEFREE = dict(hypergrad_rule="scalefree", hypergrad_lr=0.05)


def all_rates(optimizer, model) -> torch.Tensor:
    rates = optimizer.learning_rates(model.named_parameters())
    return torch.cat([torch.as_tensor(r, dtype=torch.float64).reshape(-1) for r in rates.values()])


@pytest.mark.parametrize("case", ["nesterov", "sgd-wd-maximize", "adam", "adamw", "adagrad-decay-init-wd", "rmsprop"])
def test_lr_change_is_the_rule_of_the_finite_difference_hypergradient(case):
    """log(alpha_t / alpha_{t-1}) = beta * clip(m_t / sqrt(v_t), -1, 1) with m_t, v_t the moving
    moments of c_t = -h_t / (|g_t| |u_{t-1}|), h_t = dJ_t / d alpha_{t-1} by central differences
    through torch.optim's base step, |u_{t-1}| = |theta_{t-2} - theta_{t-1}| / alpha_{t-1}."""
    model, optimizer, batches, snapshot_params, snapshot_state = _train_to_snapshot(case, **SCALEFREE)
    (lr_previous,) = train(model, optimizer, batches[STEPS_BEFORE:STEPS_BEFORE + 1])
    m, v, r = optimizer.state_dict()["param_groups"][0]["hypergrad_state"]["memory"].tolist()
    assert v > 0 and r > 0  # the rule has history
    moved = sum((snapshot_params[name] - p.detach()).pow(2).sum() for name, p in model.named_parameters())
    u_norm = math.sqrt(float(moved)) / lr_previous
    settings, base_cls = CASES[case].settings, CASES[case].base
    g = torch.autograd.grad(objective(model, batches[STEPS_BEFORE + 1], settings, base_cls), list(model.parameters()))
    g_squared = float(sum(x.pow(2).sum() for x in g))
    (lr_now,) = train(model, optimizer, batches[STEPS_BEFORE + 1:])

    hypergradient = _group_hypergradient(CASES[case], lr_previous, snapshot_params, snapshot_state, batches)
    cosine = -hypergradient / (math.sqrt(g_squared) * u_norm)
    m, v = 0.9 * m + 0.1 * cosine, 0.99 * v + 0.01 * cosine**2
    assert g_squared <= 16 * r  # the guard is not what moves the rate here
    expected = 0.05 * min(max(m / math.sqrt(v), -1.0), 1.0)
    assert relative_error(math.log(lr_now / lr_previous), expected) < 1e-6, (math.log(lr_now / lr_previous), expected)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", ["adam", "adamw-decay", "adagrad-decay", "rmsprop-centered", "nesterov"])
def test_rule_ignores_the_scale_of_the_loss(name, granularity):
    """Loss times 1000: Adam-type directions do not change (eps negligible), and SGD's step does not
    either when alpha_0 is divided by 1000; the rule reads cosines and ratios of squared norms, so
    every rate follows the same trajectory (over 1000 for SGD) and the parameters move alike."""
    case = CASES[name]
    sgd = case.fast is SGDHD
    extra = {} if sgd else dict(eps=1e-30)
    runs = {}
    for scale in (1.0, 1000.0):
        model = TinyNet()
        lr = case.settings["lr"] / scale if sgd else case.settings["lr"]
        optimizer = case.make(model.parameters(), lr=lr, granularity=granularity, **SCALEFREE, **extra)
        trajectory = []
        for batch in make_batches(20):
            optimizer.zero_grad()
            (scale * batch_loss(model, batch)).backward()
            optimizer.step()
            trajectory.append(all_rates(optimizer, model) * (scale if sgd else 1.0))
        runs[scale] = torch.stack(trajectory), [p.detach().clone() for p in model.parameters()]
    torch.testing.assert_close(runs[1000.0][0], runs[1.0][0], rtol=1e-7, atol=0.0)
    assert not torch.allclose(runs[1.0][0][-1], runs[1.0][0][0])  # the rates did move
    for ours, theirs in zip(runs[1000.0][1], runs[1.0][1]):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)


EIGENVALUES = torch.linspace(1.0, 10.0, 10, dtype=torch.float64)


def _quadratic(rule: str, beta: float, granularity: str, steps: int) -> tuple[list[float], torch.Tensor]:
    """SGD-HD with Nesterov momentum on f(x) = x^T A x / 2, A = diag(1..10), from alpha_0 = 1
    (five times the largest stable rate of plain GD, 2 / L = 0.2): the losses and the rates."""
    eigenvalues = EIGENVALUES
    x = torch.nn.Parameter(torch.full((10,), 1.0, dtype=torch.float64))
    optimizer = SGDHD([x], lr=1.0, momentum=0.9, nesterov=True, hypergrad_lr=beta, hypergrad_rule=rule,
                      granularity=granularity, first_step_bound=None)  # the rule alone meets the rate
    losses = quadratic_descent(optimizer, x, eigenvalues, steps)
    return losses, torch.as_tensor(optimizer.learning_rates([("x", x)])["x"])


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_guard_brings_a_far_too_large_rate_down_within_a_few_steps(granularity):
    """From five times the stable rate the gradient norm grows geometrically: the guard halves the
    rate until it is stable (below 2 / lambda for each coordinate; per weight, the flat ones may
    keep larger rates), and the loss comes back down (no closure). The multiplicative rule at the
    same beta changes the rate by at most 5% a step, too slowly: the loss has exploded."""
    losses, rates = _quadratic("scalefree", 0.05, granularity, steps=40)
    assert (rates * EIGENVALUES < 2).all(), rates
    assert losses[-1] < losses[0], losses
    contrast, _ = _quadratic("multiplicative", 0.05, granularity, steps=40)
    assert contrast[-1] > 1e6 * contrast[0], contrast[-1]


PAPER_BETAS = {SGDHD: 1e-3, AdamHD: 1e-7, AdamWHD: 1e-7, AdagradHD: 1e-6, RMSpropHD: 1e-6}
"""The reference code's betas (SGD-type 1e-3, Adam-type 1e-7), scaled by the default lr for Adagrad and RMSprop."""


@pytest.mark.parametrize("cls", [SGDHD, AdamHD, AdamWHD, AdagradHD, RMSpropHD])
def test_the_default_is_the_scalefree_rule_with_one_beta_and_the_papers_rule_is_one_keyword_away(cls):
    model = TinyNet()
    group = cls(model.parameters()).param_groups[0]
    assert (group["hypergrad_rule"], group["hypergrad_lr"]) == ("scalefree", 0.05)
    assert cls(model.parameters(), hypergrad_lr=0.2).param_groups[0]["hypergrad_lr"] == 0.2
    paper_beta = PAPER_BETAS[cls]
    assert cls(model.parameters(), hypergrad_rule="additive").param_groups[0]["hypergrad_lr"] == paper_beta
    # A group that chooses its own rule gets that rule's default beta.
    mixed = cls([{"params": model.hidden.parameters(), "hypergrad_rule": "additive"},
                 {"params": model.out.parameters()}])
    assert [(g["hypergrad_rule"], g["hypergrad_lr"]) for g in mixed.param_groups] == [
        ("additive", paper_beta), ("scalefree", 0.05)]
    assert mixed.defaults["hypergrad_lr"] is None
    signature = inspect.signature(cls).parameters
    assert (signature["hypergrad_rule"].default, signature["hypergrad_lr"].default) == ("scalefree", None)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", ["nesterov", "adam"])
def test_memory_round_trips_through_state_dict(name, granularity):
    """A run saved after 8 steps and continued in a fresh optimizer matches the uninterrupted one."""
    batches = make_batches(16)
    models = [TinyNet(), TinyNet()]
    whole = CASES[name].make(models[0].parameters(), granularity=granularity, **SCALEFREE)
    train(models[0], whole, batches)
    first = CASES[name].make(models[1].parameters(), granularity=granularity, **SCALEFREE)
    train(models[1], first, batches[:8])
    saved = copy.deepcopy(first.state_dict())
    resumed = CASES[name].make(models[1].parameters(), granularity=granularity, **SCALEFREE)
    resumed.load_state_dict(saved)
    train(models[1], resumed, batches[8:])
    torch.testing.assert_close(all_rates(resumed, models[1]), all_rates(whole, models[0]), rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_bad_memory_is_refused_on_load(granularity):
    model = TinyNet()
    optimizer = SGDHD(model.parameters(), lr=0.05, granularity=granularity, **SCALEFREE)
    train(model, optimizer, make_batches(3))
    for corrupt in (lambda memory: memory[:2], lambda memory: -memory.abs() - 1.0):
        saved = copy.deepcopy(optimizer.state_dict())
        if granularity == "group":
            record = saved["param_groups"][0]["hypergrad_state"]
        else:
            record = saved["state"][0]["hypergrad_state"]
        record["memory"] = corrupt(record["memory"])
        with pytest.raises(ValueError, match="the memory"):
            optimizer.load_state_dict(saved)
