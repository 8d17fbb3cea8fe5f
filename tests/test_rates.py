"""Each group owns its rate; low-precision parameters get float32 statistics; a zero lr at
granularity "tensor"/"element" behaves as the reference twin does."""

from __future__ import annotations

import pytest
import torch

from cases import TinyNet, make_batches, one_per_base_rule, train

CLASSES = one_per_base_rule()


@pytest.mark.parametrize("case", CLASSES, ids=lambda case: case.fast.__name__)
def test_a_tensor_lr_is_owned_by_each_group(case):
    """Given as a tensor, the lr is copied into each group: a group that never has a gradient keeps
    its rate, and ``defaults["lr"]`` stays what was given."""
    model = TinyNet()
    given = torch.tensor(case.settings["lr"], dtype=torch.float64)
    optimizer = case.fast(
        [{"params": model.hidden.parameters()}, {"params": model.out.parameters()}], lr=given, hypergrad_lr=1e-3
    )
    for batch in make_batches(4):
        optimizer.zero_grad()
        torch.tanh(model.hidden(batch[0])).pow(2).mean().backward()  # no gradient reaches model.out
        optimizer.step()
    assert float(optimizer.param_groups[0]["lr"]) != case.settings["lr"]  # group 0 adapted
    assert float(optimizer.param_groups[1]["lr"]) == case.settings["lr"]
    assert float(optimizer.defaults["lr"]) == float(given) == case.settings["lr"]


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
@pytest.mark.parametrize("case", CLASSES, ids=lambda case: case.fast.__name__)
def test_a_one_element_lr_tensor_of_any_shape_steps_like_a_float(case, shape):
    models = [TinyNet(), TinyNet()]
    rates = [torch.full(shape, case.settings["lr"], dtype=torch.float64), case.settings["lr"]]
    lrs = [train(m, case.make(m.parameters(), lr=lr), make_batches(4)) for m, lr in zip(models, rates)]
    assert lrs[0] == pytest.approx(lrs[1], rel=1e-12)
    assert case.make([torch.nn.Parameter(torch.zeros(2))], lr=rates[0]).param_groups[0]["lr"].shape == ()
    for ours, theirs in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("granularity", ["group", "tensor"])
@pytest.mark.parametrize("case", CLASSES, ids=lambda case: case.fast.__name__)
def test_float16_statistics_do_not_overflow(case, granularity):
    """300k float16 weights: g . u is far beyond float16's range; the lr still follows the float64
    reference twin run from the same weights (eps where float16 can hold it)."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(300_000, generator=generator).half()
    target = torch.randn(300_000, generator=generator).half()
    rates = []
    for dtype, make in ((torch.float16, case.make), (torch.float64, case.make_reference)):
        weights = torch.nn.Parameter(start.to(dtype, copy=True))
        eps = {} if case.fast.__name__ == "SGDHD" else {"eps": 1e-3}
        optimizer = make([weights], lr=1e-3, hypergrad_lr=1e-9, hypergrad_rule="additive", granularity=granularity, **eps)
        for _ in range(3):
            optimizer.zero_grad()
            (weights.float() - target.float()).pow(2).sum().mul(0.5).backward()
            optimizer.step()
        if granularity == "group":
            rates.append(float(optimizer.param_groups[0]["lr"]))
        elif dtype == torch.float16:
            rates.append(optimizer.learning_rates([("w", weights)])["w"])
        else:
            rates.append(optimizer.state[weights]["rate"])
    fast, reference = rates
    assert reference > 1.1e-3  # the rate moved
    assert abs(fast - reference) < 0.02 * (reference - 1e-3), (fast, reference)


@pytest.mark.parametrize("granularity", ["tensor", "element"])
@pytest.mark.parametrize("case", CLASSES, ids=lambda case: case.fast.__name__)
def test_a_zero_lr_keeps_every_tensors_and_weights_rate_at_zero(case, granularity):
    """Per tensor or weight a rate is the group's lr times a scale: at lr=0 all rates are 0 and stay
    so, in the optimizer and in its reference twin."""
    models = [TinyNet(), TinyNet()]
    settings = dict(lr=0.0, hypergrad_lr=1e-2, granularity=granularity)
    optimizers = [case.make(models[0].parameters(), **settings), case.make_reference(models[1].parameters(), **settings)]
    for model, optimizer in zip(models, optimizers):
        train(model, optimizer, make_batches(5))
    rates = optimizers[0].learning_rates(models[0].named_parameters())
    assert all(float(torch.as_tensor(rate).abs().max()) == 0.0 for rate in rates.values())
    for p in models[1].parameters():
        state = optimizers[1].state[p]
        assert float(torch.as_tensor(state["rate" if granularity == "tensor" else "rates"]).abs().max()) == 0.0
    for ours, theirs in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)

