"""Bad input is refused with errors that name the argument; bad gradients never poison the lr."""

from __future__ import annotations

import math

import pytest
import torch

import hypergrad
from cases import TinyNet, batch_loss, make_batches, train


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(lr=float("inf")), "lr"),
        (dict(hypergrad_lr=-1e-3), "hypergrad_lr"),
        (dict(hypergrad_lr=float("nan")), "hypergrad_lr"),
        (dict(hypergrad_rule="exponential"), "hypergrad_rule"),
        (dict(hypergrad_rule="multiplicative", hypergrad_lr=1.5), "hypergrad_lr"),
        (dict(lr_bounds=(1.0, 0.1)), "lr_bounds"),
        (dict(lr_bounds=(0.1,)), "lr_bounds"),
        (dict(momentum=-0.9), "momentum"),
        (dict(dampening=2.0), "dampening"),
        (dict(weight_decay=-1e-4), "weight_decay"),
        (dict(nesterov=True), "nesterov"),
        (dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov"),
    ],
)
def test_sgd_hd_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        hypergrad.SGDHD(_params(), **kwargs)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(lr=-1e-3), "lr"),
        (dict(betas=(1.0, 0.999)), "betas"),
        (dict(betas=(0.9, -0.1)), "betas"),
        (dict(betas=(0.9,)), "betas"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(hypergrad_lr=-1e-7), "hypergrad_lr"),
        (dict(hypergrad_rule="Additive"), "hypergrad_rule"),
        (dict(lr_bounds=(1e-2, 1e-3)), "lr_bounds"),
    ],
)
def test_adam_hd_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        hypergrad.AdamHD(_params(), **kwargs)


def test_group_overrides_are_validated_too():
    with pytest.raises(ValueError, match="hypergrad_lr"):
        hypergrad.SGDHD([{"params": _params(), "hypergrad_lr": -1.0}], lr=0.1)
    optimizer = hypergrad.SGDHD(_params(), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        optimizer.add_param_group({"params": _params(), "lr": float("nan")})
    assert len(optimizer.param_groups) == 1  # a refused group is not added


def test_non_numeric_arguments_are_type_errors():
    with pytest.raises(TypeError, match="hypergrad_lr"):
        hypergrad.SGDHD(_params(), hypergrad_lr="1e-3")
    with pytest.raises(TypeError, match="lr"):
        hypergrad.AdamHD(_params(), lr="fast")


@pytest.mark.parametrize("cls", [hypergrad.SGDHD, hypergrad.AdamHD])
def test_sparse_gradients_are_refused(cls):
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = cls(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        optimizer.step()


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        lambda p, f: hypergrad.SGDHD(p, lr=0.05, hypergrad_lr=1e-2, hypergrad_rule="additive", foreach=f),
        lambda p, f: hypergrad.SGDHD(p, lr=0.05, momentum=0.9, nesterov=True, hypergrad_lr=1e-2, hypergrad_rule="additive",
                                     foreach=f),
        lambda p, f: hypergrad.SGDHD(p, lr=0.05, hypergrad_lr=0.5, hypergrad_rule="multiplicative", foreach=f),
        lambda p, f: hypergrad.AdamHD(p, lr=0.01, hypergrad_lr=1e-4, hypergrad_rule="additive", foreach=f),
    ],
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradient_leaves_lr_unchanged(make, foreach, bad):
    model = TinyNet()
    optimizer = make(model.parameters(), foreach)
    lr_before = train(model, optimizer, make_batches(3))[-1]
    optimizer.zero_grad()
    batch_loss(model, make_batches(4)[3]).backward()
    model.hidden.weight.grad[0, 0] = bad
    optimizer.step()
    assert optimizer.param_groups[0]["lr"] == lr_before
    assert math.isfinite(optimizer.param_groups[0]["lr"])
