"""``fused=True``: the update through torch's fused kernels equals the multi-tensor path with HD on
(every flag of every base rule that has a fused kernel, every granularity, both rules), equals
torch.optim's fused step with HD off (float32, float64, bfloat16), and is refused where torch
refuses it."""

from __future__ import annotations

import contextlib

import pytest
import torch

import hypergrad
from hypergrad.sgd import HALF_DTYPES
from cases import BASE_FLAGS, TinyNet, batch_loss, flag_id, make_batches, one_per_base_rule, steps_on

STEPS = 20
FUSED_CASES = [case for case in one_per_base_rule() if case.base is not torch.optim.RMSprop]
HD_LR = {torch.optim.SGD: 1e-2, torch.optim.Adam: 1e-4, torch.optim.AdamW: 1e-4, torch.optim.Adagrad: 1e-4}
SWEEP = [(case, flags) for case in FUSED_CASES for flags in BASE_FLAGS[case.base]]
HD_SETTINGS = {
    "additive": dict(),
    "multiplicative-bounded": dict(hypergrad_rule="multiplicative", lr_bounds=(1e-3, 0.1)),
    "per-tensor-blend": dict(granularity="tensor", lr_limit=0.01),
    "per-weight": dict(granularity="element"),
    "scalefree-per-tensor": dict(hypergrad_rule="scalefree", granularity="tensor"),
}


def _run(case, options: dict, dtype: torch.dtype = torch.float64, steps: int = STEPS):
    """Learning rates, model and optimizer after ``steps`` steps (the float64 problem rounded to
    ``dtype``); a maximized loss is negated so that every run descends the same objective."""
    model = TinyNet().to(dtype)
    optimizer = case.make(model.parameters(), **options)
    sign = -1.0 if options.get("maximize", False) else 1.0
    lrs = []
    for x, y in make_batches(steps):
        optimizer.zero_grad()
        (sign * batch_loss(model, (x.to(dtype), y.to(dtype)))).backward()
        optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs, model, optimizer


def _assert_close_runs(first, second, rtol: float, atol: float) -> None:
    (lrs_a, model_a, opt_a), (lrs_b, model_b, opt_b) = first, second
    torch.testing.assert_close(lrs_a, lrs_b, rtol=rtol, atol=0)
    for p_a, p_b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(p_a, p_b, rtol=rtol, atol=atol)
        state_a, state_b = opt_a.state[p_a], opt_b.state[p_b]
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            torch.testing.assert_close(state_a[key], state_b[key], rtol=rtol, atol=atol, check_device=False)


@pytest.mark.parametrize("case, flags", SWEEP, ids=[f"{c.base.__name__}-{flag_id(f)}" for c, f in SWEEP])
def test_fused_equals_foreach_for_every_flag(case, flags):
    options = dict(hypergrad_lr=HD_LR[case.base], **flags)
    foreach = _run(case, dict(options, foreach=True))
    assert len(set(foreach[0])) > STEPS // 2, "the lr must adapt for the comparison to mean anything"
    _assert_close_runs(_run(case, dict(options, fused=True)), foreach, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hd", list(HD_SETTINGS))
@pytest.mark.parametrize("case", FUSED_CASES, ids=lambda c: c.base.__name__)
def test_fused_equals_foreach_at_every_granularity(case, hd):
    hypergrad_lr = 0.05 if hd.startswith(("multiplicative", "scalefree")) else HD_LR[case.base]
    options = dict(hypergrad_lr=hypergrad_lr, **HD_SETTINGS[hd])
    _assert_close_runs(
        _run(case, dict(options, fused=True)), _run(case, dict(options, foreach=True)), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", FUSED_CASES, ids=lambda c: c.base.__name__)
def test_fused_without_hypergradient_is_torchs_fused_step(case, dtype):
    if case.base is torch.optim.SGD and dtype in HALF_DTYPES:
        pytest.skip("SGDHD refuses it: torch's CPU fused SGD kernel leaves half-precision parameters unchanged")
    model = TinyNet(dtype=dtype)
    twin = TinyNet(dtype=dtype)
    ours = case.make(model.parameters(), hypergrad_lr=0.0, fused=True)
    theirs = case.base(twin.parameters(), lr=case.settings["lr"], fused=True)
    for batch in make_batches(10, dtype=dtype):
        for net, optimizer in ((model, ours), (twin, theirs)):
            optimizer.zero_grad()
            batch_loss(net, batch).backward()
            optimizer.step()
    for p_ours, p_theirs in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p_ours, p_theirs, rtol=0, atol=0)


LOW_PRECISION = [
    (case, dtype, tolerance)
    for case in FUSED_CASES
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2))
    if not (case.base is torch.optim.SGD and dtype in HALF_DTYPES)
]


@pytest.mark.parametrize(
    "case, dtype, tolerance", LOW_PRECISION, ids=[f"{c.base.__name__}-{d}" for c, d, _ in LOW_PRECISION]
)
def test_fused_equals_foreach_in_low_precision(case, dtype, tolerance):
    """Within the dtype's rounding, on fixed gradients (a model's own gradients would carry the
    rounding differences into the next step and grow them chaotically in bfloat16). torch's fused
    kernels compute in float32 internally for bfloat16; its foreach kernels round more often."""
    generator = torch.Generator().manual_seed(2)
    shapes = [p.shape for p in TinyNet().parameters()]
    gradients = [[torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype) for shape in shapes]
                 for _ in range(8)]
    runs = []
    for implementation in (dict(fused=True), dict(foreach=True)):
        params = [torch.nn.Parameter(p.detach().to(dtype)) for p in TinyNet().parameters()]
        optimizer = case.make(params, hypergrad_lr=HD_LR[case.base] * 1e-2, **implementation)
        runs.append((steps_on(optimizer, params, gradients), params))
    (fused_lrs, fused_params), (foreach_lrs, foreach_params) = runs
    assert len(set(foreach_lrs)) > 4, "the lr must adapt for the comparison to mean anything"
    torch.testing.assert_close(fused_lrs, foreach_lrs, rtol=tolerance, atol=0)
    for ours, theirs in zip(fused_params, foreach_params):
        torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("case", FUSED_CASES, ids=lambda c: c.base.__name__)
def test_fused_with_a_tensor_lr_equals_a_float_lr(case):
    options = dict(hypergrad_lr=HD_LR[case.base], fused=True)
    tensor_run = _run(case, dict(options, lr=torch.tensor(case.settings["lr"], dtype=torch.float64)))
    _assert_close_runs(tensor_run, _run(case, options), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", FUSED_CASES, ids=lambda c: c.base.__name__)
def test_fused_none_is_the_fused_path_on_the_cpu(case):
    """The default path of float parameters on the CPU is the fused one (tests/test_paths.py
    checks which kernels each choice runs)."""
    options = dict(hypergrad_lr=HD_LR[case.base])
    _assert_close_runs(_run(case, dict(options, fused=None)), _run(case, dict(options, fused=True)), rtol=0, atol=0)


@pytest.mark.parametrize("case", FUSED_CASES, ids=lambda c: c.base.__name__)
def test_fused_refusals_are_torchs(case):
    params = [torch.nn.Parameter(torch.zeros(3))]
    for optimizer_cls in (case.fast, case.base):
        with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
            optimizer_cls(params, lr=0.01, fused=True, foreach=True)
    complex_param = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex128))
    complex_param.grad = torch.ones_like(complex_param)
    optimizer = case.make([complex_param], fused=True)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating point"):
        optimizer.step()


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_fused_sgd_refuses_half_precision_on_the_cpu(dtype):
    """torch 2.13's CPU ``_fused_sgd_`` does not move float16/bfloat16 parameters: SGDHD says so
    before the step changes anything (the lr included)."""
    stuck = torch.ones(64, dtype=dtype)
    torch._fused_sgd_([stuck], [torch.ones_like(stuck)], [], weight_decay=0.0, momentum=0.0, lr=0.5,
                      dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
    assert torch.equal(stuck, torch.ones_like(stuck)), "torch's kernel works now: lift the refusal"
    param = torch.nn.Parameter(torch.ones(64, dtype=dtype))
    param.grad = torch.ones_like(param)
    optimizer = hypergrad.SGDHD([param], lr=0.1, fused=True)
    with pytest.raises(RuntimeError, match="leaves them unchanged"):
        optimizer.step()
    assert optimizer.param_groups[0]["lr"] == 0.1 and not optimizer.state[param]


def test_rmsprop_has_no_fused_kernel():
    """torch.optim.RMSprop has no fused step, so RMSpropHD offers no ``fused`` keyword."""
    with pytest.raises(TypeError, match="fused"):
        hypergrad.RMSpropHD([torch.nn.Parameter(torch.zeros(3))], fused=True)


COMPILED_CASES = {  # case: optimizer, settings, dtype, the compiled functions it must use (the rule: a tensor lr's)
    "Adam-f32": (
        hypergrad.AdamHD, dict(amsgrad=True, lr=torch.tensor(1e-2)), torch.float32,
        {("recomputed", True, False), "rule"},
    ),
    "AdamW-f64": (
        hypergrad.AdamWHD, dict(hypergrad_rule="multiplicative", granularity="tensor"), torch.float64,
        {("recomputed", True, True)},
    ),
    "SGDN-f64": (hypergrad.SGDHD, dict(momentum=0.9, nesterov=True), torch.float64, {("nesterov", True)}),
    "Adagrad-f32": (
        hypergrad.AdagradHD, dict(lr_decay=1e-2), torch.float32, {("stored", True), "adagrad directions"},
    ),
}


@pytest.mark.parametrize("case", list(COMPILED_CASES))
def test_compiled_statistics_equal_the_eager_ones(monkeypatch, case):
    """The fused path's compiled pieces (``_compiled.py``, off elsewhere in the suite): the
    statistics in one pass (Adam's recomputed directions, the kept directions of SGDN and Adagrad)
    and the scale-free rule (the default) in one call, for a tensor ``lr`` (a float one moves on
    host floats), give the eager learning rates and parameters, to float rounding."""
    from hypergrad import _compiled

    optimizer_cls, settings, dtype, expected = COMPILED_CASES[case]
    monkeypatch.setattr(_compiled, "_compiled", {})
    monkeypatch.setattr(_compiled, "MIN_ELEMENTS", 0)  # (a tiny model would take the eager passes)
    runs = []
    for switch in ("1", "0"):
        monkeypatch.setenv(_compiled.SWITCH, switch)
        torch.manual_seed(0)
        model = TinyNet().to(dtype)
        optimizer = optimizer_cls(model.parameters(), **{"lr": 1e-2, "hypergrad_lr": 1e-4, "fused": True, **settings})
        lrs = []
        for x, y in make_batches(6):
            optimizer.zero_grad()
            batch_loss(model, (x.to(dtype), y.to(dtype))).backward()
            optimizer.step()
            lrs.extend(float(rate) for rate in optimizer.learning_rates(model.named_parameters()).values())
        runs.append((lrs, list(model.parameters())))
        if switch == "1" and _compiled._failed:
            pytest.skip("torch.compile is unavailable here (no C++ compiler?)")
    assert set(_compiled._compiled) == expected
    (compiled_lrs, compiled_params), (eager_lrs, eager_params) = runs
    assert len(set(eager_lrs)) > 4, "the lr must adapt for the comparison to mean anything"
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(compiled_lrs, eager_lrs, rtol=tolerance, atol=0)
    torch.testing.assert_close(compiled_params, eager_params, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    "optimizer_cls, key",
    [(hypergrad.AdamHD, ("recomputed", False, False)), (hypergrad.AdagradHD, "adagrad directions")],
    ids=["Adam statistics", "Adagrad directions"],
)
def test_a_failed_compile_falls_back_to_the_eager_statistics(monkeypatch, optimizer_cls, key):
    """A compiler failure (no C++ compiler, ...) warns once; that step and every later one take
    the eager statistics (and directions), with the eager results bit for bit."""
    from hypergrad import _compiled

    def failing(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    runs = []
    for switch in ("1", "0"):
        monkeypatch.setenv(_compiled.SWITCH, switch)
        monkeypatch.setattr(_compiled, "_compiled", {key: failing})
        monkeypatch.setattr(_compiled, "_failed", False)
        monkeypatch.setattr(_compiled, "MIN_ELEMENTS", 0)
        torch.manual_seed(0)
        model = TinyNet()
        optimizer = optimizer_cls(model.parameters(), lr=1e-2, hypergrad_lr=1e-4, hypergrad_rule="additive", fused=True)
        expected = pytest.warns(RuntimeWarning, match="compiled statistics are unavailable")
        with expected if switch == "1" else contextlib.nullcontext():
            lrs = []
            for x, y in make_batches(4):
                optimizer.zero_grad()
                batch_loss(model, (x, y)).backward()
                optimizer.step()
                lrs.append(optimizer.param_groups[0]["lr"])
        assert _compiled._failed == (switch == "1")
        runs.append((lrs, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0] and len(set(runs[0][0])) > 2
    for fallback, eager in zip(runs[0][1], runs[1][1]):
        assert torch.equal(fallback, eager)

