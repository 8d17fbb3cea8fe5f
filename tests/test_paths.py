"""The path a step takes: with neither ``fused`` nor ``foreach`` given, the fastest correct one
for the parameters (torch's fused kernel for float32/float64 parameters on the CPU, where the
base rule has one); a ``fused`` or ``foreach`` given always wins."""

from __future__ import annotations

import pytest
import torch

import hypergrad
from hypergrad import adagrad, adam, sgd

#: Each optimizer with a fused kernel, and the module attribute through which it calls the kernel.
KERNELS = [
    (hypergrad.SGDHD, sgd, "fused_sgd", dict(lr=0.01)),
    (hypergrad.SGDHD, sgd, "fused_sgd", dict(lr=0.01, momentum=0.9, nesterov=True)),
    (hypergrad.AdamHD, adam, "fused_adam", dict(lr=0.01)),
    (hypergrad.AdamWHD, adam, "fused_adamw", dict(lr=0.01)),
    (hypergrad.AdagradHD, adagrad, "fused_adagrad", dict(lr=0.01)),
]
IDS = ["sgd", "sgdn", "adam", "adamw", "adagrad"]


def _fused_calls(monkeypatch, module, name) -> list[int]:
    """Count the calls of the fused kernel ``module.name`` (still running it)."""
    calls: list[int] = []
    kernel = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _steps(optimizer_cls, settings, dtype=torch.float32, steps=3, **flags):
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype)) for shape in ((4, 3), (4,))]
    optimizer = optimizer_cls(params, **settings, **flags)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=dtype)
        optimizer.step()
    return params


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("optimizer_cls, module, name, settings", KERNELS, ids=IDS)
def test_the_default_on_the_cpu_is_the_fused_kernel(monkeypatch, optimizer_cls, module, name, settings, dtype):
    calls = _fused_calls(monkeypatch, module, name)
    _steps(optimizer_cls, settings, dtype)
    assert calls, "the default path did not take the fused kernel"


@pytest.mark.parametrize("flags", [dict(fused=False), dict(foreach=False), dict(foreach=True)], ids=str)
@pytest.mark.parametrize("optimizer_cls, module, name, settings", KERNELS, ids=IDS)
def test_a_given_flag_wins(monkeypatch, optimizer_cls, module, name, settings, flags):
    default = _steps(optimizer_cls, settings)
    calls = _fused_calls(monkeypatch, module, name)
    chosen = _steps(optimizer_cls, settings, **flags)
    assert not calls, f"{flags} took the fused kernel"
    optimizer = optimizer_cls(chosen, **settings, **flags)
    assert optimizer._use_foreach(optimizer.param_groups[0], chosen) == (flags.get("foreach") is True)
    for ours, theirs in zip(chosen, default):  # the same step on another path
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer_cls, module, name, settings", KERNELS, ids=IDS)
def test_no_fused_default_where_it_is_not_the_right_path(monkeypatch, optimizer_cls, module, name, settings):
    """Half precision (SGD's CPU kernel would leave it unchanged), complex parameters (the kernels
    refuse them) and ``capturable`` take torch's default path, and step."""
    calls = _fused_calls(monkeypatch, module, name)
    for dtype in (torch.bfloat16, torch.complex64):
        before = torch.ones(3, 2, dtype=dtype)
        param = torch.nn.Parameter(before.clone())
        param.grad = torch.full_like(param, 0.5)
        optimizer_cls([param], **settings).step()
        assert not torch.equal(param.detach(), before)
    if "capturable" in optimizer_cls.__init__.__signature__.parameters:
        _steps(optimizer_cls, settings, capturable=True)
    assert not calls


def test_rmsprop_default_is_torchs_for_loop():
    params = [torch.nn.Parameter(torch.ones(3))]
    optimizer = hypergrad.RMSpropHD(params)
    assert not optimizer._use_fused(optimizer.param_groups[0])
    assert not optimizer._use_foreach(optimizer.param_groups[0], params)


def test_the_default_is_decided_per_group():
    """A group of float parameters is fused, a group of half ones in the same optimizer is not."""
    floats = torch.nn.Parameter(torch.ones(3))
    halves = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    optimizer = hypergrad.SGDHD([{"params": [floats]}, {"params": [halves]}], lr=0.1)
    for p in (floats, halves):
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert [optimizer._use_fused(group) for group in optimizer.param_groups] == [True, False]
    assert torch.equal(halves.detach(), torch.full_like(halves, 0.9))


COMPILED_KEYS = [  # optimizer, settings, _compiled.MIN_ELEMENTS (None: its own), the compiled calls taken
    (hypergrad.AdamHD, dict(hypergrad_rule="additive"), None, set()),
    (hypergrad.AdamHD, dict(hypergrad_rule="additive"), 0, {("recomputed", False, False)}),
    (hypergrad.AdagradHD, dict(hypergrad_rule="additive"), None, set()),
    (hypergrad.AdagradHD, dict(hypergrad_rule="additive"), 0, {"adagrad directions"}),
    (hypergrad.SGDHD, dict(momentum=0.9, nesterov=True), None, set()),
    (hypergrad.SGDHD, dict(momentum=0.9, nesterov=True), 0, {("nesterov", True)}),
    (hypergrad.AdamHD, dict(), None, {("recomputed", True, False)}),
    (hypergrad.AdamHD, dict(lr=torch.tensor(0.01)), None, {("recomputed", True, False), "rule"}),
]


@pytest.mark.parametrize("optimizer_cls, settings, minimum, expected", COMPILED_KEYS,
                         ids=["adam-small", "adam-large", "adagrad-small", "adagrad-large", "sgdn-scalefree-small",
                              "sgdn-scalefree-large", "adam-scalefree", "adam-scalefree-tensor-lr"])
def test_which_compiled_passes_a_step_takes(monkeypatch, optimizer_cls, settings, minimum, expected):
    """Below ``_compiled.MIN_ELEMENTS`` the passes whose eager version is light (Adam's statistics
    for the additive rule, the kept directions' sums, Adagrad's direction) are eager (the compiled
    call would cost more than it saves); Adam's statistics with the norms are compiled at every
    size; the scale-free rule runs on host floats for a float ``lr``, in a compiled call for a
    tensor one."""
    from hypergrad import _compiled

    keys = []

    def recorded(key, function, *args):
        keys.append(key)
        return _compiled._UNAVAILABLE  # (the eager code then runs: nothing compiles here)

    monkeypatch.setenv(_compiled.SWITCH, "1")
    monkeypatch.setattr(_compiled, "_call", recorded)
    if minimum is not None:
        monkeypatch.setattr(_compiled, "MIN_ELEMENTS", minimum)
    _steps(optimizer_cls, {"lr": 0.01, **settings}, fused=True)
    assert set(keys) == expected


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
@pytest.mark.parametrize("optimizer_cls, module, name, settings", KERNELS, ids=IDS)
def test_the_default_compiles_only_large_groups(monkeypatch, optimizer_cls, module, name, settings, large):
    """The default path takes the fused kernel at every size, but compiles the passes around it
    only for groups of ``_paths.COMPILED_BY_DEFAULT`` elements or more (compiling costs
    seconds); a small group's default step takes no compiled call."""
    from hypergrad import _compiled, _paths

    keys = []
    monkeypatch.setenv(_compiled.SWITCH, "1")
    monkeypatch.setattr(_compiled, "_call", lambda key, *args: keys.append(key) or _compiled._UNAVAILABLE)
    monkeypatch.setattr(_compiled, "MIN_ELEMENTS", 0)
    if large:
        monkeypatch.setattr(_paths, "COMPILED_BY_DEFAULT", 0)
    calls = _fused_calls(monkeypatch, module, name)
    _steps(optimizer_cls, settings)
    assert calls and bool(keys) == large


@pytest.mark.parametrize("scales", [None, [0.5] * 4, [0.5, 0.25, 0.5, 0.5]], ids=["unscaled", "one-scale", "scales"])
@pytest.mark.parametrize("rule", ["additive", "scalefree"])
def test_a_small_groups_sums_come_from_flat_copies(rule, scales):
    """One rate per group (``summed=True``): a small group's statistics are one row taken over flat
    copies of its gradients and directions, equal to the sum of the per-tensor rows (float64, to
    rounding); per-tensor rows where the directions' scales differ or the group is large."""
    from hypergrad._hypergradient import FLAT_ELEMENTS_PER_DOT, tensor_statistics

    generator = torch.Generator().manual_seed(0)
    shapes = [(6, 5), (6,), (3, 6), (3,)]
    grads, directions = ([torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
                         for _ in range(2))
    rows = tensor_statistics(grads, iter(directions), rule, scales)
    summed = tensor_statistics(grads, iter(directions), rule, scales, summed=True)
    assert rows.shape[0] == 4 and summed.shape[0] == (1 if scales is None or len(set(scales)) == 1 else 4)
    torch.testing.assert_close(summed.sum(0), rows.sum(0), rtol=1e-14, atol=0)
    large = [torch.zeros(FLAT_ELEMENTS_PER_DOT * 3 * len(shapes), dtype=torch.float64)] + grads[1:]
    assert tensor_statistics(large, iter([large[0], *directions[1:]]), rule, summed=True).shape[0] == 4

