"""The foreach (multi-tensor) path equals the for-loop path over many steps with HD on, for every
flag; the stored-direction shortcuts (adopting a fresh effective gradient or plain SGD's
``p.grad``, capturable's fixed buffers) change nothing, and a kept gradient whose memory is reused
is caught; and a step never writes into ``p.grad``."""

from __future__ import annotations

import copy
import gc
import weakref

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


PATHS = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    "flags", [f for f in SGD_FLAGS if f["maximize"] or f["weight_decay"] or f["momentum"] == 0], ids=flag_id
)
def test_sgd_adopted_direction_equals_copied_direction(flags, path):
    """capturable=True copies into fixed buffers where the default adopts the fresh effective
    gradient, or plain SGD's ``p.grad`` itself."""
    settings = dict(lr=0.02, hypergrad_lr=1e-2, **PATHS[path], **flags)
    adopted, copied = _run(hypergrad.SGDHD, settings, capturable=False), _run(hypergrad.SGDHD, settings, capturable=True)
    _assert_same_runs(adopted, copied)
    if flags["momentum"] == 0 and not (flags["maximize"] or flags["weight_decay"]):
        model, optimizer = adopted[1], adopted[2]
        assert all(optimizer.state[p]["hypergrad_direction"] is p.grad for p in model.parameters())


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("reuse", ["zeroed in place", "accumulated into"])
def test_a_kept_gradient_whose_memory_is_reused_is_not_taken_for_the_previous_direction(path, reuse):
    """Plain SGD keeps ``p.grad`` as ``u_{t-1}``. Where the next backward writes into that same
    memory (``zero_grad(set_to_none=False)``, accumulation without zeroing, DDP's bucket views),
    it no longer holds ``u_{t-1}``: that step leaves the learning rate alone (as a first step
    does) instead of taking ``g_t . g_t``, and every later step uses copied directions, with the
    exact additive rule ``lr_t = lr_{t-1} + beta * g_t . g_{t-1}``."""
    torch.manual_seed(0)
    model = TinyNet().double()
    beta = 1e-2
    optimizer = hypergrad.SGDHD(model.parameters(), lr=0.02, hypergrad_lr=beta, hypergrad_rule="additive", **PATHS[path])
    lrs, grads = [], []
    for index, (x, y) in enumerate(make_batches(5)):
        if index == 0 or reuse == "zeroed in place":
            optimizer.zero_grad(set_to_none=index == 0)
        batch_loss(model, (x.double(), y.double())).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        if reuse == "accumulated into" and index > 0:  # the gradient the step actually uses
            grads[-1] = grads[-1] - sum(grads[:-1])
        optimizer.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        if index >= 1:
            assert all(optimizer.state[p]["hypergrad_direction"] is not p.grad for p in model.parameters())
    assert lrs[0] == lrs[1] == 0.02, "the reused gradient must not count as u_{t-1}"
    for t in range(2, 5):
        total = sum(grads[: t + 1]) if reuse == "accumulated into" else grads[t]
        previous = sum(grads[:t]) if reuse == "accumulated into" else grads[t - 1]
        expected = lrs[t - 1] + beta * float(total @ previous)
        assert lrs[t] == pytest.approx(expected, rel=1e-12), t


@pytest.mark.parametrize("path", list(PATHS))
def test_kept_gradients_are_released_once_they_are_no_longer_the_previous_direction(path):
    """Plain SGD keeps only the last step's gradients: one step later, with fresh gradients
    (``zero_grad()``'s default), nothing holds the older ones; after a state_dict load, which
    brings directions of their own, nothing holds the kept ones either."""
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = hypergrad.SGDHD(model.parameters(), lr=0.02, **PATHS[path])
    references = []
    for batch in make_batches(4):
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        references.append([weakref.ref(p.grad) for p in model.parameters()])
        optimizer.step()
    optimizer.zero_grad()
    gc.collect()
    assert all(r() is None for step in references[:-1] for r in step)
    assert all(r() is not None for r in references[-1])  # u_{t-1} of the next step
    optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    gc.collect()
    assert all(r() is None for r in references[-1])


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
