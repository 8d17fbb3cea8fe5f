"""torch's lr schedulers with the hypergradient optimizers, and LambdaHypergradLR.

Chainable schedulers (StepLR, ExponentialLR, CosineAnnealingLR, ...) multiply the current, adapted
lr; CyclicLR, OneCycleLR and LambdaLR compute the lr from the step count and overwrite the
adaptation.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler

from cases import TinyNet, batch_loss, make_batches
from hypergrad import SGDHD, AdamHD
from hypergrad.schedulers import LambdaHypergradLR


def one_step(model, optimizer, batch) -> None:
    optimizer.zero_grad()
    batch_loss(model, batch).backward()
    optimizer.step()


def make(optimizer_cls, **kwargs):
    model = TinyNet()
    return model, optimizer_cls(model.parameters(), **kwargs)


@pytest.mark.parametrize("optimizer_cls, kwargs", [
    (SGDHD, {"lr": 0.05, "hypergrad_lr": 1e-2}),
    (AdamHD, {"lr": 1e-2, "hypergrad_lr": 1e-4}),
])
@pytest.mark.parametrize("make_scheduler, factor", [
    (lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.3),
     lambda epoch: 0.3 if epoch % 2 == 0 else 1.0),
    (lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.7), lambda epoch: 0.7),
    (lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[2, 5], gamma=0.5),
     lambda epoch: 0.5 if epoch in (2, 5) else 1.0),
    (lambda opt: lr_scheduler.MultiplicativeLR(opt, lambda epoch: 0.9), lambda epoch: 0.9),
    (lambda opt: lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.4, total_iters=4),
     lambda epoch: (1 - 0.6 * min(epoch, 4) / 4) / (1 - 0.6 * min(epoch - 1, 4) / 4)),
    (lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=8, power=2.0),
     lambda epoch: ((1 - epoch / 8) / (1 - (epoch - 1) / 8)) ** 2),
    (lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=6),
     lambda epoch: (1 + math.cos(math.pi * epoch / 6)) / (1 + math.cos(math.pi * (epoch - 1) / 6))),
])
def test_decay_schedulers_scale_the_adapted_lr(optimizer_cls, kwargs, make_scheduler, factor):
    model, optimizer = make(optimizer_cls, **kwargs)
    scheduler = make_scheduler(optimizer)
    batches = make_batches(24)
    moved = False
    for epoch in range(1, 7):
        for batch in batches[4 * (epoch - 1) : 4 * epoch]:
            before_step = optimizer.param_groups[0]["lr"]
            one_step(model, optimizer, batch)
            moved |= optimizer.param_groups[0]["lr"] != before_step
        adapted = optimizer.param_groups[0]["lr"]
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(adapted * factor(epoch),
                                                                rel=1e-12, abs=1e-15)
    assert moved  # HD did adapt between the scheduler's steps


def test_reduce_on_plateau_scales_the_adapted_lr():
    model, optimizer = make(SGDHD, lr=0.05, hypergrad_lr=1e-2)
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    batches = make_batches(12)
    scheduler.step(1.0)  # the best so far
    for batch in batches:
        one_step(model, optimizer, batch)
        adapted = optimizer.param_groups[0]["lr"]
        scheduler.step(2.0)  # no improvement: reduce
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * adapted, rel=1e-12)


@pytest.mark.parametrize("optimizer_cls, base_cls, kwargs, beta", [
    (SGDHD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}, 1e-2),
    (AdamHD, torch.optim.Adam, {"lr": 1e-2}, 1e-4),
])
@pytest.mark.parametrize("make_scheduler", [
    lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=20),
    lambda opt: lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=5),
    lambda opt: lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t)),
    lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=6),
])
def test_step_count_schedulers_overwrite_the_adapted_lr(optimizer_cls, base_cls, kwargs, beta,
                                                      make_scheduler):
    """After every scheduler step the lr is the schedule's value, exactly as with the base
    optimizer; HD only moves it within the step (the lr the step used)."""
    runs = []
    for cls, extra in ((optimizer_cls, {"hypergrad_lr": beta}), (base_cls, {})):
        model, optimizer = make(cls, **kwargs, **extra)
        scheduler = make_scheduler(optimizer)
        scheduled, used = [], []
        for batch in make_batches(19):
            one_step(model, optimizer, batch)
            used.append(optimizer.param_groups[0]["lr"])
            scheduler.step()
            scheduled.append(optimizer.param_groups[0]["lr"])
        runs.append((scheduled, used))
    (hd_scheduled, hd_used), (base_scheduled, base_used) = runs
    assert hd_scheduled == pytest.approx(base_scheduled, rel=1e-12)
    assert hd_used != pytest.approx(base_used, rel=1e-9)


def cosine(total):
    return lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total))


def test_lambda_hypergrad_lr_follows_the_function_per_group():
    model = TinyNet()
    optimizer = SGDHD([{"params": model.hidden.parameters(), "hypergrad_lr": 1e-2},
                       {"params": model.out.parameters()}], lr=0.05, hypergrad_lr=1e-3)
    schedule = LambdaHypergradLR(optimizer, cosine(10))
    assert schedule.get_last_hypergrad_lr() == [1e-2, 1e-3]
    for t in range(1, 15):
        one_step(model, optimizer, make_batches(1)[0])
        schedule.step()
        expected = 0.5 * (1 + math.cos(math.pi * min(t, 10) / 10))
        assert schedule.get_last_hypergrad_lr() == pytest.approx([1e-2 * expected, 1e-3 * expected],
                                                                 rel=1e-12, abs=1e-18)
    assert [g["hypergrad_lr"] for g in optimizer.param_groups] == [0.0, 0.0]


def test_lr_freezes_once_the_hypergrad_lr_reaches_zero():
    model, optimizer = make(AdamHD, lr=1e-2, hypergrad_lr=1e-4)
    schedule = LambdaHypergradLR(optimizer, cosine(5))
    lrs = []
    for batch in make_batches(12):
        one_step(model, optimizer, batch)
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert len(set(lrs[:5])) == 5  # adapting while beta > 0
    assert len(set(lrs[5:])) == 1  # frozen afterwards


def test_per_group_functions_and_state_dict_round_trip():
    model = TinyNet()
    optimizer = AdamHD([{"params": model.hidden.parameters()},
                        {"params": model.out.parameters()}], hypergrad_lr=1e-6)
    schedule = LambdaHypergradLR(optimizer, [lambda t: 1.0, lambda t: 0.5**t])
    for _ in range(3):
        schedule.step()
    assert schedule.get_last_hypergrad_lr() == [1e-6, 1e-6 / 8]
    resumed = LambdaHypergradLR(optimizer, [lambda t: 1.0, lambda t: 0.5**t])
    resumed.load_state_dict(schedule.state_dict())
    resumed.step()
    assert resumed.last_step == 4
    assert resumed.get_last_hypergrad_lr() == [1e-6, 1e-6 / 16]


def test_lambda_hypergrad_lr_rejects_bad_input():
    model = TinyNet()
    with pytest.raises(ValueError, match="no 'hypergrad_lr'"):
        LambdaHypergradLR(torch.optim.SGD(model.parameters(), lr=0.1), cosine(5))
    optimizer = SGDHD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="one per param group"):
        LambdaHypergradLR(optimizer, [cosine(5), cosine(5)])
    with pytest.raises(ValueError, match="finite and >= 0"):
        LambdaHypergradLR(optimizer, lambda t: -1.0)
    multiplicative = SGDHD(model.parameters(), lr=0.1, hypergrad_lr=0.5,
                           hypergrad_rule="multiplicative")
    with pytest.raises(ValueError, match="< 1"):
        LambdaHypergradLR(multiplicative, lambda t: 3.0)
