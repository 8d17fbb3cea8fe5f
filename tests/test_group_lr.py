"""One learning rate per param group, from one dot product over the group, once per step."""

from __future__ import annotations

import pytest
import torch

import hypergrad
import hypergrad._rates
from cases import TinyNet, batch_loss, make_batches, train


def _groups(model: TinyNet, **second_group):
    return [
        {"params": model.hidden.parameters()},
        {"params": model.out.parameters(), **second_group},
    ]


@pytest.mark.parametrize("cls", [hypergrad.SGDHD, hypergrad.AdamHD])
def test_each_group_adapts_its_own_lr_from_its_own_parameters(cls):
    batches = make_batches(6)
    model = TinyNet()
    optimizer = cls(_groups(model, lr=0.02, hypergrad_lr=2e-3), lr=0.05, hypergrad_lr=1e-3, hypergrad_rule="additive")
    assert optimizer.param_groups[1]["hypergrad_lr"] == 2e-3
    train(model, optimizer, batches[:3])
    for batch in batches[3:]:
        # u_{t-1} of SGD-HD is the stored direction; of Adam-HD, recomputed by the reference formula
        previous = [_previous_direction(optimizer, p) for p in model.parameters()]
        lrs_before = [group["lr"] for group in optimizer.param_groups]
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
        for index, (group, lr_before) in enumerate(zip(optimizer.param_groups, lrs_before)):
            members = [i for i, p in enumerate(model.parameters()) if any(p is q for q in group["params"])]
            dot = sum(float((grads[i] * previous[i]).sum()) for i in members)
            assert group["lr"] == pytest.approx(lr_before + group["hypergrad_lr"] * dot, rel=1e-12)


def _previous_direction(optimizer, p):
    state = optimizer.state[p]
    if "hypergrad_direction" in state:
        return state["hypergrad_direction"].clone()
    beta1, beta2 = optimizer.defaults["betas"]
    t = state["step"].item()
    m_hat = state["exp_avg"] / (1 - beta1**t)
    v_hat = state["exp_avg_sq"] / (1 - beta2**t)
    return m_hat / (v_hat.sqrt() + optimizer.defaults["eps"])


@pytest.mark.parametrize("cls", [hypergrad.SGDHD, hypergrad.AdamHD])
def test_lr_changes_once_per_group_per_step(cls, monkeypatch):
    calls = []
    real = hypergrad._rates.updated_lr
    monkeypatch.setattr(hypergrad._rates, "updated_lr", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = TinyNet()
    optimizer = cls(_groups(model), lr=0.01, hypergrad_lr=1e-3)
    train(model, optimizer, make_batches(5))
    assert len(calls) == 2 * 4  # two groups, every step but the first (no previous direction)


@pytest.mark.parametrize("cls", [hypergrad.SGDHD, hypergrad.AdamHD])
def test_group_with_zero_hypergrad_lr_keeps_its_lr(cls):
    model = TinyNet()
    optimizer = cls(_groups(model, hypergrad_lr=0.0, lr=0.03), lr=0.01, hypergrad_lr=1e-2)
    train(model, optimizer, make_batches(8))
    assert optimizer.param_groups[1]["lr"] == 0.03
    assert optimizer.param_groups[0]["lr"] != 0.01


@pytest.mark.parametrize("cls", [hypergrad.SGDHD, hypergrad.AdamHD])
def test_parameters_without_grad_or_elements_are_skipped(cls):
    model = TinyNet()
    frozen = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    empty = torch.nn.Parameter(torch.zeros(0, dtype=torch.float64))
    empty.grad = torch.zeros(0, dtype=torch.float64)
    optimizer = cls([*model.parameters(), frozen, empty], lr=0.01, hypergrad_lr=1e-3)
    reference_model = TinyNet()
    reference = cls(reference_model.parameters(), lr=0.01, hypergrad_lr=1e-3)
    batches = make_batches(6)
    assert train(model, optimizer, batches) == train(reference_model, reference, batches)
    assert frozen.grad is None and torch.equal(frozen, torch.ones(3, dtype=torch.float64))
    assert frozen not in optimizer.state and empty not in optimizer.state


def test_lr_reads_as_float_whether_float_or_tensor():
    model = TinyNet()
    optimizer = hypergrad.SGDHD(_groups(model, lr=torch.tensor(0.02, dtype=torch.float64)), lr=0.01, hypergrad_lr=1e-2)
    lrs = train(model, optimizer, make_batches(4))
    assert isinstance(optimizer.param_groups[0]["lr"], float)
    assert isinstance(optimizer.param_groups[1]["lr"], torch.Tensor)
    assert float(optimizer.param_groups[1]["lr"]) != 0.02 and lrs[-1] != 0.01
