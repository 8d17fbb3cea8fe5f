"""accelerate drives an HD optimizer as a plain loop does: ``prepare``, ``accumulate`` (the rate
moves on the steps that synchronise only), ``clip_grad_norm_``, and ``save_state``/``load_state``
restore the rate and the run exactly. ``hypergrad.learning_rates`` reads through the
``AcceleratedOptimizer``."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import hypergrad
from cases import TinyNet, make_batches

accelerate = pytest.importorskip("accelerate", reason="accelerate is not installed (pip install torch-hypergrad[integrations])")

STEPS = 8  # batches; with accumulation over 2, 4 optimizer steps


def make(net: torch.nn.Module) -> hypergrad.AdamHD:
    return hypergrad.AdamHD(net.parameters(), lr=0.01, hypergrad_lr=1e-3)


def loader() -> torch.utils.data.DataLoader:
    batches = make_batches(STEPS, torch.float32)
    data = torch.utils.data.TensorDataset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
    return torch.utils.data.DataLoader(data, batch_size=8, shuffle=False)


def loss_of(net: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(net(x), y)


def accelerated(batches: range, *, state_in: str | None = None, state_out: str | None = None) -> tuple[Any, Any, list[float]]:
    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
    net = accelerator.prepare(TinyNet(torch.float32))
    optimizer, data = accelerator.prepare(make(net), loader())
    if state_in is not None:
        accelerator.load_state(state_in)
    rates = []
    for index, batch in enumerate(data):
        if index not in batches:
            continue
        with accelerator.accumulate(net):
            accelerator.backward(loss_of(net, batch))
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(net.parameters(), 0.5)
            optimizer.step()
            optimizer.zero_grad()
        rates.append(float(optimizer.param_groups[0]["lr"]))
    if state_out is not None:
        accelerator.save_state(state_out)
    accelerator.free_memory()
    return net, optimizer, rates


def test_prepare_accumulate_clip_as_a_plain_loop():
    net, optimizer, rates = accelerated(range(STEPS))
    assert not isinstance(optimizer, hypergrad.HypergradOptimizer)
    plain = TinyNet(torch.float32)
    reference = make(plain)
    expected = []
    for index, batch in enumerate(loader()):
        (loss_of(plain, batch) / 2).backward()
        if index % 2:
            torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
            reference.step()
            reference.zero_grad()
        expected.append(reference.param_groups[0]["lr"])
    assert rates == expected
    assert rates[0] == rates[1] == rates[2] == 0.01  # no previous direction before the second step
    assert rates[3] != rates[2] and rates[4] == rates[3] and rates[5] != rates[4]  # moves on sync steps only
    for a, b in zip(net.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    named = list(net.named_parameters())
    assert hypergrad.learning_rates(optimizer, named) == {name: rates[-1] for name, _ in named}


def test_save_state_load_state_is_exact(tmp_path):
    whole, _, whole_rates = accelerated(range(STEPS))
    _, _, first_rates = accelerated(range(STEPS // 2), state_out=str(tmp_path / "state"))
    resumed, _, resumed_rates = accelerated(range(STEPS // 2, STEPS), state_in=str(tmp_path / "state"))
    assert first_rates + resumed_rates == whole_rates
    assert len(set(whole_rates)) > 2
    for a, b in zip(resumed.parameters(), whole.parameters()):
        assert torch.equal(a, b)
