"""Tests for the method registry and the models of the experiments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hypergrad
from experiments.core import methods
from experiments.core.methods import (
    METHODS,
    MethodSettings,
    MethodUnavailableError,
    default_hypergrad_lr,
    resolve_hypergrad_lr,
    resolve_methods,
    untuned_settings,
)
from experiments.core.models import build_model, has_batch_norm
from experiments.core.workloads import suite

SETTINGS = MethodSettings(lr=1e-3, hypergrad_lr=1e-3, weight_decay=1e-4, model_has_batch_norm=False)


def _available(name: str) -> bool:
    try:
        resolve_methods([name])
    except MethodUnavailableError:
        return False
    return True


def test_registry_lists_every_method_of_the_issue():
    expected = {
        "sgd", "sgd_hd", "sgdm", "sgdm_hd", "sgdn", "sgdn_hd", "adagrad", "adagrad_hd", "rmsprop", "rmsprop_hd",
        "adam", "adam_hd", "adamw", "adamw_hd", "prodigy", "dadapt_adam", "schedulefree_adamw", "dog",
        "sgd_hd_sf", "sgdn_hd_sf", "adam_hd_sf", "adamw_hd_sf", "adagrad_hd_sf", "rmsprop_hd_sf", "adam_hd_mult",
        "hdm", "mechanic", "schedulefree_adamw_hd", "schedulefree_sgd_hd", "muon", "muon_hd",
        "sgd_hd_bracket", "sgdn_hd_bracket", "adam_hd_bracket",
    }
    assert set(METHODS) == expected
    assert methods.PAPER_METHODS == ("sgd", "sgd_hd", "sgdn", "sgdn_hd", "adam", "adam_hd")


@pytest.mark.parametrize("name, class_name", [("sgdn_hd_sf", "SGDHD"), ("adam_hd_sf", "AdamHD")])
@pytest.mark.parametrize("task", ["logreg", "cnn"])
def test_scalefree_methods_take_the_rule_and_its_one_default_beta(name, class_name, task):
    beta = methods.resolve_hypergrad_lr(name, task)
    assert beta == 0.05
    settings = methods.MethodSettings(lr=1e-3, hypergrad_lr=beta, weight_decay=1e-4, model_has_batch_norm=False)
    group = methods.build_optimizer(name, nn.Linear(3, 2).parameters(), settings).param_groups[0]
    assert type(methods.build_optimizer(name, nn.Linear(3, 2).parameters(), settings)) is getattr(hypergrad, class_name)
    assert group["hypergrad_rule"] == "scalefree" and group["hypergrad_lr"] == 0.05
    assert methods.resolve_hypergrad_lr(name, task, 0.1) == 0.1


@pytest.mark.parametrize(
    "name, torch_class, expected",
    [
        ("sgd", torch.optim.SGD, {"momentum": 0, "nesterov": False}),
        ("sgdm", torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
        ("sgdn", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
        ("adagrad", torch.optim.Adagrad, {}),
        ("rmsprop", torch.optim.RMSprop, {}),
        ("adam", torch.optim.Adam, {}),
        ("adamw", torch.optim.AdamW, {}),
    ],
)
def test_baselines_are_torch_optim_with_alpha0_and_weight_decay(name, torch_class, expected):
    optimizer = methods.build_optimizer(name, nn.Linear(3, 2).parameters(), SETTINGS)
    assert type(optimizer) is torch_class
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["weight_decay"] == 1e-4
    for key, value in expected.items():
        assert optimizer.defaults[key] == value


@pytest.mark.parametrize(
    "name, class_name, momentum, nesterov",
    [("sgd_hd", "SGDHD", 0.0, False), ("sgdm_hd", "SGDHD", 0.9, False), ("sgdn_hd", "SGDHD", 0.9, True),
     ("adam_hd", "AdamHD", None, None), ("adamw_hd", "AdamWHD", None, None),
     ("adagrad_hd", "AdagradHD", None, None), ("rmsprop_hd", "RMSpropHD", None, None)],
)
def test_hd_methods_build_hypergrad_classes_or_say_they_are_missing(name, class_name, momentum, nesterov):
    if not hasattr(hypergrad, class_name):
        with pytest.raises(MethodUnavailableError, match=f"hypergrad.{class_name} is not available"):
            resolve_methods([name])
        return
    optimizer = methods.build_optimizer(name, nn.Linear(3, 2).parameters(), SETTINGS)
    assert type(optimizer) is getattr(hypergrad, class_name)
    group = optimizer.param_groups[0]
    assert group["hypergrad_lr"] == 1e-3 and float(group["lr"]) == 1e-3 and group["weight_decay"] == 1e-4
    if momentum is not None:
        assert group["momentum"] == momentum and group["nesterov"] == nesterov


def test_missing_hd_class_gives_a_clear_error(monkeypatch):
    monkeypatch.delattr(hypergrad, "AdamHD")
    with pytest.raises(MethodUnavailableError, match="hypergrad.AdamHD is not available"):
        resolve_methods(["sgd", "adam_hd"])


def test_missing_peer_package_names_the_pip_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # makes the import fail
    with pytest.raises(MethodUnavailableError, match="pip install prodigyopt"):
        resolve_methods(["prodigy"])


def test_unknown_or_repeated_methods():
    with pytest.raises(ValueError, match="unknown method"):
        resolve_methods(["sgd", "lion"])
    with pytest.raises(ValueError, match="must not repeat"):
        resolve_methods(["sgd", "sgd"])


def test_default_hypergrad_lr_follows_the_reference_code():
    assert default_hypergrad_lr("sgd_hd", "logreg") == 1e-3 and default_hypergrad_lr("sgdn_hd", "vgg") == 1e-3
    assert default_hypergrad_lr("adam_hd", "logreg") == 1e-7 and default_hypergrad_lr("adam_hd", "mlp") == 1e-7
    assert default_hypergrad_lr("adam_hd", "cnn") == 1e-8 and default_hypergrad_lr("adam_hd", "vgg") == 1e-8
    assert default_hypergrad_lr("adam", "logreg") is None


def test_resolve_hypergrad_lr_keeps_a_given_beta_and_drops_it_without_hd():
    assert resolve_hypergrad_lr("adam_hd", "cnn") == default_hypergrad_lr("adam_hd", "cnn")
    assert resolve_hypergrad_lr("adam_hd", "cnn", 1e-4) == 1e-4
    assert resolve_hypergrad_lr("sgd_hd", "mlp", 0.0) == 0.0  # zero is a beta, not "the default"
    assert resolve_hypergrad_lr("adam", "mlp", 1e-4) is None


@pytest.mark.parametrize("name", ["prodigy", "dadapt_adam", "schedulefree_adamw", "dog"])
def test_peers_use_their_documented_defaults_and_report_their_step_size(name):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = methods.build_optimizer(name, model.parameters(), SETTINGS)
    spec = METHODS[name]
    assert not spec.uses_alpha0
    documented_lr = {"prodigy": 1.0, "dadapt_adam": 1.0, "schedulefree_adamw": 0.0025, "dog": 1.0}[name]
    assert optimizer.defaults["lr"] == documented_lr and optimizer.defaults["weight_decay"] == 1e-4
    if spec.has_train_eval_modes:
        optimizer.train()
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert math.isfinite(spec.effective_lr(optimizer)) and spec.effective_lr(optimizer) > 0
    if spec.has_train_eval_modes:
        optimizer.eval()


def test_untuned_settings_are_the_constructors_own_defaults():
    import hypergrad

    assert methods.untuned_settings("adamw", False) == MethodSettings(1e-3, None, 1e-2, False)
    assert methods.untuned_settings("rmsprop_hd", True) == MethodSettings(1e-2, 1e-6, 0.0, True)
    assert methods.untuned_settings("sgd_hd", False).hypergrad_lr == 1e-3
    assert methods.untuned_settings("prodigy", False).weight_decay == 0.0
    assert methods.untuned_settings("mechanic", False) == MethodSettings(1e-3, None, 1e-2, False)
    mult = methods.untuned_settings("adam_hd_mult", False)
    optimizer = methods.build_optimizer("adam_hd_mult", nn.Linear(2, 2).parameters(), mult)
    assert optimizer.defaults["hypergrad_rule"] == "multiplicative"
    assert optimizer.defaults["hypergrad_lr"] == methods.MULTIPLICATIVE_HYPERGRAD_LR
    assert isinstance(methods.build_optimizer("hdm", nn.Linear(2, 2).parameters(), mult), hypergrad.HDM)


def test_dog_follows_its_batch_norm_advice():
    params = list(nn.Linear(2, 2).parameters())
    with_bn = methods.build_optimizer("dog", params, MethodSettings(1e-3, None, 0.0, model_has_batch_norm=True))
    without_bn = methods.build_optimizer("dog", params, MethodSettings(1e-3, None, 0.0, model_has_batch_norm=False))
    assert with_bn.defaults["reps_rel"] == 1e-4 and without_bn.defaults["reps_rel"] == 1e-6


def test_models_have_the_papers_shapes_and_reference_init():
    assert sum(p.numel() for p in build_model("logreg").parameters()) == 784 * 10 + 10
    assert sum(p.numel() for p in build_model("mlp").parameters()) == 784 * 1000 + 1000 + 1000 * 1000 + 1000 + 1000 * 10 + 10
    # Seeded logreg init equals a seeded nn.Linear(784, 10): the reference code's LogReg.
    torch.manual_seed(3)
    reference = nn.Linear(784, 10)
    torch.manual_seed(3)
    ours = build_model("logreg")
    torch.testing.assert_close(ours[1].weight, reference.weight, rtol=0, atol=0)
    for task, shape in (("logreg", (1, 28, 28)), ("mlp", (1, 28, 28)), ("cnn", (1, 28, 28)), ("vgg", (3, 32, 32))):
        model = build_model(task).eval()
        assert model(torch.randn(2, *shape)).shape == (2, 10)
        assert has_batch_norm(model) == (task in ("cnn", "vgg"))
    vgg = build_model("vgg")
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in vgg.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 13 and len(linears) == 3  # VGG-16
    assert suite("paper") == ("logreg", "mlp", "cnn", "vgg")


def test_one_name_under_two_configurations_is_two_named_settings():
    # adagrad_hd: the paper's beta for the task under "paper", the class's own under "untuned".
    paper = methods.resolve_settings("adagrad_hd", "paper", "logreg", False)
    untuned = methods.resolve_settings("adagrad_hd", "untuned", "logreg", False)
    assert paper == MethodSettings(1e-3, 1e-7, 1e-4, False)
    assert untuned == methods.untuned_settings("adagrad_hd", False) and untuned.hypergrad_lr == 1e-6
    assert methods.resolve_settings("adam_hd", "paper", "cnn", True).hypergrad_lr == 1e-8
    # Given values replace the configuration's defaults; a method without HD gets no beta.
    assert methods.resolve_settings("adamw", "untuned", "mlp", False, lr=1e-2) == MethodSettings(1e-2, None, 1e-2, False)
    assert methods.resolve_settings("adam", "paper", "mlp", False, hypergrad_lr=1e-4).hypergrad_lr is None
    with pytest.raises(ValueError, match="configuration"):
        methods.resolve_settings("adam", "tuned", "mlp", False)


def _muon_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 3))


def _closure(model, optimizer, x, y):
    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def test_muon_entries_split_the_model_and_muon_is_torchs_own_pair():
    """``muon`` is torch.optim.Muon on the hidden matrices and torch.optim.AdamW on the rest, at
    their defaults; ``muon_hd`` the same split with HD (its rates move), both through the split."""
    x, y = torch.randn(16, 10, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 3
    models = {name: _muon_model() for name in ("muon", "muon_hd", "torch")}
    optimizers = {name: METHODS[name].build(METHODS[name].parameters(models[name]), untuned_settings(name, False))
                  for name in ("muon", "muon_hd")}
    hidden = {"0.weight", "2.weight"}
    named = list(models["torch"].named_parameters())
    pair = (torch.optim.Muon([p for n, p in named if n in hidden]),
            torch.optim.AdamW([p for n, p in named if n not in hidden]))
    for _ in range(4):
        for name, optimizer in optimizers.items():
            optimizer.step(_closure(models[name], optimizer, x, y))
        for part in pair:
            part.zero_grad()
        torch.nn.functional.cross_entropy(models["torch"](x), y).backward()
        for part in pair:
            part.step()
    for ours, theirs in zip(models["muon"].parameters(), models["torch"].parameters()):
        assert torch.equal(ours, theirs)
    assert all(float(group["lr"]) != 1e-3 for group in optimizers["muon_hd"].param_groups)
    restored = METHODS["muon"].build(METHODS["muon"].parameters(_muon_model()), untuned_settings("muon", False))
    restored.load_state_dict(optimizers["muon"].state_dict())
    assert restored.state_dict()["parts"][0]["state"][0]["momentum_buffer"].equal(
        optimizers["muon"].state_dict()["parts"][0]["state"][0]["momentum_buffer"])
