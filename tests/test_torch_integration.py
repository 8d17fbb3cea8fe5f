"""Schedulers, GradScaler and closures work with the HD optimizers as with torch.optim."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler

from cases import TinyNet, batch_loss, make_batches, pick

MAKERS = pick("momentum-fast", "adam", "adamw-default-decay", "adagrad-small-decay", "rmsprop-half-momentum",
              "schedulefree-adamw", "schedulefree-sgd")


def _scheduled_lrs(name, make_scheduler, steps):
    """Trains with the named optimizer and a scheduler stepped after it; yields, step by step, the
    group's lr after the optimizer's step and after the scheduler's."""
    model = TinyNet()
    optimizer = MAKERS[name].make(model.parameters())
    scheduler = make_scheduler(optimizer)
    for batch in make_batches(steps):
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        optimizer.step()
        adapted = optimizer.param_groups[0]["lr"]
        scheduler.step()
        yield adapted, optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize(
    "make_scheduler, factor",
    [
        (lambda opt: lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), 0.5),
        (lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.9), 0.9),
    ],
)
def test_step_and_exponential_decay_scale_the_adapted_lr(name, make_scheduler, factor):
    for adapted, scheduled in _scheduled_lrs(name, make_scheduler, 6):
        # the scheduler multiplies what HD made of the lr, it does not reset it to its own chain
        assert scheduled == pytest.approx(adapted * factor, rel=1e-12)


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda opt: lr_scheduler.CyclicLR(opt, base_lr=1e-3, max_lr=1e-2, step_size_up=3, cycle_momentum=False),
        lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=8, cycle_momentum=False),
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3),
    ],
)
def test_overwriting_schedulers_run(name, make_scheduler):
    for _, scheduled in _scheduled_lrs(name, make_scheduler, 8):
        assert math.isfinite(scheduled)


@pytest.mark.parametrize("name", list(MAKERS))
def test_grad_scaler_skips_non_finite_steps_without_touching_lr(name):
    model = TinyNet(torch.float32)
    optimizer = MAKERS[name].make(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    batches = make_batches(6, torch.float32)
    for index, batch in enumerate(batches):
        optimizer.zero_grad()
        scaler.scale(batch_loss(model, batch)).backward()
        if index == 4:
            model.out.weight.grad[0, 0] = float("inf")
            params_before = [p.detach().clone() for p in model.parameters()]
            lr_before = optimizer.param_groups[0]["lr"]
        scaler.step(optimizer)
        scaler.update()
        if index == 4:
            assert optimizer.param_groups[0]["lr"] == lr_before
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params_before))
            assert scaler.get_scale() == 2.0**7
    assert optimizer.param_groups[0]["lr"] != lr_before  # later steps adapt again


@pytest.mark.parametrize("name", list(MAKERS))
def test_step_with_closure_returns_the_loss(name):
    model = TinyNet()
    optimizer = MAKERS[name].make(model.parameters())
    batch = make_batches(1)[0]

    def closure():
        optimizer.zero_grad()
        loss = batch_loss(model, batch)
        loss.backward()
        return loss

    expected = batch_loss(model, batch).item()
    assert optimizer.step(closure).item() == expected
