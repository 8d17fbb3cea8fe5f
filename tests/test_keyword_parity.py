"""torch.optim's keywords: code written for torch.optim passes ``capturable`` (AdamWHD takes it
as AdamHD does) and ``differentiable=False`` unchanged; ``differentiable=True`` is refused with
the reason."""

from __future__ import annotations

import inspect

import pytest
import torch

import hypergrad

CLASSES = [hypergrad.SGDHD, hypergrad.AdamHD, hypergrad.AdamWHD, hypergrad.AdagradHD, hypergrad.RMSpropHD]


def params() -> list[torch.Tensor]:
    return [torch.nn.Parameter(torch.ones(3))]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_differentiable_false_is_accepted_true_refused(cls):
    torch_twin = getattr(torch.optim, cls.__name__[:-2])
    assert inspect.signature(torch_twin).parameters["differentiable"].default is False
    optimizer = cls(params(), differentiable=False)
    assert "differentiable" not in optimizer.defaults
    with pytest.raises(ValueError, match=r"Invalid differentiable: only False is supported \(.*no_grad"):
        cls(params(), differentiable=True)


def test_adamw_takes_capturable_as_adam_does():
    adam = inspect.signature(hypergrad.AdamHD).parameters["capturable"]
    assert inspect.signature(hypergrad.AdamWHD).parameters["capturable"] == adam
    for capturable in (False, True):
        optimizer = hypergrad.AdamWHD(params(), capturable=capturable)
        assert optimizer.param_groups[0]["capturable"] is capturable
        assert optimizer.param_groups[0]["decoupled_weight_decay"] is True


def test_unknown_keyword_is_still_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'differentable'"):
        hypergrad.AdamWHD(params(), differentable=False)
