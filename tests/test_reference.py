"""The fast optimizers follow their slow, obviously correct twins in hypergrad.reference."""

from __future__ import annotations

import pytest
import torch

import hypergrad
from conftest import TinyNet, make_batches, train
from hypergrad.reference import AdamHDReference, SGDHDReference

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
