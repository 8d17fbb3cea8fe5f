"""What the integrations share: ``import hypergrad`` loads no framework; the HD optimizer is found
behind any chain of wrappers; ``logged_rates`` gives floats (per group, per tensor)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hypergrad
from hypergrad.integrations import unwrap_optimizer

FRAMEWORKS = ("lightning", "pytorch_lightning", "transformers", "accelerate", "timm", "torchvision")


def test_import_loads_no_framework():
    code = ("import sys, hypergrad, hypergrad.integrations; "
            f"print([m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}])")
    root = Path(__file__).resolve().parents[1]
    loaded = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


class Wrapper:
    """Stands for a framework's wrapper: it keeps the optimizer under one of the usual names."""

    def __init__(self, name: str, inner: object) -> None:
        setattr(self, name, inner)


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))


def test_unwrap_through_chains_of_wrappers():
    model = net()
    optimizer = hypergrad.SGDHD(model.parameters())
    wrapped = Wrapper("optimizer", Wrapper("_base_optimizer", Wrapper("_optimizer", optimizer)))
    assert unwrap_optimizer(wrapped) is optimizer and unwrap_optimizer(optimizer) is optimizer
    named = list(model.named_parameters())
    assert hypergrad.learning_rates(wrapped, named) == optimizer.learning_rates(named)
    with pytest.raises(TypeError, match=r"optimizer must be a hypergrad optimizer or wrap one, got Wrapper -> Adam"):
        unwrap_optimizer(Wrapper("optimizer", torch.optim.Adam(model.parameters())))
    with pytest.raises(TypeError, match="optimizer must be"):
        unwrap_optimizer(None)
    looping = Wrapper("optimizer", None)
    looping.optimizer = looping
    with pytest.raises(TypeError, match="optimizer must be"):
        unwrap_optimizer(looping)


def test_logged_rates_per_group_and_per_tensor_as_floats():
    model = net()
    first, second = model
    optimizer = hypergrad.SGDHD(
        [{"params": first.parameters(), "lr": torch.tensor(0.1)},
         {"params": second.weight, "granularity": "tensor"},
         {"params": second.bias, "granularity": "element"}],
        lr=0.1, hypergrad_lr=0.5,
    )
    history = []
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 3, generator=generator)).square().mean().backward()
        optimizer.step()
        history.append(hypergrad.logged_rates(optimizer, model.named_parameters(), key="rate"))
    assert set(history[-1]) == {"rate", "rate/pg1", "rate/pg2", "rate/1.weight", "rate/1.bias"}
    assert all(type(value) is float for step in history for value in step.values())
    assert history[0]["rate"] != history[-1]["rate"] == float(optimizer.param_groups[0]["lr"])
    rates = optimizer.learning_rates(model.named_parameters())
    assert history[-1]["rate/1.weight"] == rates["1.weight"]
    assert history[-1]["rate/1.bias"] == pytest.approx(rates["1.bias"].mean().item())
    assert set(hypergrad.logged_rates(optimizer)) == {"lr", "lr/pg1", "lr/pg2"}
    with pytest.raises(TypeError, match="key"):
        hypergrad.logged_rates(optimizer, key="")
