"""The learning-rate change is exactly -hypergrad_lr times the hypergradient.

alpha_t - alpha_{t-1} must equal -beta * dJ_t(theta_{t-1}(alpha)) / d alpha at alpha = alpha_{t-1},
where theta_{t-1}(alpha) is the *torch.optim* base step from the state at t-2 taken with learning
rate alpha and J_t is the objective the base rule descends on batch t (the loss, negated with
maximize, plus weight_decay/2 |theta|^2). The derivative comes from a central finite difference in
float64, independent of the package's own arithmetic.
"""

from __future__ import annotations

import copy

import pytest
import torch

import hypergrad
from conftest import TinyNet, batch_loss, make_batches, train

STEPS_BEFORE = 4  # steps t-2 taken before the snapshot

CASES = {
    "sgd": (hypergrad.SGDHD, torch.optim.SGD, dict(lr=0.05, hypergrad_lr=1e-2)),
    "sgd-wd-maximize": (hypergrad.SGDHD, torch.optim.SGD, dict(lr=0.05, hypergrad_lr=1e-2, weight_decay=0.05, maximize=True)),
    "momentum": (hypergrad.SGDHD, torch.optim.SGD, dict(lr=0.02, hypergrad_lr=1e-2, momentum=0.9)),
    "momentum-dampening-wd": (hypergrad.SGDHD, torch.optim.SGD, dict(lr=0.02, hypergrad_lr=1e-2, momentum=0.8, dampening=0.3, weight_decay=0.05)),
    "nesterov": (hypergrad.SGDHD, torch.optim.SGD, dict(lr=0.02, hypergrad_lr=1e-2, momentum=0.9, nesterov=True)),
    "nesterov-wd": (hypergrad.SGDHD, torch.optim.SGD, dict(lr=0.02, hypergrad_lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.05)),
    "adam": (hypergrad.AdamHD, torch.optim.Adam, dict(lr=0.01, hypergrad_lr=1e-4)),
    "adam-wd-maximize": (hypergrad.AdamHD, torch.optim.Adam, dict(lr=0.01, hypergrad_lr=1e-4, weight_decay=0.05, maximize=True)),
    "amsgrad": (hypergrad.AdamHD, torch.optim.Adam, dict(lr=0.01, hypergrad_lr=1e-4, amsgrad=True, betas=(0.8, 0.9))),
}
BASE_KEYS = ("momentum", "dampening", "nesterov", "weight_decay", "maximize", "betas", "amsgrad")


def objective(model: torch.nn.Module, batch, settings: dict) -> torch.Tensor:
    loss = batch_loss(model, batch)
    if settings.get("maximize", False):
        loss = -loss
    decay = settings.get("weight_decay", 0.0)
    return loss + 0.5 * decay * sum(p.pow(2).sum() for p in model.parameters())


def relative_error(observed: float, expected: float) -> float:
    return abs(observed - expected) / abs(expected)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_lr_change_is_the_hypergradient(case, foreach):
    hd_cls, base_cls, settings = CASES[case]
    batches = make_batches(STEPS_BEFORE + 2)
    model = TinyNet()
    optimizer = hd_cls(model.parameters(), foreach=foreach, **settings)
    train(model, optimizer, batches[:STEPS_BEFORE])
    snapshot_params = copy.deepcopy(model.state_dict())
    snapshot_state = {name: copy.deepcopy(optimizer.state[p]) for name, p in model.named_parameters()}

    lr_previous, lr_now = train(model, optimizer, batches[STEPS_BEFORE:])

    base_settings = {k: v for k, v in settings.items() if k in BASE_KEYS}

    def next_objective(alpha: float) -> float:
        """J_t after a torch.optim base step with learning rate alpha from the state at t-2."""
        replica = TinyNet()
        replica.load_state_dict(snapshot_params)
        base = base_cls(replica.parameters(), lr=alpha, **base_settings)
        for name, p in replica.named_parameters():
            base.state[p] = copy.deepcopy(snapshot_state[name])
        base.zero_grad()
        batch_loss(replica, batches[STEPS_BEFORE]).backward()
        base.step()
        with torch.no_grad():
            return objective(replica, batches[STEPS_BEFORE + 1], settings).item()

    h = 1e-5 * lr_previous
    hypergradient = (next_objective(lr_previous + h) - next_objective(lr_previous - h)) / (2 * h)
    expected_change = -settings["hypergrad_lr"] * hypergradient
    assert relative_error(lr_now - lr_previous, expected_change) < 1e-6, (lr_now - lr_previous, expected_change)


@pytest.mark.parametrize("case", ["sgd", "nesterov", "adam"])
def test_first_step_keeps_the_initial_lr(case):
    hd_cls, _, settings = CASES[case]
    model = TinyNet()
    optimizer = hd_cls(model.parameters(), **settings)
    assert train(model, optimizer, make_batches(1)) == [settings["lr"]]
