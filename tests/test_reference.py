"""The fast optimizers follow their slow, obviously correct twins in hypergrad.reference."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

from hypergrad import reference
from cases import IMPLEMENTATION_KEYS, TinyNet, flag_id, follow_twin, hd_variants, one_per_base_rule, pick, with_beta

VARIANTS = pick(
    "sgd", "sgd-wd-maximize-bounded", "momentum-dampening", "nesterov-wd", "sgd-multiplicative", "sgd-bounded",
    "adam", "amsgrad-wd-maximize-bounded", "adam-multiplicative", "adam-bounded", "nesterov-scalefree",
    "adam-scalefree", "schedulefree-adamw", "schedulefree-sgd", "schedulefree-adamw-scalefree",
)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_fast_optimizer_matches_reference(name, foreach):
    lrs, _ = follow_twin(VARIANTS[name], TinyNet, 30, foreach=foreach)
    assert len(set(lrs)) >= 3, "the learning rate should actually adapt in this test"


# -- the family (AdamW, Adagrad, RMSprop) and the variants (rule x granularity x bounds x blend) ----
# With their additive hypergrad_lr; the multiplicative and scale-free variants take 0.05.
FAMILY_RULES = pick(
    "nesterov-fast-wd", "heavy-ball", "amsgrad-wd", "adamw-strong-decay", "adagrad-decay-init",
    "rmsprop-centered-half-momentum", "rmsprop-maximize",
)


@pytest.mark.parametrize("variant", hd_variants(), ids=flag_id)
@pytest.mark.parametrize("rule", list(FAMILY_RULES))
def test_family_follows_reference_in_every_variant(rule, variant):
    case = FAMILY_RULES[rule]
    _, fast_rates = follow_twin(case, TinyNet, 15, **with_beta(case, variant))
    initial = case.settings["lr"]
    moved = [torch.as_tensor(r) for r in fast_rates.values()]
    assert any(not torch.allclose(r, torch.full_like(r, initial)) for r in moved)  # HD did something


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("rule", list(FAMILY_RULES))
def test_family_foreach_and_for_loop_paths_follow_reference(rule, foreach):
    follow_twin(FAMILY_RULES[rule], TinyNet, 15, foreach=foreach)


@pytest.mark.parametrize("case", one_per_base_rule(), ids=lambda case: case.fast.__name__)
def test_twins_take_the_fast_optimizers_arguments_and_defaults(case):
    """A twin writes out its own signature: the fast optimizer's without the implementation
    switches, the same kinds and defaults; both say the defaults the constructors actually use,
    torch.optim's where shared, and ``hypergrad_lr=None`` means the same beta under every rule."""
    assert "__signature__" not in vars(case.reference), "the twin's signature is its own __init__'s"
    fast_signature = inspect.signature(case.fast).parameters
    twin_signature = inspect.signature(case.reference).parameters
    assert list(twin_signature) == [name for name in fast_signature if name not in IMPLEMENTATION_KEYS]
    for name, parameter in twin_signature.items():
        assert (parameter.kind, parameter.default) == (fast_signature[name].kind, fast_signature[name].default), name

    params = [torch.nn.Parameter(torch.zeros(2))]
    fast_defaults, twin_defaults = case.fast(params).defaults, case.reference(params).defaults
    for name, parameter in twin_signature.items():
        if name != "params":
            assert twin_defaults[name] == fast_defaults[name] == parameter.default, name
    for name, parameter in inspect.signature(case.base).parameters.items():
        if name in fast_signature:
            assert fast_signature[name].default == parameter.default, name
    for rule in ("scalefree", "additive", "multiplicative"):
        fast_beta = case.fast(params, hypergrad_rule=rule).param_groups[0]["hypergrad_lr"]
        assert case.reference(params, hypergrad_rule=rule).param_groups[0]["hypergrad_lr"] == fast_beta, rule


def test_twins_import_nothing_from_the_fast_optimizers():
    """The twins are a second statement of the optimizers, not a copy: their modules import only
    each other, torch and the standard library."""
    package = Path(reference.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1) and not (node.module or "").startswith("hypergrad"), (path.name, node.module)
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("hypergrad") for alias in node.names), path.name


def test_a_twin_refuses_a_rule_it_does_not_write_out():
    """The twins write out the additive, multiplicative and scale-free rules; given the bracketing
    rule they say so rather than follow another."""
    with pytest.raises(ValueError, match="bracket"):
        reference.SGDHDReference(TinyNet().parameters(), lr=0.01, hypergrad_rule="bracket")
