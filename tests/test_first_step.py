"""``first_step_bound``: the group's first update moves its parameters by at most ``rho |theta_0|``,
exactly, and the run then goes on as one started from the scaled rate would."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hypergrad
from hypergrad import reference

OPTIMIZERS = {
    "sgd": (hypergrad.SGDHD, reference.SGDHDReference, {}),
    "sgdn": (hypergrad.SGDHD, reference.SGDHDReference, {"momentum": 0.9, "nesterov": True}),
    "adam": (hypergrad.AdamHD, reference.AdamHDReference, {}),
    "adamw": (hypergrad.AdamWHD, reference.AdamWHDReference, {"weight_decay": 0.1}),
    "adagrad": (hypergrad.AdagradHD, reference.AdagradHDReference, {}),
    "rmsprop": (hypergrad.RMSpropHD, reference.RMSpropHDReference, {}),
}
# A rate far too large for each base on the model below (its first update is several |theta_0|).
TOO_LARGE = {"sgd": 20.0, "sgdn": 20.0, "adam": 0.5, "adamw": 0.5, "adagrad": 0.5, "rmsprop": 0.5}


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, scheduler=None) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(24, 12, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 3, (24,), generator=generator)
    trajectory = []
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        trajectory.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
    return trajectory


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("granularity", ["group", "tensor", "element"])
def test_first_update_is_bounded_exactly(name: str, granularity: str) -> None:
    cls, _, settings = OPTIMIZERS[name]
    model = _model()
    theta_0 = _flat(model)
    optimizer = cls(model.parameters(), lr=TOO_LARGE[name], granularity=granularity, **settings)
    (theta_1,) = _train(model, optimizer, 1)
    assert float((theta_1 - theta_0).norm()) == pytest.approx(0.1 * float(theta_0.norm()), rel=1e-12)

    unbounded = _model()
    plain = cls(unbounded.parameters(), lr=TOO_LARGE[name], granularity=granularity, first_step_bound=None, **settings)
    (plain_1,) = _train(unbounded, plain, 1)
    scale = 0.1 * theta_0.norm() / (plain_1 - theta_0).norm()
    assert scale < 0.5  # the case binds
    # The retracted step is the unbounded one scaled, and every rate is scaled with it.
    torch.testing.assert_close(theta_1 - theta_0, scale * (plain_1 - theta_0), rtol=1e-10, atol=1e-14)
    rates = optimizer.learning_rates(model.named_parameters())
    for rate in rates.values():
        torch.testing.assert_close(torch.as_tensor(rate, dtype=torch.float64),
                                   torch.full_like(torch.as_tensor(rate, dtype=torch.float64), TOO_LARGE[name] * scale),
                                   rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_bounded_run_is_the_run_from_the_scaled_rate(name: str) -> None:
    """HD goes on from the scaled rate: after the first step the run is, step for step, the run of
    an optimizer started at ``s * alpha_0`` (the first step gives the rule no statistics)."""
    cls, _, settings = OPTIMIZERS[name]
    bounded_model, model = _model(), _model()
    theta_0 = _flat(model)
    bounded = _train(bounded_model, cls(bounded_model.parameters(), lr=TOO_LARGE[name], **settings), 6)
    probe_model = _model()
    (probe_1,) = _train(probe_model, cls(probe_model.parameters(), lr=TOO_LARGE[name], first_step_bound=None,
                                         **settings), 1)
    scale = float(0.1 * theta_0.norm() / (probe_1 - theta_0).norm())
    started = _train(model, cls(model.parameters(), lr=TOO_LARGE[name] * scale, first_step_bound=None, **settings), 6)
    for a, b in zip(bounded, started):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_no_effect_where_it_does_not_bind(name: str) -> None:
    cls, _, settings = OPTIMIZERS[name]
    runs = []
    for bound in (0.1, None):
        model = _model()
        runs.append(_train(model, cls(model.parameters(), lr=1e-4, first_step_bound=bound, **settings), 4))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_off_at_zero_beta_and_for_zero_weights() -> None:
    # hypergrad_lr=0 is the base optimizer, exactly.
    model, twin = _model(), _model()
    ours = _train(model, hypergrad.AdamHD(model.parameters(), lr=0.5, hypergrad_lr=0.0), 3)
    theirs = _train(twin, torch.optim.Adam(twin.parameters(), lr=0.5, fused=True), 3)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # A group of zero tensors has no scale to compare with: not bounded.
    model = _model()
    for p in model.parameters():
        nn.init.zeros_(p)
    optimizer = hypergrad.AdamHD(model.parameters(), lr=0.5)
    _train(model, optimizer, 1)
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_lower_rate_bound_wins() -> None:
    model = _model()
    theta_0 = _flat(model)
    optimizer = hypergrad.AdamHD(model.parameters(), lr=0.5, lr_bounds=(0.2, 1.0))
    (theta_1,) = _train(model, optimizer, 1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2, rel=1e-12)
    assert float((theta_1 - theta_0).norm()) > 0.1 * float(theta_0.norm())


def test_with_a_scheduler_the_factor_is_scaled() -> None:
    model, plain_model = _model(), _model()
    theta_0 = _flat(model)
    optimizer = hypergrad.AdamHD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    (theta_1,) = _train(model, optimizer, 1, scheduler)
    assert float((theta_1 - theta_0).norm()) == pytest.approx(0.1 * float(theta_0.norm()), rel=1e-12)
    assert optimizer.param_groups[0]["lr"] == 0.5  # the schedule's value is the scheduler's
    plain = hypergrad.AdamHD(plain_model.parameters(), lr=0.5, first_step_bound=None)
    (plain_1,) = _train(plain_model, plain, 1)
    scale = float(0.1 * theta_0.norm() / (plain_1 - theta_0).norm())
    rate = optimizer.learning_rates(model.named_parameters())["0.weight"]
    assert float(rate) == pytest.approx(0.5 * scale, rel=1e-10)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("granularity", ["group", "tensor", "element"])
def test_twin_bounds_the_same(name: str, granularity: str) -> None:
    cls, twin_cls, settings = OPTIMIZERS[name]
    model, twin = _model(), _model()
    ours = _train(model, cls(model.parameters(), lr=TOO_LARGE[name], granularity=granularity, **settings), 4)
    theirs = _train(twin, twin_cls(twin.parameters(), lr=TOO_LARGE[name], granularity=granularity, **settings), 4)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("value", [0.0, -0.1, math.inf, math.nan])
def test_bad_values_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="first_step_bound"):
        hypergrad.AdamHD(_model().parameters(), first_step_bound=value)


def test_bad_type_is_refused() -> None:
    with pytest.raises(TypeError, match="first_step_bound"):
        hypergrad.SGDHD(_model().parameters(), lr=0.1, first_step_bound="0.1")


def test_schedule_free_takes_only_none() -> None:
    assert hypergrad.ScheduleFreeAdamWHD(_model().parameters()).defaults["first_step_bound"] is None
    with pytest.raises(ValueError, match="first_step_bound"):
        hypergrad.ScheduleFreeSGDHD(_model().parameters(), first_step_bound=0.1)


def test_a_checkpoint_without_the_keyword_loads_unbounded() -> None:
    model = _model()
    optimizer = hypergrad.AdamHD(model.parameters(), lr=0.5)
    _train(model, optimizer, 2)
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        del group["first_step_bound"]  # as a checkpoint written before the keyword existed
    restored = hypergrad.AdamHD(_model().parameters(), lr=0.5)
    restored.load_state_dict(saved)
    assert restored.param_groups[0]["first_step_bound"] is None


# -- while a rule climbs: every update is bounded ---------------------------------------------------
def _climbing_phase(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Write the bracketing rule's phase ``p`` of every rate (group record and parameter states)."""
    records = [optimizer.param_groups[0]["hypergrad_state"]]
    records += [state["hypergrad_state"] for state in optimizer.state.values() if "hypergrad_state" in state]
    for record in records:
        if record.get("memory") is not None:  # a list of floats, or a tensor (row 4: p)
            record["memory"][4] = value


def _rates(optimizer: torch.optim.Optimizer, model: nn.Module) -> list:
    return list(optimizer.learning_rates(model.named_parameters()).values())


def _predicted(rates: list, previous_rates: list, previous_updates: list[torch.Tensor]) -> float:
    """``|alpha_t u_{t-1}|`` with ``u_{t-1} = -Delta_{t-1} / alpha_{t-1}`` per parameter (per weight)."""
    return math.sqrt(sum(float((torch.as_tensor(a) / torch.as_tensor(b) * d).pow(2).sum())
                         for a, b, d in zip(rates, previous_rates, previous_updates)))


@pytest.mark.parametrize("name", ["sgdn", "adam"])
@pytest.mark.parametrize("granularity", ["group", "tensor", "element"])
@pytest.mark.parametrize("phase", [0.0, 1.0, 2.0])
def test_every_update_is_bounded_while_the_rule_climbs(name: str, granularity: str, phase: float) -> None:
    """Under the bracketing rule a step at a rate far too large is bounded exactly, before it is
    taken, to a predicted update ``|alpha_t u_{t-1}| = rho |theta_{t-1}|`` while the rule's phase is
    below 2 (its climb and first move back), and not once the bracket is closed."""
    cls, _, settings = OPTIMIZERS[name]
    model = _model()
    optimizer = cls(model.parameters(), lr=1e-4, granularity=granularity, hypergrad_rule="bracket", **settings)
    _train(model, optimizer, 2)
    before_last = [p.detach().clone() for p in model.parameters()]
    _train(model, optimizer, 1)
    previous_rates = _rates(optimizer, model)
    previous_updates = [p.detach() - b for p, b in zip(model.parameters(), before_last)]
    _climbing_phase(optimizer, phase)
    optimizer.param_groups[0]["lr"] = TOO_LARGE[name]
    size = float(_flat(model).norm())
    _train(model, optimizer, 1)
    predicted = _predicted(_rates(optimizer, model), previous_rates, previous_updates)
    if phase < 2:
        assert predicted == pytest.approx(0.1 * size, rel=1e-6)  # u_{t-1} from two weight vectors
    else:
        assert predicted > 0.5 * size  # the unbounded step at the too-large rate


def test_a_rule_that_does_not_climb_is_bounded_at_its_first_step_only() -> None:
    """The scale-free rule keeps no phase: after the first step a too-large rate goes through."""
    model = _model()
    optimizer = hypergrad.SGDHD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    _train(model, optimizer, 3)
    optimizer.param_groups[0]["lr"] = TOO_LARGE["sgdn"]
    before = _flat(model)
    (after,) = _train(model, optimizer, 1)
    assert float((after - before).norm()) > 0.5 * float(before.norm())


def test_the_bracketing_gain_stops_at_a_relative_update_of_one_percent() -> None:
    """SGD-HD's bracketing climb from 1e-6 on the model above (no bound): the gain climbs the rate
    by decades in tens of steps, and every step larger than the scale-free rule's ``beta`` ends
    with the update predicted from the previous direction at most ``0.01 |theta_{t-1}|``."""
    model = _model()
    optimizer = hypergrad.SGDHD(model.parameters(), lr=1e-6, hypergrad_rule="bracket", first_step_bound=None)
    theta, previous, gated = _flat(model), None, 0
    rates = [1e-6]
    for _ in range(60):
        (after,) = _train(model, optimizer, 1)
        rate = optimizer.param_groups[0]["lr"]
        if previous is not None and math.log(rate / rates[-1]) > 0.05 + 1e-12:
            update, previous_rate = previous
            relative = rate / previous_rate * float(update.norm()) / float(theta.norm())
            assert relative <= 0.01 * (1 + 1e-9)
            gated += relative > 0.01 * (1 - 1e-9)
        previous, theta = (after - theta, rate), after
        rates.append(rate)
    assert max(rates) > 100 * rates[0] and gated > 0
