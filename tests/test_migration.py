"""Checkpoints across torch.optim and the HD twins, in both directions, and what a state_dict
must hold to load: a refused one names the group or parameter and leaves the optimizer as it was."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import hypergrad
from cases import BASE_FLAGS, TinyNet, flag_id, make_batches, one_per_base_rule, same, train

MIGRATIONS = [(case, flags) for case in one_per_base_rule() for flags in BASE_FLAGS[case.base]]
MIGRATION_IDS = [f"{case.fast.__name__}-{flag_id(flags)}" for case, flags in MIGRATIONS]


def _assert_same_parameters(first: torch.nn.Module, second: torch.nn.Module) -> None:
    for ours, theirs in zip(first.parameters(), second.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case, flags", MIGRATIONS, ids=MIGRATION_IDS)
def test_torch_checkpoint_continues_in_the_twin_like_torch(case, flags):
    """A torch.optim state_dict loads into the HD twin, which takes its hypergradient keys from its
    constructor (here hypergrad_lr=0) and continues exactly like torch.optim."""
    batches = make_batches(8)
    torch_model = TinyNet()
    base = case.base(torch_model.parameters(), lr=case.settings["lr"], **flags)
    train(torch_model, base, batches[:4])

    model = TinyNet()
    model.load_state_dict(torch_model.state_dict())
    optimizer = case.fast(model.parameters(), lr=1.0, hypergrad_lr=0.0, lr_bounds=(0.0, 2.0), **flags)
    optimizer.load_state_dict(copy.deepcopy(base.state_dict()))  # as from a file: no shared buffers
    group = optimizer.param_groups[0]
    assert (group["lr"], group["hypergrad_lr"], group["lr_bounds"]) == (case.settings["lr"], 0.0, (0.0, 2.0))

    assert train(model, optimizer, batches[4:]) == [case.settings["lr"]] * 4
    train(torch_model, base, batches[4:])
    _assert_same_parameters(model, torch_model)


@pytest.mark.parametrize("case, flags", MIGRATIONS, ids=MIGRATION_IDS)
def test_twin_checkpoint_continues_in_torch_like_the_twin(case, flags):
    """An HD state_dict loads into torch.optim, which continues at the adapted lr exactly like the
    twin does with hypergrad_lr switched to 0."""
    batches = make_batches(8)
    model = TinyNet()
    optimizer = case.fast(model.parameters(), lr=case.settings["lr"], **flags)
    train(model, optimizer, batches[:4])
    optimizer.param_groups[0]["hypergrad_lr"] = 0.0

    torch_model = TinyNet()
    torch_model.load_state_dict(model.state_dict())
    base = case.base(torch_model.parameters(), lr=case.settings["lr"], **flags)
    base.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert train(torch_model, base, batches[4:]) == train(model, optimizer, batches[4:])
    _assert_same_parameters(model, torch_model)


def test_torch_checkpoint_takes_each_groups_own_settings():
    """The keys come from this optimizer's own group: per-group overrides survive the load, and the
    rate then adapts from the loaded one."""
    model = TinyNet()
    base = torch.optim.Adam([{"params": model.hidden.parameters()}, {"params": model.out.parameters()}], lr=0.01)
    train(model, base, make_batches(3))
    optimizer = hypergrad.AdamHD(
        [{"params": model.hidden.parameters(), "hypergrad_lr": 1e-3}, {"params": model.out.parameters()}],
        lr=0.5, hypergrad_lr=0.0,
    )
    optimizer.load_state_dict(copy.deepcopy(base.state_dict()))  # as from a file: no shared buffers
    assert [g["hypergrad_lr"] for g in optimizer.param_groups] == [1e-3, 0.0]
    lrs = train(model, optimizer, make_batches(2))
    assert lrs[0] != 0.01 and optimizer.param_groups[1]["lr"] == 0.01


# -- refused state_dicts -----------------------------------------------------------------------
def _trained(case, **settings):
    model = TinyNet()
    optimizer = case.fast(model.parameters(), **{**case.settings, "hypergrad_lr": 1e-4, **settings})
    train(model, optimizer, make_batches(3))
    return model, optimizer


def _assert_same_state_dict(first: dict, second: dict) -> None:
    assert same(first["param_groups"], second["param_groups"])
    assert first["state"].keys() == second["state"].keys()
    for key, state in first["state"].items():
        assert state.keys() == second["state"][key].keys()
        for name, value in state.items():
            other = second["state"][key][name]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other


def _assert_refused(optimizer, state_dict, error, match):
    before = copy.deepcopy(optimizer.state_dict())
    with pytest.raises(error, match=match):
        optimizer.load_state_dict(state_dict)
    _assert_same_state_dict(optimizer.state_dict(), before)


GROUP_CORRUPTIONS = {
    "nan-lr": (dict(lr=math.nan), ValueError, "param group 0.*lr"),
    "string-lr": (dict(lr="0.1"), TypeError, "param group 0.*lr"),
    "negative-hypergrad_lr": (dict(hypergrad_lr=-1.0), ValueError, "param group 0.*hypergrad_lr"),
    "unknown-rule": (dict(hypergrad_rule="exponential"), ValueError, "param group 0.*hypergrad_rule"),
    "unknown-granularity": (dict(granularity="layer"), ValueError, "param group 0.*granularity"),
    "missing-hypergrad_lr": (dict(hypergrad_lr=None), ValueError, "param group 0.*hypergrad_lr"),
    "nan-weight_decay": (dict(weight_decay=math.nan), ValueError, "param group 0.*weight_decay"),
}


@pytest.mark.parametrize("corruption", list(GROUP_CORRUPTIONS))
@pytest.mark.parametrize("case", one_per_base_rule(), ids=lambda case: case.fast.__name__)
def test_a_bad_group_is_refused_on_load_and_nothing_changes(case, corruption):
    _, optimizer = _trained(case)
    state_dict = copy.deepcopy(optimizer.state_dict())
    changes, error, match = GROUP_CORRUPTIONS[corruption]
    for key, value in changes.items():
        if value is None:
            del state_dict["param_groups"][0][key]
        else:
            state_dict["param_groups"][0][key] = value
    _assert_refused(optimizer, state_dict, error, match)


STATEFUL = {  # settings with which every parameter's state holds a parameter-shaped buffer
    "SGDHD": dict(momentum=0.9), "AdamHD": {}, "AdamWHD": {}, "AdagradHD": {}, "RMSpropHD": dict(momentum=0.5),
}


@pytest.mark.parametrize("case", one_per_base_rule(), ids=lambda case: case.fast.__name__)
def test_a_state_buffer_of_the_wrong_shape_is_refused(case):
    _, optimizer = _trained(case, **STATEFUL[case.fast.__name__])
    state_dict = copy.deepcopy(optimizer.state_dict())
    name = next(k for k, v in state_dict["state"][1].items() if isinstance(v, torch.Tensor) and v.dim() > 0)
    state_dict["state"][1][name] = torch.zeros(7, dtype=torch.float64)
    _assert_refused(optimizer, state_dict, ValueError, f"parameter 1 of param group 0.*{name}")


@pytest.mark.parametrize(
    "case, buffer",
    [(case, buffer) for case in one_per_base_rule() for buffer in
     {"AdamHD": ["exp_avg", "exp_avg_sq", "step"], "AdamWHD": ["exp_avg_sq"], "AdagradHD": ["sum"],
      "RMSpropHD": ["square_avg", "momentum_buffer"]}.get(case.fast.__name__, [])],
    ids=str,
)
def test_a_missing_state_buffer_is_refused(case, buffer):
    _, optimizer = _trained(case, **STATEFUL[case.fast.__name__])
    state_dict = copy.deepcopy(optimizer.state_dict())
    del state_dict["state"][2][buffer]
    _assert_refused(optimizer, state_dict, ValueError, f"parameter 2 of param group 0.*{buffer}")


def test_a_partial_set_of_hypergradient_keys_is_refused():
    _, optimizer = _trained(one_per_base_rule()[0])
    state_dict = copy.deepcopy(optimizer.state_dict())
    del state_dict["param_groups"][0]["granularity"]
    _assert_refused(optimizer, state_dict, ValueError, "granularity")


# -- LambdaHypergradLR ---------------------------------------------------------------------------
def _two_group_schedule(factor_of_group_1=lambda t: 1.0):
    model = TinyNet()
    optimizer = hypergrad.SGDHD(
        [{"params": model.hidden.parameters()}, {"params": model.out.parameters()}], lr=0.05, hypergrad_lr=1e-2
    )
    return optimizer, hypergrad.LambdaHypergradLR(optimizer, [lambda t: 0.5**t, factor_of_group_1])


@pytest.mark.parametrize(
    "state_dict, match",
    [
        ({"last_step": 3, "base_hypergrad_lrs": [1e-2]}, "base_hypergrad_lrs"),
        ({"last_step": 3, "base_hypergrad_lrs": [1e-2, math.nan]}, r"base_hypergrad_lrs\[1\]"),
        ({"last_step": 3, "base_hypergrad_lrs": [1e-2, -1.0]}, r"base_hypergrad_lrs\[1\]"),
        ({"last_step": -5, "base_hypergrad_lrs": [1e-2, 1e-2]}, "last_step"),
    ],
)
def test_lambda_hypergrad_lr_refuses_a_bad_state_dict(state_dict, match):
    _, schedule = _two_group_schedule()
    before = schedule.state_dict()
    with pytest.raises(ValueError, match=match):
        schedule.load_state_dict(state_dict)
    assert schedule.state_dict() == before


def test_lambda_hypergrad_lr_step_writes_every_group_or_none():
    optimizer, schedule = _two_group_schedule(lambda t: math.nan if t == 2 else 1.0)
    schedule.step()
    before = [g["hypergrad_lr"] for g in optimizer.param_groups]
    with pytest.raises(ValueError, match="param group 1"):
        schedule.step()
    assert [g["hypergrad_lr"] for g in optimizer.param_groups] == before
    assert schedule.last_step == 1
