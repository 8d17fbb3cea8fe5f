"""Checkpoints written by hypergrad 0.1.0 load into today's optimizers and continue as 0.1.0 did.

``fixtures/checkpoints_v0_1_0.pt`` was written by ``fixtures/make_checkpoints.py`` run against the
0.1.0 release (commit 344b683): for each case, the optimizer's (and lr scheduler's) state_dict after
a few float64 steps, the parameters, the next step's gradients, and the parameters and rates 0.1.0
produced with them. Today's class loads the state_dict, takes that step, and must land on the same
numbers.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fixtures.make_checkpoints import FIXTURE, NAMES, build, rates, step

SAVED = torch.load(FIXTURE, weights_only=True)
CHECKPOINTS = SAVED["checkpoints"]


def _assert_same(ours, theirs, what):
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15, msg=lambda m: f"{what}: {m}")


def test_the_fixture_was_written_by_the_old_release():
    assert SAVED["hypergrad"] == "0.1.0"
    assert {c["optimizer"] for c in (checkpoint["case"] for checkpoint in CHECKPOINTS.values())} == {
        "SGDHD", "AdamHD", "AdamWHD", "AdagradHD", "RMSpropHD", "HDM", "AdaptiveGainSGD",
    }


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_an_old_checkpoint_continues_as_the_old_release_did(name):
    checkpoint = copy.deepcopy(CHECKPOINTS[name])  # loading may keep the state's tensors
    params = [p.clone().requires_grad_() for p in checkpoint["params"]]
    optimizer, scheduler = build(checkpoint["case"], params)
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])

    for i, replay in enumerate(checkpoint["replay"]):
        step(optimizer, scheduler, params, replay["batch"], replay["grads"])
        for param_name, ours, theirs in zip(NAMES, params, replay["params"]):
            _assert_same(ours.detach(), theirs, f"step {i}, {param_name}")
        ours = rates(optimizer, params)
        assert ours.keys() == {key for key in replay if key in ("group_lr", "learning_rates")}
        for key in ours:
            _assert_same(ours[key], replay[key], f"step {i}, {key}")
