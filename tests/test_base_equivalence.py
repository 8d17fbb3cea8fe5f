"""hypergrad_lr=0 is the base optimizer: parameters equal torch.optim's after 20 steps."""

from __future__ import annotations

import itertools

import pytest
import torch

import hypergrad
from conftest import TinyNet, make_batches, train

SGD_FLAGS = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
    for m, d, n, wd, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 1e-2), (False, True))
    if not (n and (m == 0 or d != 0))
]
ADAM_FLAGS = [
    dict(amsgrad=a, weight_decay=wd, maximize=mx, betas=b)
    for a, wd, mx, b in itertools.product((False, True), (0.0, 1e-2), (False, True), ((0.9, 0.999), (0.5, 0.9)))
]


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
@pytest.mark.parametrize("flags", SGD_FLAGS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_sgd_with_zero_hypergrad_lr_is_torch_sgd(flags, dtype, foreach):
    _assert_same_run(hypergrad.SGDHD, torch.optim.SGD, flags, dtype, foreach, lr=0.05)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("flags", ADAM_FLAGS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_adam_with_zero_hypergrad_lr_is_torch_adam(flags, dtype, foreach):
    _assert_same_run(hypergrad.AdamHD, torch.optim.Adam, flags, dtype, foreach, lr=0.01)
