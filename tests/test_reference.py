"""The fast optimizers follow their slow, obviously correct twins in hypergrad.reference."""

from __future__ import annotations

import itertools

import pytest
import torch

import hypergrad
from conftest import TinyNet, make_batches, train
from hypergrad import reference
from hypergrad.adagrad import AdagradHD
from hypergrad.adam import AdamHD, AdamWHD
from hypergrad.reference import AdamHDReference, SGDHDReference
from hypergrad.rmsprop import RMSpropHD
from hypergrad.sgd import SGDHD

VARIANTS = [
    (hypergrad.SGDHD, SGDHDReference, dict(lr=0.05, hypergrad_lr=1e-2)),
    (hypergrad.SGDHD, SGDHDReference, dict(lr=0.02, hypergrad_lr=1e-3, weight_decay=0.05, maximize=True, lr_bounds=(0.0, 0.03))),
    (hypergrad.SGDHD, SGDHDReference, dict(lr=0.02, hypergrad_lr=1e-2, momentum=0.8, dampening=0.2)),
    (hypergrad.SGDHD, SGDHDReference, dict(lr=0.02, hypergrad_lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.05)),
    (hypergrad.SGDHD, SGDHDReference, dict(lr=0.05, hypergrad_lr=0.3, hypergrad_rule="multiplicative")),
    (hypergrad.SGDHD, SGDHDReference, dict(lr=0.05, hypergrad_lr=10.0, lr_bounds=(0.01, 0.08))),
    (hypergrad.AdamHD, AdamHDReference, dict(lr=0.01, hypergrad_lr=1e-4)),
    (hypergrad.AdamHD, AdamHDReference, dict(lr=0.01, hypergrad_lr=1e-4, amsgrad=True, weight_decay=0.05, maximize=True, lr_bounds=(0.0, 0.02))),
    (hypergrad.AdamHD, AdamHDReference, dict(lr=0.01, hypergrad_lr=0.2, hypergrad_rule="multiplicative", betas=(0.8, 0.99))),
    (hypergrad.AdamHD, AdamHDReference, dict(lr=0.01, hypergrad_lr=1.0, lr_bounds=(0.001, 0.02))),
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("fast_cls, reference_cls, settings", VARIANTS)
def test_fast_optimizer_matches_reference(fast_cls, reference_cls, settings, foreach):
    batches = make_batches(30)
    fast_model, reference_model = TinyNet(), TinyNet()
    fast_lrs = train(fast_model, fast_cls(fast_model.parameters(), foreach=foreach, **settings), batches)
    reference_lrs = train(reference_model, reference_cls(reference_model.parameters(), **settings), batches)
    assert len(set(reference_lrs)) >= 3, "the learning rate should actually adapt in this test"
    torch.testing.assert_close(torch.tensor(fast_lrs), torch.tensor(reference_lrs), rtol=1e-9, atol=0)
    for ours, theirs in zip(fast_model.parameters(), reference_model.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


# -- the family (AdamW, Adagrad, RMSprop) and the variants (rule x granularity x bounds x blend) ----
# (fast, reference, base settings, additive hypergrad_lr)
FAMILY_RULES = {
    "sgd-nesterov": (SGDHD, reference.SGDHDReference, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01), 1e-2),
    "sgd-heavy-ball": (SGDHD, reference.SGDHDReference, dict(lr=0.05, momentum=0.5, dampening=0.2), 1e-2),
    "adam-amsgrad": (AdamHD, reference.AdamHDReference, dict(lr=0.01, amsgrad=True, weight_decay=0.01), 1e-4),
    "adamw": (AdamWHD, reference.AdamWHDReference, dict(lr=0.01, weight_decay=0.3), 1e-4),
    "adagrad": (AdagradHD, reference.AdagradHDReference, dict(lr=0.05, lr_decay=0.1, initial_accumulator_value=0.2), 1e-4),
    "rmsprop-centered-momentum": (RMSpropHD, reference.RMSpropHDReference, dict(lr=0.01, centered=True, momentum=0.5), 1e-4),
    "rmsprop": (RMSpropHD, reference.RMSpropHDReference, dict(lr=0.01, alpha=0.9, maximize=True), 1e-4),
}
FAMILY_VARIANTS = [
    dict(hypergrad_rule=rule, granularity=granularity, **extra)
    for rule, granularity, extra in itertools.product(
        ("additive", "multiplicative"),
        ("group", "tensor", "element"),
        ({}, {"lr_bounds": (0.0, 0.03)}, {"lr_limit": 0.02, "lr_limit_power": 1.5}),
    )
]


def reference_rates(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict:
    """The rates the reference stepped with, by name (it keeps them as absolute values)."""
    group = optimizer.param_groups[0]
    rates = {}
    for name, p in model.named_parameters():
        state = optimizer.state[p]
        rate = state.get("rate", state.get("rates", group["lr"]))
        if group["granularity"] != "group" and group["lr_limit"] is not None:
            delta = group["t"] ** -group["lr_limit_power"]
            rate = delta * rate + (1 - delta) * group["lr_limit"]
        rates[name] = rate
    return rates


@pytest.mark.parametrize("variant", FAMILY_VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
@pytest.mark.parametrize("rule", list(FAMILY_RULES))
def test_family_follows_reference_in_every_variant(rule, variant):
    fast_cls, reference_cls, settings, additive_beta = FAMILY_RULES[rule]
    beta = additive_beta if variant["hypergrad_rule"] == "additive" else 0.05
    batches = make_batches(15)
    models = [TinyNet(), TinyNet()]
    fast = fast_cls(models[0].parameters(), hypergrad_lr=beta, **settings, **variant)
    slow = reference_cls(models[1].parameters(), hypergrad_lr=beta, **settings, **variant)
    train(models[0], fast, batches)
    train(models[1], slow, batches)
    for ours, theirs in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    fast_rates = fast.learning_rates(models[0].named_parameters())
    slow_rates = reference_rates(slow, models[1])
    for name, rate in fast_rates.items():
        torch.testing.assert_close(torch.as_tensor(rate), torch.as_tensor(slow_rates[name]), rtol=1e-9, atol=0.0)
    initial = settings["lr"]
    moved = [torch.as_tensor(r) for r in fast_rates.values()]
    assert any(not torch.allclose(r, torch.full_like(r, initial)) for r in moved)  # HD did something


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("rule", list(FAMILY_RULES))
def test_family_foreach_and_for_loop_paths_follow_reference(rule, foreach):
    fast_cls, reference_cls, settings, beta = FAMILY_RULES[rule]
    batches = make_batches(15)
    models = [TinyNet(), TinyNet()]
    fast = fast_cls(models[0].parameters(), hypergrad_lr=beta, foreach=foreach, **settings)
    slow = reference_cls(models[1].parameters(), hypergrad_lr=beta, **settings)
    fast_lrs = train(models[0], fast, batches)
    slow_lrs = train(models[1], slow, batches)
    torch.testing.assert_close(torch.tensor(fast_lrs), torch.tensor(slow_lrs), rtol=1e-9, atol=0.0)
    for ours, theirs in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
