"""torch.compile(optimizer.step) with the default inductor backend equals the eager step, and the
learning rate keeps adapting without recompiling the step every time it changes.

The first step runs eagerly (it creates the state, as a warm-up would), so that each optimizer
compiles one graph for its steady state and the test stays short: compile time dominates it.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import hypergrad
from conftest import TinyNet, batch_loss, make_batches

# Case: optimizer, settings, relative tolerance. Compiled Adam(W) takes torch.optim's on-device
# arithmetic (bias corrections from the float32 step count, as torch's compiled Adam does) where
# eager CPU Adam reads the step count on the host in double precision; the hypergradient carries
# that float32 rounding (~1e-7) into the lr, which moves parameters and directions in turn.
# Compiled Adagrad likewise computes its lr decay from the float32 step count.
CASES = {
    "sgd": (hypergrad.SGDHD, dict(lr=0.05, hypergrad_lr=1e-2, weight_decay=1e-2), 1e-12),
    "momentum": (hypergrad.SGDHD, dict(lr=0.02, hypergrad_lr=1e-2, momentum=0.9), 1e-12),
    "nesterov": (hypergrad.SGDHD, dict(lr=0.02, hypergrad_lr=1e-2, momentum=0.9, nesterov=True), 1e-12),
    "adam": (hypergrad.AdamHD, dict(lr=0.01, hypergrad_lr=1e-4), 1e-4),
    "adamw": (hypergrad.AdamWHD, dict(lr=0.01, hypergrad_lr=1e-4), 1e-4),
    "adagrad-lr-decay": (hypergrad.AdagradHD, dict(lr=0.01, hypergrad_lr=1e-4, lr_decay=0.01), 1e-6),
    "rmsprop-centered-momentum": (
        hypergrad.RMSpropHD, dict(lr=0.01, hypergrad_lr=1e-4, momentum=0.9, centered=True), 1e-12
    ),
}
COMPILED_STEPS = 4


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_compiled_step_equals_eager_and_adapts_without_recompiling(case):
    hd_cls, settings, rtol = CASES[case]
    batches = make_batches(1 + COMPILED_STEPS)
    models = [TinyNet(), TinyNet()]
    eager = hd_cls(models[0].parameters(), **settings)
    compiled = hd_cls(models[1].parameters(), **settings)
    torch._dynamo.reset()
    counters.clear()
    compiled_step = torch.compile(compiled.step)

    eager_lrs, compiled_lrs = [], []
    for index, batch in enumerate(batches):
        for model, optimizer, step, lrs in (
            (models[0], eager, eager.step, eager_lrs),
            (models[1], compiled, compiled.step if index == 0 else compiled_step, compiled_lrs),
        ):
            optimizer.zero_grad()
            batch_loss(model, batch).backward()
            step()
            lrs.append(float(optimizer.param_groups[0]["lr"]))

    assert len(set(eager_lrs[1:])) == COMPILED_STEPS, "the lr must change at every step"
    torch.testing.assert_close(compiled_lrs, eager_lrs, rtol=rtol, atol=0)
    for ours, theirs in zip(models[1].parameters(), models[0].parameters()):
        torch.testing.assert_close(ours, theirs, rtol=rtol, atol=rtol * 1e-2)
    # One graph for the first compiled step, where the float lr becomes a tensor, and one for
    # every later step: the lr's changes do not recompile.
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
