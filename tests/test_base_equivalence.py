"""hypergrad_lr=0 is the base optimizer: parameters equal torch.optim's after 20 steps."""

from __future__ import annotations

import pytest
import torch

from cases import BASE_FLAGS, TinyNet, flag_id, make_batches, one_per_base_rule, train

def _assert_same_run(hd_cls, base_cls, flags, dtype, foreach, lr):
    batches = make_batches(20, dtype)
    models = [TinyNet(dtype), TinyNet(dtype)]
    hd = hd_cls(models[0].parameters(), lr=lr, hypergrad_lr=0.0, foreach=foreach, **flags)
    base = base_cls(models[1].parameters(), lr=lr, foreach=foreach, **flags)
    lrs = train(models[0], hd, batches)
    train(models[1], base, batches)
    assert lrs == [lr] * len(batches)
    for ours, theirs in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6 * theirs.abs().max().item())


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "case, flags",
    [(case, flags) for case in one_per_base_rule() for flags in BASE_FLAGS[case.base]],
    ids=lambda v: v.fast.__name__ if hasattr(v, "fast") else flag_id(v),
)
def test_zero_hypergrad_lr_is_the_torch_base(case, flags, dtype, foreach):
    _assert_same_run(case.fast, case.base, flags, dtype, foreach, lr=case.settings["lr"])


@pytest.mark.parametrize("granularity", ["tensor", "element"])
@pytest.mark.parametrize("case", one_per_base_rule(), ids=lambda case: case.fast.__name__)
def test_per_tensor_and_per_weight_rates_with_zero_hypergrad_lr_are_the_base(case, granularity):
    """The rescaling of the step to each tensor's or weight's rate is the identity at scale 1."""
    batches = make_batches(20)
    models = [TinyNet(), TinyNet()]
    hd = case.make(models[0].parameters(), hypergrad_lr=0.0, granularity=granularity)
    base = case.base(models[1].parameters(), **case.settings)
    train(models[0], hd, batches)
    train(models[1], base, batches)
    for ours, theirs in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


COMPLEX_FLAGS = {
    torch.optim.SGD: dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
    torch.optim.Adam: dict(amsgrad=True),
    torch.optim.AdamW: dict(),
    torch.optim.Adagrad: dict(lr=0.1, initial_accumulator_value=0.1),
    torch.optim.RMSprop: dict(centered=True, momentum=0.5),
}


@pytest.mark.parametrize("case", one_per_base_rule(), ids=lambda case: case.fast.__name__)
def test_complex_parameters_step_like_torch(case):
    """Complex parameters are stepped as their real views, as torch.optim steps them."""
    generator = torch.Generator().manual_seed(2)
    start = torch.randn(4, 3, dtype=torch.complex128, generator=generator)
    targets = [torch.randn(4, 3, dtype=torch.complex128, generator=generator) for _ in range(10)]
    flags = {**case.settings, **COMPLEX_FLAGS[case.base]}
    results = []
    for make in (lambda p: case.fast(p, hypergrad_lr=0.0, **flags), lambda p: case.base(p, **flags)):
        z = torch.nn.Parameter(start.clone())
        optimizer = make([z])
        for target in targets:
            optimizer.zero_grad()
            (z - target).abs().pow(2).sum().backward()
            optimizer.step()
        results.append(z.detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-9)
