"""The named schedules (experiments.core.schedules) against their definitions and torch's own schedulers."""

from __future__ import annotations

import math

import pytest
import torch

import hypergrad
from experiments.core.schedules import LR_SCHEDULES, SCHEDULES, build_schedule

TOTAL = 20


def _trace(optimizer: torch.optim.Optimizer, scheduler, key: str) -> list[float]:
    """``key`` of group 0 before the first step and after each of ``TOTAL`` scheduler steps."""
    values = [float(optimizer.param_groups[0][key])]
    for _ in range(TOTAL):
        optimizer.step()
        scheduler.step()
        values.append(float(optimizer.param_groups[0][key]))
    return values


def _sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=lr)


def test_lr_schedules_follow_their_definitions():
    step = _trace(optimizer := _sgd(), build_schedule("step", optimizer, 5, TOTAL), "lr")
    assert step == pytest.approx([0.1] * 10 + [0.01] * 5 + [0.001] * 6)
    exp = _trace(optimizer := _sgd(), build_schedule("exp", optimizer, 5, TOTAL), "lr")
    assert exp == pytest.approx([0.1 * 0.01 ** (t / TOTAL) for t in range(TOTAL + 1)], rel=1e-12)
    cosine = _trace(optimizer := _sgd(), build_schedule("cosine", optimizer, 5, TOTAL), "lr")
    assert cosine == pytest.approx([0.05 * (1 + math.cos(math.pi * t / TOTAL)) for t in range(TOTAL + 1)], abs=1e-15)
    onecycle = _trace(optimizer := _sgd(), build_schedule("onecycle", optimizer, 5, TOTAL), "lr")
    reference_optimizer = _sgd()
    reference = torch.optim.lr_scheduler.OneCycleLR(reference_optimizer, max_lr=0.1, total_steps=TOTAL + 1)
    assert onecycle == _trace(reference_optimizer, reference, "lr")
    assert 0.099 < max(onecycle) <= 0.1  # peaks at (about: steps are whole) the initial lr


def test_hypergrad_cosine_decays_beta_to_zero_and_leaves_the_lr_to_hd():
    parameter = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    optimizer = hypergrad.AdamHD([parameter], lr=1e-2, hypergrad_lr=1e-3)
    scheduler = build_schedule("hypergrad_cosine", optimizer, 5, TOTAL)
    betas = [1e-3]
    for _ in range(TOTAL):
        optimizer.zero_grad()
        (parameter ** 2).sum().backward()
        optimizer.step()
        scheduler.step()
        betas.append(float(optimizer.param_groups[0]["hypergrad_lr"]))
    assert betas == pytest.approx([5e-4 * (1 + math.cos(math.pi * t / TOTAL)) for t in range(TOTAL + 1)], abs=1e-18)
    assert float(optimizer.param_groups[0]["lr"]) != 1e-2  # the lr itself adapts


def test_unknown_schedule_names_the_choices():
    assert set(LR_SCHEDULES) < set(SCHEDULES)
    with pytest.raises(ValueError, match="schedule must be one of"):
        build_schedule("linear", _sgd(), 5, TOTAL)
