"""A group's hypergradient state is one record (``hypergrad/_rates.py``): no other key appears in a
param group or a parameter's state whatever the granularity, rule, scheduler or blend, and an
optimizer pickled by release 0.1.0 (its state in loose keys) unpickles into the record and steps
on as 0.1.0 did."""

from __future__ import annotations

import copy

import pytest
import torch

from cases import TinyNet, make_batches, one_per_base_rule, train
from fixtures.make_checkpoints import FIXTURE, build, rates, step

KEY = "hypergrad_state"


@pytest.mark.parametrize("scheduled", [False, True], ids=["unscheduled", "scheduled"])
@pytest.mark.parametrize("settings", [
    dict(), dict(hypergrad_rule="additive", lr_limit=0.01), dict(granularity="tensor", lr_limit=0.01),
    dict(granularity="element", hypergrad_rule="multiplicative", hypergrad_lr=0.1),
], ids=["scalefree", "additive-blend", "tensor-blend", "element-multiplicative"])
def test_nothing_but_the_record_is_added(settings, scheduled):
    for case in one_per_base_rule():
        model = TinyNet()
        optimizer = case.make(model.parameters(), **settings)
        keys = set(optimizer.param_groups[0]) | {KEY}
        state_keys = set()
        if scheduled:
            torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
            keys |= {"initial_lr"}
        for batch in make_batches(4):
            train(model, optimizer, [batch])
            state_keys |= {key for state in optimizer.state.values() for key in state}
        assert set(optimizer.param_groups[0]) == keys, case.fast.__name__
        assert set(optimizer.param_groups[0][KEY]) <= {"factor", "memory", "step", "base_lr", "settings"}
        per_parameter = settings.get("granularity", "group") != "group"
        assert (KEY in state_keys) == per_parameter, case.fast.__name__
        assert not state_keys & {"lr_scale", "hypergrad_memory", "hypergrad_idle"}


def test_a_state_dict_keeps_the_numbers_of_when_it_was_taken():
    """As torch.optim's: a group's float values are copied, so later steps do not change them."""
    model = TinyNet()
    optimizer = one_per_base_rule()[0].make(model.parameters(), hypergrad_rule="additive", hypergrad_lr=0.01)
    torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    train(model, optimizer, make_batches(3))
    saved = optimizer.state_dict()
    factor, lr = saved["param_groups"][0][KEY]["factor"], saved["param_groups"][0]["lr"]
    train(model, optimizer, make_batches(5)[3:])
    assert optimizer.param_groups[0][KEY]["factor"] != factor
    assert saved["param_groups"][0][KEY]["factor"] == factor and saved["param_groups"][0]["lr"] == lr


SAVED = torch.load(FIXTURE, weights_only=True)["checkpoints"]


@pytest.mark.parametrize("name", ["sgd-blend", "sgd-scheduled", "adam-element", "sgd-tensor", "adam"])
def test_an_optimizer_pickled_by_0_1_0_unpickles_into_the_record(name):
    """``__setstate__`` is what unpickling calls: the 0.1.0 state dict's groups and states,
    mapped onto the parameters as a pickle holds them."""
    checkpoint = copy.deepcopy(SAVED[name])
    params = [p.clone().requires_grad_() for p in checkpoint["params"]]
    optimizer, scheduler = build(checkpoint["case"], params)
    saved = checkpoint["optimizer"]
    groups = [{**group, "params": [params[i] for i in group["params"]]} for group in saved["param_groups"]]
    optimizer.__setstate__({"state": {params[i]: state for i, state in saved["state"].items()},
                            "param_groups": groups, "defaults": optimizer.defaults})
    assert all(not key.startswith("lr_s") and key != "lr_hd" for group in optimizer.param_groups for key in group)
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    replay = checkpoint["replay"][0]
    step(optimizer, scheduler, params, replay["batch"], replay["grads"])
    for ours, theirs in zip(params, replay["params"]):
        torch.testing.assert_close(ours.detach(), theirs, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(rates(optimizer, params)["learning_rates"], replay["learning_rates"],
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("scheduled", [False, True], ids=["unscheduled", "scheduled"])
@pytest.mark.parametrize("settings", [dict(lr_limit=0.01), dict(hypergrad_rule="additive", hypergrad_lr=0.01),
                                      dict(granularity="tensor", lr_limit=0.01)], ids=["blend", "additive", "tensor"])
def test_a_tensor_lr_keeps_its_record_in_place_and_steps_as_a_float(settings, scheduled):
    """The accelerator path (a 0-dim tensor rate, written in place) on the CPU: the same numbers as
    a float rate, and the group's factor one tensor that each step writes into."""
    runs = []
    for lr in (0.05, torch.tensor(0.05, dtype=torch.float64)):
        model = TinyNet()
        optimizer = one_per_base_rule()[0].make(model.parameters(), lr=lr, **settings)
        if scheduled:
            torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
        train(model, optimizer, make_batches(3))
        factor = optimizer.param_groups[0][KEY].get("factor")
        train(model, optimizer, make_batches(6)[3:])
        if isinstance(lr, torch.Tensor) and factor is not None:
            assert isinstance(factor, torch.Tensor) and optimizer.param_groups[0][KEY]["factor"] is factor
        runs.append((list(model.parameters()), optimizer.learning_rates(model.named_parameters())))
    (params, rates), (tensor_params, tensor_rates) = runs
    for ours, theirs in zip(tensor_params, params):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15)
    for name in rates:
        torch.testing.assert_close(torch.as_tensor(tensor_rates[name]), torch.as_tensor(rates[name]), rtol=1e-12, atol=0.0)
