"""Property-based: random optimizer, flags, rule, granularity, bounds, blend, dtype, groups and
intermittently missing gradients; the fast optimizer follows its reference twin, and at
hypergrad_lr=0 (no blend) torch.optim. Deterministic (derandomized), a few seconds."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cases import BASE_FLAGS, TinyNet, batch_loss, make_batches, one_per_base_rule

STEPS = 6
# hypergrad_lr per rule and base rule: large enough that the rates move within a few steps.
ADDITIVE_BETA = {"SGDHD": 1e-2}
ADAPTIVE_BETA = 1e-4


@st.composite
def scenarios(draw):
    case = draw(st.sampled_from(one_per_base_rule()))
    rule = draw(st.sampled_from(["additive", "multiplicative"]))
    beta = 0.1 if rule == "multiplicative" else ADDITIVE_BETA.get(case.fast.__name__, ADAPTIVE_BETA)
    lr = case.settings["lr"]
    bounds = draw(st.sampled_from([None, (0.5 * lr, 1.5 * lr)]))
    return dict(
        case=case,
        flags=draw(st.sampled_from(BASE_FLAGS[case.base])),
        hd=dict(
            lr=lr,
            hypergrad_lr=draw(st.sampled_from([0.0, beta])),
            hypergrad_rule=rule,
            granularity=draw(st.sampled_from(["group", "tensor", "element"])),
            lr_bounds=bounds,
            lr_limit=draw(st.sampled_from([None, 0.8 * lr])),
        ),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        split=draw(st.booleans()),
        foreach=draw(st.booleans()),
        # missing[step][k]: parameter k has no gradient at that step.
        missing=draw(st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=STEPS, max_size=STEPS)),
    )


def _run(make, scenario) -> tuple[TinyNet, list[float]]:
    model = TinyNet(scenario["dtype"])
    params = list(model.parameters())
    groups = [{"params": params[:2]}, {"params": params[2:]}] if scenario["split"] else [{"params": params}]
    optimizer = make(groups)
    lrs = []
    for batch, missing in zip(make_batches(STEPS, scenario["dtype"]), scenario["missing"]):
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        for p, drop in zip(params, missing):
            if drop:
                p.grad = None
        optimizer.step()
        lrs += [float(group["lr"]) for group in optimizer.param_groups]
    return model, lrs


def _assert_close_models(first: TinyNet, second: TinyNet, dtype: torch.dtype) -> None:
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    for ours, theirs in zip(first.parameters(), second.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)


@settings(max_examples=80, derandomize=True, deadline=None, database=None)
@given(scenarios())
def test_fast_follows_reference_and_torch(scenario):
    case, flags, hd = scenario["case"], scenario["flags"], scenario["hd"]
    fast, fast_lrs = _run(lambda groups: case.fast(groups, foreach=scenario["foreach"], **flags, **hd), scenario)
    twin, twin_lrs = _run(lambda groups: case.reference(groups, **flags, **hd), scenario)
    tolerance = 1e-9 if scenario["dtype"] == torch.float64 else 1e-4
    torch.testing.assert_close(torch.tensor(fast_lrs), torch.tensor(twin_lrs), rtol=tolerance, atol=0.0)
    _assert_close_models(fast, twin, scenario["dtype"])
    if hd["hypergrad_lr"] == 0 and hd["lr_limit"] is None:
        base, _ = _run(lambda groups: case.base(groups, lr=hd["lr"], foreach=scenario["foreach"], **flags), scenario)
        _assert_close_models(fast, base, scenario["dtype"])
