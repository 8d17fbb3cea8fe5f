"""timm's registry builds the HD optimizers by name after ``register()``, with timm's param groups
(no weight decay on biases and norm weights) and its Lookahead wrapper.

timm imports torchvision at import time; where torchvision cannot be imported (on a CPU-only
machine, PyPI's torchvision wheels are CUDA builds that do not load with torch's CPU build), these
tests skip and say why."""

from __future__ import annotations

import pytest
import torch

import hypergrad

try:
    import timm.optim
except Exception as error:  # torchvision's import fails with RuntimeError, not only ImportError
    pytest.skip(f"timm cannot be imported here ({type(error).__name__}: {error})", allow_module_level=True)
from timm.optim import _optim_factory  # noqa: E402

from hypergrad.integrations.timm import OPTIMIZERS, register  # noqa: E402


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def train(optimizer: torch.optim.Optimizer, net: torch.nn.Module, steps: int = 4) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 6, generator=generator), torch.randn(8, 2, generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()


@pytest.fixture(autouse=True)
def registered():
    register()


@pytest.mark.parametrize("name, cls", [("sgdhd", hypergrad.SGDHD), ("adamhd", hypergrad.AdamHD),
                                       ("adamwhd", hypergrad.AdamWHD), ("adagradhd", hypergrad.AdagradHD),
                                       ("rmsprophd", hypergrad.RMSpropHD)])
def test_create_optimizer_v2_by_name(name, cls):
    net = model()
    lr = 1e-2
    optimizer = timm.optim.create_optimizer_v2(net, opt=name, lr=lr, weight_decay=0.05, hypergrad_lr=1e-3)
    assert type(optimizer) is cls
    # timm's groups: weight decay on the matrices only (not on biases nor the LayerNorm).
    plain, decayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(net[0].weight), id(net[3].weight)}
    train(optimizer, net)
    assert optimizer.param_groups[0]["lr"] != lr


def test_defaults_as_timms_twins():
    net = model()
    sgd = timm.optim.create_optimizer_v2(net, opt="sgdhd", lr=0.1)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"] is True
    assert timm.optim.create_optimizer_v2(net, opt="rmsprophd", lr=0.1).defaults["alpha"] == 0.9
    assert {info.name for info in OPTIMIZERS} <= set(timm.optim.list_optimizers("*hd"))


def test_lookahead_and_learning_rates():
    net = model()
    optimizer = timm.optim.create_optimizer_v2(net, opt="lookahead_adamwhd", lr=1e-2, hypergrad_lr=1e-3)
    assert type(optimizer).__name__ == "Lookahead"
    train(optimizer, net)
    inner = hypergrad.integrations.unwrap_optimizer(optimizer)
    assert type(inner) is hypergrad.AdamWHD
    named = list(net.named_parameters())
    assert hypergrad.learning_rates(optimizer, named) == inner.learning_rates(named)


def test_register_is_idempotent_and_checks_the_registry():
    registry = _optim_factory.OptimizerRegistry()
    register(registry)
    register(registry)
    assert registry.list_optimizers() == sorted(info.name for info in OPTIMIZERS)
    with pytest.raises(TypeError, match="registry"):
        register({})
