"""SGDN-HD keeps ``g_{t-1}`` and recomputes ``u_{t-1} = g_{t-1} + mu v_{t-1}`` from it and the
momentum buffer inside the statistics. Held to the reference twin (which keeps ``u`` itself), to
the hypergradient written out by hand while the momentum changes between steps, and across
checkpoints of the earlier layout (``u_{t-1}`` kept as ``hypergrad_direction``)."""

from __future__ import annotations

import pytest
import torch

import hypergrad
from cases import TinyNet, assert_additive_steps, batch_loss, make_batches, resumed_run
from hypergrad.reference import SGDHDReference

PATHS = {"for-loop": dict(foreach=False, fused=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
FLAGS = {"plain": {}, "weight-decay": dict(weight_decay=1e-2), "maximize": dict(maximize=True)}


def _run(cls, settings: dict, steps: int, *, set_to_none: bool = True):
    model = TinyNet()
    optimizer = cls(model.parameters(), **settings)
    sign = -1.0 if settings.get("maximize") else 1.0
    rates = []
    for batch in make_batches(steps):
        optimizer.zero_grad(set_to_none=set_to_none)
        (sign * batch_loss(model, batch)).backward()
        optimizer.step()
        rates.append(float(optimizer.param_groups[0]["lr"]))
    return rates, [p.detach().clone() for p in model.parameters()], optimizer, model


@pytest.mark.parametrize("flags", list(FLAGS))
@pytest.mark.parametrize("path", list(PATHS))
def test_recomputed_direction_equals_the_twins_kept_one(path, flags):
    settings = dict(lr=0.05, momentum=0.9, nesterov=True, hypergrad_rule="additive", hypergrad_lr=1e-2, **FLAGS[flags])
    ours = _run(hypergrad.SGDHD, {**settings, **PATHS[path]}, 8)
    twins = _run(SGDHDReference, settings, 8)
    torch.testing.assert_close(ours[0], twins[0], rtol=1e-12, atol=0)
    assert len(set(ours[0])) > 4, "the rate must adapt for the comparison to mean anything"
    torch.testing.assert_close(ours[1], twins[1], rtol=1e-12, atol=1e-14)
    optimizer, model = ours[2], ours[3]
    for p in model.parameters():
        state = optimizer.state[p]
        assert "hypergrad_direction" not in state and "hypergrad_gradient" in state
        if not FLAGS[flags]:  # the gradient itself is kept, not a copy
            assert state["hypergrad_gradient"] is p.grad


@pytest.mark.parametrize("path", list(PATHS))
def test_a_kept_gradient_zeroed_in_place_is_not_taken_for_g_prev(path):
    """``zero_grad(set_to_none=False)`` zeroes the kept ``g_{t-1}``: that step's hypergradient leaves
    it out (the rate stays), and the gradients are copied from then on."""
    settings = dict(lr=0.05, momentum=0.9, nesterov=True, hypergrad_rule="additive", hypergrad_lr=1e-2)
    rates, _, optimizer, model = _run(hypergrad.SGDHD, {**settings, **PATHS[path]}, 6, set_to_none=False)
    assert rates[1] == rates[0] and len(set(rates[1:])) == 5
    assert all(optimizer.state[p]["hypergrad_gradient"] is not p.grad for p in model.parameters())


@pytest.mark.parametrize("path", list(PATHS))
def test_the_momentum_the_last_step_used(path):
    """A momentum written between steps (OneCycleLR cycles it) is not taken for the last step's:
    every rate moves by ``beta * g_t . (g_{t-1} + mu_{t-1} v_{t-1})``, written out."""
    beta = 1e-2
    model = TinyNet()
    params = list(model.parameters())
    optimizer = hypergrad.SGDHD(params, lr=0.05, momentum=0.9, nesterov=True, hypergrad_rule="additive",
                                hypergrad_lr=beta, **PATHS[path])
    group = optimizer.param_groups[0]

    def before(number):
        group["momentum"] = 0.9 - 0.05 * number

    def directions_after(_, grads):
        return [g + group["momentum"] * optimizer.state[p]["momentum_buffer"] for g, p in zip(grads, params)]

    assert_additive_steps(model, optimizer, make_batches(8), beta, directions_after, before)


@pytest.mark.parametrize("earlier_layout", [False, True])
@pytest.mark.parametrize("path", list(PATHS))
def test_a_checkpoint_of_the_earlier_layout_continues(path, earlier_layout):
    """A state that kept ``u_{t-1}`` (``hypergrad_direction``, the layout before this one) loads as
    ``g_{t-1} = u_{t-1} - mu v_{t-1}`` and continues as the uninterrupted run; so does one of this
    layout, bit for bit."""
    settings = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, **PATHS[path])

    def as_the_earlier_layout_saved_it(state_dict):
        for state in state_dict["state"].values():
            gradient = state.pop("hypergrad_gradient")
            state["hypergrad_direction"] = gradient + 0.9 * state["momentum_buffer"]

    (model, optimizer), (resumed_model, resumed) = resumed_run(
        lambda params: hypergrad.SGDHD(params, **settings), as_the_earlier_layout_saved_it if earlier_layout else None)
    tolerance = 1e-12 if earlier_layout else 0.0
    assert resumed.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"], rel=tolerance)
    for mine, theirs in zip(resumed_model.parameters(), model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=tolerance, atol=tolerance)
    assert all("hypergrad_direction" not in state for state in resumed.state.values())
