"""torch.compile(optimizer.step) with the default inductor backend equals the eager step, and the
learning rate keeps adapting without recompiling the step every time it changes.

The first step runs eagerly (it creates the state, as a warm-up would), so that each optimizer
compiles one graph for its steady state and the test stays short: compile time dominates it.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from cases import CASES, TinyNet, batch_loss, make_batches

# Case and relative tolerance. Compiled Adam(W) takes torch.optim's on-device arithmetic (bias
# corrections from the float32 step count, as torch's compiled Adam does) where eager CPU Adam
# reads the step count on the host in double precision; the hypergradient carries that float32
# rounding (~1e-7) into the lr, which moves parameters and directions in turn. Compiled Adagrad
# likewise computes its lr decay from the float32 step count.
TOLERANCES = {
    "sgd-small-wd": 1e-12,
    "momentum": 1e-12,
    "nesterov": 1e-12,
    "adam": 1e-4,
    "adamw-default-decay": 1e-4,
    "adagrad-slow-decay": 1e-6,
    "rmsprop-centered-heavy-momentum": 1e-12,
}
COMPILED_STEPS = 4


@pytest.mark.slow
@pytest.mark.parametrize("case", list(TOLERANCES))
def test_compiled_step_equals_eager_and_adapts_without_recompiling(case):
    rtol = TOLERANCES[case]
    batches = make_batches(1 + COMPILED_STEPS)
    models = [TinyNet(), TinyNet()]
    eager = CASES[case].make(models[0].parameters())
    compiled = CASES[case].make(models[1].parameters())
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
