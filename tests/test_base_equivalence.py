"""hypergrad_lr=0 is the base optimizer: parameters equal torch.optim's after 20 steps."""

from __future__ import annotations

import itertools

import pytest
import torch

import hypergrad
from hypergrad.adagrad import AdagradHD
from hypergrad.adam import AdamWHD
from hypergrad.rmsprop import RMSpropHD
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


ADAMW_FLAGS = [
    dict(amsgrad=a, weight_decay=wd, maximize=mx)
    for a, wd, mx in itertools.product((False, True), (0.0, 1e-2, 0.3), (False, True))
]
ADAGRAD_FLAGS = [
    dict(lr_decay=d, initial_accumulator_value=init, weight_decay=wd, maximize=mx)
    for d, init, wd, mx in itertools.product((0.0, 0.1), (0.0, 0.5), (0.0, 1e-2), (False, True))
]
RMSPROP_FLAGS = [
    dict(centered=c, momentum=m, weight_decay=wd, maximize=mx, alpha=a)
    for c, m, wd, mx, a in itertools.product((False, True), (0.0, 0.9), (0.0, 1e-2), (False, True), (0.99, 0.8))
]


def _flag_id(flags: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in flags.items())


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("flags", ADAMW_FLAGS, ids=_flag_id)
def test_adamw_with_zero_hypergrad_lr_is_torch_adamw(flags, dtype, foreach):
    _assert_same_run(AdamWHD, torch.optim.AdamW, flags, dtype, foreach, lr=0.01)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("flags", ADAGRAD_FLAGS, ids=_flag_id)
def test_adagrad_with_zero_hypergrad_lr_is_torch_adagrad(flags, dtype, foreach):
    _assert_same_run(AdagradHD, torch.optim.Adagrad, flags, dtype, foreach, lr=0.05)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("flags", RMSPROP_FLAGS, ids=_flag_id)
def test_rmsprop_with_zero_hypergrad_lr_is_torch_rmsprop(flags, dtype, foreach):
    _assert_same_run(RMSpropHD, torch.optim.RMSprop, flags, dtype, foreach, lr=0.01)


@pytest.mark.parametrize("granularity", ["tensor", "element"])
@pytest.mark.parametrize(
    ("hd_cls", "base_cls", "lr"),
    [
        (hypergrad.SGDHD, torch.optim.SGD, 0.05),
        (hypergrad.AdamHD, torch.optim.Adam, 0.01),
        (AdamWHD, torch.optim.AdamW, 0.01),
        (AdagradHD, torch.optim.Adagrad, 0.05),
        (RMSpropHD, torch.optim.RMSprop, 0.01),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_per_tensor_and_per_weight_rates_with_zero_hypergrad_lr_are_the_base(hd_cls, base_cls, lr, granularity):
    """The rescaling of the step to each tensor's or weight's rate is the identity at scale 1."""
    batches = make_batches(20)
    models = [TinyNet(), TinyNet()]
    hd = hd_cls(models[0].parameters(), lr=lr, hypergrad_lr=0.0, granularity=granularity)
    base = base_cls(models[1].parameters(), lr=lr)
    train(models[0], hd, batches)
    train(models[1], base, batches)
    for ours, theirs in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
