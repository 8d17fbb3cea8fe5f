"""Tests of discriminative (layer-wise) learning rates (hypergrad.param_groups)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hypergrad.param_groups import layerwise_param_groups


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(),
        nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3),
    )


def names_and_rates(groups):
    return [g["name"] for g in groups], [g["lr"] for g in groups]


def test_decay_spreads_rates_down_from_lr_and_head_gets_the_multiplier():
    model = mlp()
    groups = layerwise_param_groups(model, 1e-3, decay=0.5, head=model[7], head_lr_mult=10.0)
    names, rates = names_and_rates(groups)
    assert names == ["1", "3", "5", "head"]
    np.testing.assert_allclose(rates, [0.25e-3, 0.5e-3, 1e-3, 1e-2], rtol=1e-15)
    assert groups[-1]["params"] == list(model[7].parameters())


def test_lr_range_is_geometric_like_fastai_slice():
    model = mlp()
    groups = layerwise_param_groups(model, lr_range=(1e-6, 1e-3), head="7", head_lr_mult=3.0)
    names, rates = names_and_rates(groups)
    assert names == ["1", "3", "5", "head"]
    np.testing.assert_allclose(rates[:3], np.geomspace(1e-6, 1e-3, 3), rtol=1e-12)
    assert rates[3] == pytest.approx(3e-3)


def test_lr_alone_gives_one_rate_and_no_head_means_no_head_group():
    model = mlp()
    names, rates = names_and_rates(layerwise_param_groups(model, 0.1))
    assert names == ["1", "3", "5", "7"]
    assert rates == [0.1] * 4


def test_every_trainable_parameter_once_and_frozen_ones_left_out():
    model = mlp()
    for p in model[1].parameters():
        p.requires_grad_(False)
    groups = layerwise_param_groups(model, 1e-3, decay=0.3, head=model[7])
    ids = [id(p) for g in groups for p in g["params"]]
    expected = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    assert [g["name"] for g in groups] == ["3", "5", "head"]


def test_wrapper_is_looked_through_and_root_parameters_come_first():
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x)

    class WithRootParameter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(12))
            self.encoder = nn.Linear(12, 8)
            self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(8, 3))

        def forward(self, x):
            return self.classifier(self.encoder(x * self.scale))

    names, _ = names_and_rates(layerwise_param_groups(Wrapped(), 1e-3, head="net.7"))
    assert names == ["net.1", "net.3", "net.5", "head"]
    model = WithRootParameter()
    groups = layerwise_param_groups(model, 1e-3, decay=0.5, head=model.classifier[1])
    names, rates = names_and_rates(groups)
    # The head sits inside "classifier", which is then empty and dropped.
    assert names == ["<root>", "encoder", "head"]
    np.testing.assert_allclose(rates, [0.5e-3, 1e-3, 1e-2])
    assert groups[0]["params"] == [model.scale]


def test_groups_drive_a_torch_optimizer_at_their_own_rates():
    model = mlp()
    groups = layerwise_param_groups(model, 0.1, decay=0.1, head=model[7])
    optimizer = torch.optim.SGD(groups)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(16, 12)
    nn.functional.cross_entropy(model(x), torch.randint(0, 3, (16,))).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    rate_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    for p, p0, g in zip(model.parameters(), before, grads, strict=True):
        torch.testing.assert_close(p.detach(), p0 - rate_of[id(p)] * g, rtol=0, atol=1e-7)
    assert [g["name"] for g in optimizer.param_groups] == ["1", "3", "5", "head"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"lr": 1e-3, "lr_range": (1e-5, 1e-3)}, "exactly one"),
        ({"lr": 0.0}, "lr must"),
        ({"lr": float("nan")}, "lr must"),
        ({"lr": 1e-3, "decay": 0.0}, "decay"),
        ({"lr": 1e-3, "decay": 1.5}, "decay"),
        ({"lr_range": (1e-5, 1e-3), "decay": 0.5}, "decay"),
        ({"lr_range": (1e-3, 1e-5)}, "lr_range"),
        ({"lr_range": (0.0, 1e-3)}, "lr_range"),
        ({"lr_range": (1e-3,)}, "lr_range"),
        ({"lr": 1e-3, "head_lr_mult": 0.0}, "head_lr_mult"),
        ({"lr": 1e-3, "head": "classifier"}, "not a submodule"),
        ({"lr": 1e-3, "head": nn.Linear(2, 2)}, "submodule"),
        ({"lr": 1e-3, "head": "2"}, "no trainable"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layerwise_param_groups(mlp(), **kwargs)


def test_model_without_trainable_parameters_raises():
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        layerwise_param_groups(model, 1e-3)
