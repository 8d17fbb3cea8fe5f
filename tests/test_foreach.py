"""The foreach (multi-tensor) path equals the for-loop path over many steps with HD on, for every
flag; the stored-direction shortcuts (adopting a fresh effective gradient, capturable's fixed
buffers) change nothing; and a step never writes into ``p.grad``."""

from __future__ import annotations

import pytest
import torch

import hypergrad
from cases import ADAM_FLAGS, SGD_FLAGS, TinyNet, batch_loss, flag_id, make_batches

STEPS = 30
HD_SETTINGS = {
    "additive": dict(hypergrad_rule="additive"),
    "multiplicative-bounded": dict(hypergrad_rule="multiplicative", lr_bounds=(1e-3, 0.03)),
}
SGD_HD_LR = {"additive": 1e-2, "multiplicative-bounded": 0.05}
ADAM_HD_LR = {"additive": 1e-4, "multiplicative-bounded": 0.05}


def _run(hd_cls, settings: dict, **options) -> tuple[list[float], TinyNet, torch.optim.Optimizer]:
    """The learning rates, model and optimizer after STEPS steps. With maximize the loss is
    negated, so that every run descends the same objective and stays finite."""
    model = TinyNet()
    optimizer = hd_cls(model.parameters(), **settings, **options)
    sign = -1.0 if settings.get("maximize", False) else 1.0
    lrs = []
    for batch in make_batches(STEPS):
        optimizer.zero_grad()
        (sign * batch_loss(model, batch)).backward()
        optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs, model, optimizer


def _assert_same_runs(first, second) -> None:
    (lrs_a, model_a, opt_a), (lrs_b, model_b, opt_b) = first, second
    torch.testing.assert_close(lrs_a, lrs_b, rtol=1e-12, atol=0)
    assert len(set(lrs_a)) > STEPS // 2, "the lr must adapt for the comparison to mean anything"
    for p_a, p_b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(p_a, p_b, rtol=1e-12, atol=1e-14)
        state_a, state_b = opt_a.state[p_a], opt_b.state[p_b]
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            torch.testing.assert_close(state_a[key], state_b[key], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("hd", list(HD_SETTINGS))
@pytest.mark.parametrize("flags", SGD_FLAGS, ids=flag_id)
def test_sgd_foreach_equals_for_loop(flags, hd):
    settings = dict(lr=0.02, hypergrad_lr=SGD_HD_LR[hd], **HD_SETTINGS[hd], **flags)
    _assert_same_runs(_run(hypergrad.SGDHD, settings, foreach=False), _run(hypergrad.SGDHD, settings, foreach=True))


@pytest.mark.parametrize("hd", list(HD_SETTINGS))
@pytest.mark.parametrize("flags", ADAM_FLAGS, ids=flag_id)
def test_adam_foreach_equals_for_loop(flags, hd):
    settings = dict(lr=0.01, hypergrad_lr=ADAM_HD_LR[hd], **HD_SETTINGS[hd], **flags)
    _assert_same_runs(_run(hypergrad.AdamHD, settings, foreach=False), _run(hypergrad.AdamHD, settings, foreach=True))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "flags", [f for f in SGD_FLAGS if f["maximize"] or f["weight_decay"]], ids=flag_id
)
def test_sgd_adopted_direction_equals_copied_direction(flags, foreach):
    """capturable=True copies into fixed buffers where the default adopts the fresh gradient."""
    settings = dict(lr=0.02, hypergrad_lr=1e-2, foreach=foreach, **flags)
    _assert_same_runs(
        _run(hypergrad.SGDHD, settings, capturable=False), _run(hypergrad.SGDHD, settings, capturable=True)
    )


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "hd_cls, flags",
    [(hypergrad.SGDHD, f) for f in SGD_FLAGS] + [(hypergrad.AdamHD, f) for f in ADAM_FLAGS],
    ids=lambda v: v.__name__ if isinstance(v, type) else flag_id(v),
)
def test_step_leaves_the_gradients_alone(hd_cls, flags, foreach):
    model = TinyNet()
    optimizer = hd_cls(model.parameters(), lr=0.01, hypergrad_lr=1e-4, foreach=foreach, **flags)
    for batch in make_batches(3):
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
        for p, grad in zip(model.parameters(), grads):
            assert torch.equal(p.grad, grad)
