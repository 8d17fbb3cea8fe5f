"""state_dict round trips continue bit for bit; deepcopy works."""

from __future__ import annotations

import copy

import pytest
import torch

from cases import TinyNet, make_batches, pick, train

OPTIMIZERS = pick(
    "sgd", "nesterov", "momentum-multiplicative", "adam", "amsgrad-foreach", "adamw-per-weight",
    "adagrad-per-tensor-blend", "rmsprop-momentum-blend", "schedulefree-adamw", "schedulefree-sgd",
)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resume_from_checkpoint_is_bit_for_bit(name, tmp_path):
    make = OPTIMIZERS[name].make
    batches = make_batches(16)

    model = TinyNet()
    optimizer = make(model.parameters())
    uninterrupted_lrs = train(model, optimizer, batches)

    first = TinyNet()
    first_optimizer = make(first.parameters())
    lrs = train(first, first_optimizer, batches[:8])
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": first.state_dict(), "optimizer": first_optimizer.state_dict()}, path)

    checkpoint = torch.load(path, weights_only=True)
    resumed = TinyNet()
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = make(resumed.parameters())
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    assert resumed_optimizer.param_groups[0]["lr"] == first_optimizer.param_groups[0]["lr"]
    lrs += train(resumed, resumed_optimizer, batches[8:])

    assert lrs == uninterrupted_lrs
    for ours, theirs in zip(resumed.parameters(), model.parameters()):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_deepcopy_of_model_and_optimizer_continues_like_the_original(name):
    batches = make_batches(10)
    model = TinyNet()
    optimizer = OPTIMIZERS[name].make(model.parameters())
    train(model, optimizer, batches[:5])
    model_copy, optimizer_copy = copy.deepcopy((model, optimizer))
    assert all(any(p is q for q in model_copy.parameters()) for p in optimizer_copy.param_groups[0]["params"])
    assert train(model_copy, optimizer_copy, batches[5:]) == train(model, optimizer, batches[5:])
    for ours, theirs in zip(model_copy.parameters(), model.parameters()):
        assert torch.equal(ours, theirs)
