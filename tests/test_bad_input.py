"""Every argument of every optimizer (and AdaptiveGainSGD, and the helpers) is checked at
construction and in add_param_group, with a TypeError or ValueError naming it; a refused group
leaves the optimizer as it was."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import hypergrad
from cases import TinyNet, batch_loss, make_batches, one_per_base_rule, same, train

# Each class's own arguments, with values of the wrong type and values out of range.
BAD_BASE_ARGUMENTS = {
    hypergrad.SGDHD: {"momentum": ["0.9", math.nan, -0.1, math.inf], "dampening": ["0", math.nan, 1.5],
                      "weight_decay": ["0", math.nan, -1.0]},
    hypergrad.AdamHD: {"betas": ["ab", (0.9, "0.99"), (0.9,), (0.9, 0.99, 0.999), (math.nan, 0.9), (0.9, 1.0)],
                       "eps": ["1e-8", math.nan, -1.0], "weight_decay": ["0", math.nan, -1.0]},
    hypergrad.AdamWHD: {"betas": [0.9, (0.9, 0.99, 0.999), (-0.1, 0.9)], "eps": [math.nan], "weight_decay": ["0"]},
    hypergrad.AdagradHD: {"lr_decay": ["0", math.nan, -1.0], "initial_accumulator_value": ["0", math.nan, -0.1],
                          "eps": ["0", math.nan, -1.0], "weight_decay": ["0", -1.0]},
    hypergrad.RMSpropHD: {"alpha": ["0.9", math.nan, 1.5], "eps": ["0", -1.0], "momentum": ["0", math.nan, -0.5],
                          "weight_decay": [math.nan]},
    hypergrad.AdaptiveGainSGD: {"lr": ["0.1", math.nan, -1.0], "momentum": ["0", math.nan, -1.0],
                                "gain_increase": ["0.05", math.nan, -0.1], "gain_decrease": ["0.9", math.nan, 0.0, 1.5],
                                "gain_bounds": ["ab", (0.1, "10"), (0.1,), (0.0, 10.0), (2.0, 10.0)],
                                "weight_decay": ["0", math.nan]},
}
BAD_HYPERGRAD_ARGUMENTS = {
    "lr": ["0.1", math.nan, -1.0, torch.tensor([0.1, 0.2]), torch.tensor(1)],
    "hypergrad_lr": ["1e-3", math.nan, -1.0],
    "lr_bounds": [("0", 1.0), (0.0, "1"), (-0.1, 1.0), (1.0, 0.1), (0.1,)],
    "hypergrad_rule": ["exponential"],
    "granularity": ["layer"],
    "lr_limit": ["0.01", -1.0, math.nan],
    "lr_limit_power": ["2", 1.0, math.nan],
}
CASES_BY_CLASS = {case.fast: case for case in one_per_base_rule()}


def _bad_arguments():
    for cls, arguments in BAD_BASE_ARGUMENTS.items():
        for name, values in arguments.items():
            for value in values:
                yield pytest.param(cls, name, value, id=f"{cls.__name__}-{name}={value!r}")
    for cls in CASES_BY_CLASS:
        for name, values in BAD_HYPERGRAD_ARGUMENTS.items():
            for value in values:
                yield pytest.param(cls, name, value, id=f"{cls.__name__}-{name}={value!r}")


def _optimizer(cls, params, **settings):
    if cls is hypergrad.AdaptiveGainSGD:
        return cls(params, lr=0.05, **settings)
    return CASES_BY_CLASS[cls].make(params, **settings)


@pytest.mark.parametrize("cls, name, value", list(_bad_arguments()))
def test_a_bad_argument_is_refused_naming_it(cls, name, value):
    with pytest.raises((TypeError, ValueError), match=name):
        _optimizer(cls, [torch.nn.Parameter(torch.zeros(3))], **{name: value})


@pytest.mark.parametrize("cls, name, value", list(_bad_arguments()))
def test_a_bad_group_is_refused_naming_it_and_nothing_changes(cls, name, value):
    model = TinyNet()
    optimizer = _optimizer(cls, model.hidden.parameters())
    train(model, optimizer, make_batches(2))
    before = copy.deepcopy(optimizer.state_dict())
    with pytest.raises((TypeError, ValueError), match=name):
        optimizer.add_param_group({"params": list(model.out.parameters()), name: value})
    assert len(optimizer.param_groups) == 1
    assert same(optimizer.state_dict()["param_groups"], before["param_groups"])
    train(model, optimizer, make_batches(1))  # still steps


@pytest.mark.parametrize("cls", [*CASES_BY_CLASS, hypergrad.AdaptiveGainSGD], ids=lambda cls: cls.__name__)
def test_the_same_parameter_twice_in_a_group_is_refused(cls):
    weight = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="params.*index 1.*index 0"):
        _optimizer(cls, [weight, weight])
    optimizer = _optimizer(cls, [torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="params"):
        optimizer.add_param_group({"params": [weight, weight]})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize("cls", list(CASES_BY_CLASS), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("lr", [0.5, 1e-6])
def test_an_initial_lr_outside_lr_bounds_is_clipped_into_them(cls, lr):
    """Every step's rate lies inside lr_bounds, the first one too, as in the reference twin."""
    case = CASES_BY_CLASS[cls]
    models = [TinyNet(), TinyNet()]
    settings = dict(lr=lr, lr_bounds=(1e-3, 0.02))
    fast = case.make(models[0].parameters(), **settings)
    reference = case.make_reference(models[1].parameters(), **settings)
    assert fast.param_groups[0]["lr"] == min(max(lr, 1e-3), 0.02)
    assert train(models[0], fast, make_batches(4)) == pytest.approx(train(models[1], reference, make_batches(4)))
    for ours, theirs in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


# -- the helpers ---------------------------------------------------------------------------------
def _loss(outputs, targets):
    return torch.nn.functional.mse_loss(outputs, targets)


def test_find_lr_replays_a_one_shot_generator():
    model = TinyNet()
    optimizer = hypergrad.SGDHD(model.parameters(), lr=0.01)
    batches = make_batches(3)
    result = hypergrad.find_lr(model, optimizer, _loss, (b for b in batches), num_iter=20, diverge_factor=math.inf)
    assert len(result.lrs) == 20
    replayed = hypergrad.find_lr(model, optimizer, _loss, batches, num_iter=20, diverge_factor=math.inf)
    assert result.raw_losses == replayed.raw_losses  # the same batches, in the same order


@pytest.mark.parametrize("name", ["start_lr", "end_lr", "smooth", "diverge_factor"])
def test_find_lr_names_a_non_numeric_argument(name):
    model = TinyNet()
    with pytest.raises(TypeError, match=name):
        hypergrad.find_lr(model, hypergrad.SGDHD(model.parameters()), _loss, make_batches(3), **{name: "1e-7"})


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(lr="1e-3"), "lr"), (dict(lr=1e-3, decay="0.5"), "decay"), (dict(lr_range=("1e-5", 1e-3)), "lr_range"),
     (dict(lr=1e-3, head_lr_mult="10"), "head_lr_mult")],
)
def test_layerwise_param_groups_names_a_non_numeric_argument(kwargs, name):
    with pytest.raises(TypeError, match=name):
        hypergrad.layerwise_param_groups(TinyNet(), **kwargs)


def test_learning_rates_leave_out_frozen_parameters():
    model = TinyNet()
    model.hidden.requires_grad_(False)
    optimizer = hypergrad.SGDHD(hypergrad.layerwise_param_groups(model, lr=0.05), hypergrad_lr=1e-2)
    optimizer.zero_grad()
    batch_loss(model, make_batches(1)[0]).backward()
    optimizer.step()
    assert set(optimizer.learning_rates(model.named_parameters())) == {"out.weight", "out.bias"}
    stray = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="stray"):
        optimizer.learning_rates([("stray", stray)])
