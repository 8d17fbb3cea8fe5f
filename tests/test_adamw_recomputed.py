"""AdamW-HD at one rate per group keeps no ``theta_{t-2}``: the decay term of ``u_{t-1}`` is
recomputed from the weights that step reached, ``u_{t-1} = (lambda theta_{t-1} + a_{t-1}) /
(1 - alpha_{t-1} lambda)``. Held to the reference twin (which keeps ``theta_{t-2}``), to the
hypergradient written out by hand where something else wrote a parameter, and across
checkpoints."""

from __future__ import annotations

import pytest
import torch

import hypergrad
from cases import TinyNet, assert_additive_steps, batch_loss, make_batches, resumed_run
from hypergrad.reference import AdamWHDReference

PATHS = {"for-loop": dict(foreach=False, fused=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
SETTINGS = {
    "scalefree": dict(lr=1e-2, weight_decay=0.1),
    "additive": dict(lr=1e-2, weight_decay=0.1, hypergrad_rule="additive", hypergrad_lr=1e-3),
    "blend": dict(lr=1e-2, weight_decay=0.1, lr_limit=5e-3, lr_limit_power=1.5),
    "first-step-bound-binds": dict(lr=2.0, weight_decay=0.1, first_step_bound=0.05),
}


def _run(cls, settings: dict, steps: int, *, between=None, scheduler: bool = False):
    """Learning rates and parameters after ``steps`` steps; ``between(step, optimizer)`` is
    called after each step (the user writing into the group)."""
    model = TinyNet()
    optimizer = cls(model.parameters(), **settings)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5) if scheduler else None
    rates = []
    for number, batch in enumerate(make_batches(steps)):
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        rates.append(float(optimizer.param_groups[0]["lr"]))
        if between is not None:
            between(number, optimizer)
    return rates, [p.detach().clone() for p in model.parameters()], optimizer


def _assert_equal_runs(ours, twins) -> None:
    torch.testing.assert_close(ours[0], twins[0], rtol=1e-12, atol=0)
    assert len(set(ours[0])) > 3, "the rate must adapt for the comparison to mean anything"
    for mine, theirs in zip(ours[1], twins[1]):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(SETTINGS))
def test_recomputed_direction_equals_the_twins_kept_one(name, path):
    settings = SETTINGS[name]
    ours = _run(hypergrad.AdamWHD, {**settings, **PATHS[path]}, 8)
    _assert_equal_runs(ours, _run(AdamWHDReference, settings, 8))
    assert all("previous_param" not in state for state in ours[2].state.values())


@pytest.mark.parametrize("path", list(PATHS))
def test_a_rate_or_decay_written_between_steps_is_not_taken_for_the_last_steps(path):
    """The rate and decay that reached ``theta_{t-1}`` are the last step's, not what the user (or a
    scheduler) wrote into the group since: every rate moves by ``beta * g_t . u_{t-1}`` with
    ``u_{t-1}`` written out from the weights before that step and the decay it used."""
    beta = 1e-3
    model = TinyNet()
    params = list(model.parameters())
    optimizer = hypergrad.AdamWHD(params, lr=1e-2, weight_decay=0.1, hypergrad_rule="additive",
                                  hypergrad_lr=beta, **PATHS[path])
    group = optimizer.param_groups[0]
    writes = {2: ("lr", 0.5e-2), 4: ("weight_decay", 0.3), 5: ("lr", 2e-2), 6: ("weight_decay", 0.0)}

    def before(number):  # the user's write, then what the step starts from
        if number in writes:
            key, value = writes[number]
            group[key] = value
        return group["weight_decay"], [p.detach().clone() for p in params]

    assert_additive_steps(model, optimizer, make_batches(9), beta,
                          lambda noted, grads: _adam_directions(optimizer, params, noted[1], noted[0]), before)


def _adam_directions(optimizer, params, before, decay):
    """``u_t = decay * theta_{t-1} + m_hat / (sqrt(v_hat) + eps)`` of each parameter, from its
    state after step t and its weights ``before`` it, written out."""
    (beta1, beta2), eps = optimizer.param_groups[0]["betas"], optimizer.param_groups[0]["eps"]
    directions = []
    for p, theta in zip(params, before):
        state = optimizer.state[p]
        t = float(state["step"])
        m_hat = state["exp_avg"] / (1 - beta1**t)
        v_hat = state["exp_avg_sq"] / (1 - beta2**t)
        directions.append(decay * theta + m_hat / (v_hat.sqrt() + eps))
    return directions


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("write", [False, True])
def test_a_parameter_written_by_something_else_sits_one_hypergradient_out(path, write):
    """After a projection of one parameter between steps its ``theta_{t-1}`` cannot be recomputed:
    the next rate moves by ``beta * g . u`` over the other parameters (all of them without the
    write), and the step after that takes every parameter again."""
    beta, decay = 1e-3, 0.1
    model = TinyNet()
    params = list(model.parameters())
    optimizer = hypergrad.AdamWHD(params, lr=1e-2, weight_decay=decay, hypergrad_rule="additive",
                                  hypergrad_lr=beta, **PATHS[path])
    batches = make_batches(5)
    for batch in batches[:3]:
        before = [p.detach().clone() for p in params]
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        optimizer.step()
    directions = _adam_directions(optimizer, params, before, decay)
    if write:
        with torch.no_grad():
            params[0].clamp_(-0.2, 0.2)  # a projection: theta_{t-1} is no longer what the step left
    rate = optimizer.param_groups[0]["lr"]
    before = [p.detach().clone() for p in params]  # (the projected weights: this step starts from them)
    optimizer.zero_grad()
    batch_loss(model, batches[3]).backward()
    grads = [p.grad.clone() for p in params]
    optimizer.step()
    counted = range(1, len(params)) if write else range(len(params))
    expected = rate + beta * sum(float(torch.dot(grads[i].flatten(), directions[i].flatten())) for i in counted)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)

    # The step after takes every parameter again: the weights the last step reached are its own.
    directions = _adam_directions(optimizer, params, before, decay)
    rate = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad()
    batch_loss(model, batches[4]).backward()
    grads = [p.grad.clone() for p in params]
    optimizer.step()
    expected = rate + beta * sum(float(torch.dot(g.flatten(), u.flatten())) for g, u in zip(grads, directions))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("old_release", [False, True])
@pytest.mark.parametrize("path", list(PATHS))
def test_a_resumed_run_continues_exactly(path, old_release):
    """A checkpoint holds no versions: the loaded weights are taken as the last step left them, so a
    run resumed in a new optimizer (and model) continues as the uninterrupted one, bit for bit; a
    checkpoint of an earlier version, with ``previous_param``, loads and continues too."""
    settings = {**SETTINGS["scalefree"], **PATHS[path]}

    def as_earlier_versions_saved_it(state_dict):  # theta_{t-2} kept, the decay not remembered
        state_dict["param_groups"][0]["hypergrad_state"]["settings"].pop("decay")
        for state in state_dict["state"].values():
            state["previous_param"] = torch.zeros_like(state["exp_avg"])

    (model, optimizer), (resumed_model, resumed) = resumed_run(
        lambda params: hypergrad.AdamWHD(params, **settings), as_earlier_versions_saved_it if old_release else None)
    assert resumed.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for mine, theirs in zip(resumed_model.parameters(), model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert all("previous_param" not in state for state in resumed.state.values())


def test_per_tensor_and_per_weight_rates_keep_the_previous_weights():
    """Where rates differ within a group, ``theta_{t-2}`` is kept (``state["previous_param"]``)."""
    for granularity in ("tensor", "element"):
        ours = _run(hypergrad.AdamWHD, dict(SETTINGS["additive"], granularity=granularity), 6)
        assert all("previous_param" in state for state in ours[2].state.values())
        twins = _run(AdamWHDReference, dict(SETTINGS["additive"], granularity=granularity), 6)
        for mine, theirs in zip(ours[1], twins[1]):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)
