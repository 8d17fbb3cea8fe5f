"""hypergrad.HDM, held to a slow plain-loop twin written from the docstring's equations."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from hypergrad import HDM

DEFAULTS = dict(lipschitz=None, p_lr=10.0, p_lr_decay=0.8, p_lr_decay_every=50, p_max=100.0,
                beta=0.95, beta_lr=3.0, beta_max=0.9995, lipschitz_steps=0, momentum_damping=0.0)


def _norm(v: torch.Tensor) -> float:
    return math.sqrt(float((v * v).sum()))


def reference_hdm(f_and_grad, x0: torch.Tensor, steps: int, **settings) -> list[torch.Tensor]:
    """HDM on one flat tensor, one trial per step, scalars as python floats. Returns the iterates."""
    s = {**DEFAULTS, **settings}
    lipschitz, beta = s["lipschitz"], s["beta"]
    x = x0.clone()
    f, g = f_and_grad(x)
    prev = x.clone()
    P, P_sq_sum = torch.zeros_like(x), torch.zeros_like(x)
    beta_sq_sum, probe_scale, trials, ratios = 0.0, 1.0, 0, []

    def move():
        if lipschitz is None:
            length = 1e-3 * probe_scale * max(1.0, _norm(x))
            return -(length / _norm(g) if _norm(g) > 0 else 0.0) * g
        return beta * (x - prev) - P * g

    def update(new_g):  # AdaGrad on P and beta along -g+ g / d and g+ . m / d
        nonlocal P, beta
        m = x - prev
        d = float((g * g).sum()) + s["momentum_damping"] * lipschitz**2 * float((m * m).sum()) + 1e-12
        lr = s["p_lr"] / lipschitz * s["p_lr_decay"] ** (trials // s["p_lr_decay_every"])
        h = -new_g * g / d
        P_sq_sum.add_(h * h)
        P = (P - lr * h / P_sq_sum.sqrt().clamp_min(torch.finfo(x.dtype).tiny)).clamp(0.0, s["p_max"] / lipschitz)
        h_beta = float((new_g * m).sum()) / d
        nonlocal beta_sq_sum
        beta_sq_sum += h_beta * h_beta
        if beta_sq_sum > 0:
            beta = min(max(beta - s["beta_lr"] * h_beta / math.sqrt(beta_sq_sum), 0.0), s["beta_max"])

    iterates = []
    for _ in range(steps):
        step = move()
        if not bool(step.any()):
            if lipschitz is not None:
                update(g)  # the trial point is x itself
            step = move()
        if bool(step.any()):
            new_f, new_g = f_and_grad(x + step)
            finite = math.isfinite(new_f) and bool(torch.isfinite(new_g).all())
            accepted = finite and new_f < f
            probing = lipschitz is None
            if not probing:
                if finite:
                    update(new_g)
                else:
                    beta, P = beta * 0.5, P * 0.5
            if finite:
                ratio = _norm(new_g - g) / _norm(step)
                if probing:
                    if ratio > 0 and math.isfinite(ratio):
                        lipschitz = ratio
                    else:
                        probe_scale *= 10.0
                elif accepted and len(ratios) < s["lipschitz_steps"]:
                    ratios.append(ratio)
                    if len(ratios) == s["lipschitz_steps"]:
                        lipschitz = sum(ratios) / len(ratios)
                        beta_sq_sum = 0.0
                        P_sq_sum.zero_()
                        P = P.clamp(0.0, s["p_max"] / lipschitz)
            trials += 1
            if accepted:
                prev = (x + step).clone() if probing else x
                x, f, g = x + step, new_f, new_g
            elif not probing:
                prev = x.clone()  # null step: x_{k+1} = x_k, so the next momentum is zero
        iterates.append(x.clone())
    return iterates


def logistic_problem(n: int = 60, d: int = 5, dtype=torch.float64, seed: int = 0):
    """Mean logistic loss on overlapping Gaussian classes (a finite minimiser)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=generator, dtype=dtype) * torch.linspace(0.3, 3.0, d, dtype=dtype)
    labels = (torch.rand(n, generator=generator, dtype=dtype) < torch.sigmoid(features.sum(1))).to(dtype)

    def loss(w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(features @ w, labels)

    def f_and_grad(w: torch.Tensor) -> tuple[float, torch.Tensor]:
        w = w.detach().requires_grad_(True)
        value = loss(w)
        (grad,) = torch.autograd.grad(value, w)
        return float(value.detach()), grad

    return loss, f_and_grad, features


def run_hdm(loss, params, steps, optimizer=None, **settings):
    optimizer = optimizer or HDM(params, **settings)
    calls = []

    def closure():
        optimizer.zero_grad()
        value = loss(*params)
        value.backward()
        calls.append(1)
        return value

    for _ in range(steps):
        optimizer.step(closure)
    return optimizer, len(calls)


@pytest.mark.parametrize("damping", [0.0, 0.25, 4.0])
def test_momentum_damping_enters_the_surrogate_s_denominator_hand_computed(damping):
    """f(x) = x^2 / 2 in 1-D (g = x), L = 1 given, beta = 0.5, float64: three steps by hand."""
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    optimizer = HDM([x], lipschitz=1.0, beta=0.5, momentum_damping=damping)

    def step():
        run_hdm(lambda w: 0.5 * (w * w).sum(), [x], 1, optimizer=optimizer)
        return x.item(), optimizer.state[x]["P"].item()

    eps = 1e-12
    # Step 1: P = m = 0, so x+ = x, g+ = g = 1: h_P = -1 / (1 + eps), P = 10 / L = 10. The trial
    # 1 - 10 = -9 is rejected (f = 40.5 > 0.5): h_P = 9 / (1 + eps), G_P = 82 / (1 + eps)^2.
    p1 = 10.0 - 10.0 * 9.0 / math.sqrt(82.0)
    assert step() == pytest.approx((1.0, p1), rel=1e-13)
    # Step 2 from x = 1, m = 0 (the null step restarted the momentum): y = 1 - p1 is accepted.
    y, d = 1.0 - p1, 1.0 + eps
    h, g_sq = -y / d, 82.0 / d**2 + (y / d) ** 2
    p2 = p1 - 10.0 * h / math.sqrt(g_sq)
    assert step() == pytest.approx((y, p2), rel=1e-13)
    # Step 3 from x = y with m = y - 1: d = g^2 + gamma L^2 m^2 + eps enters h_P (not beta's first
    # AdaGrad step, which is scale-free).
    m = y - 1.0
    trial = y - p2 * y + 0.5 * m
    d = y * y + damping * m * m + eps
    h = -trial * y / d
    p3 = p2 - 10.0 * h / math.sqrt(g_sq + h * h)
    assert abs(trial) < abs(y)  # accepted
    assert step() == pytest.approx((trial, p3), rel=1e-12)
    assert optimizer.param_groups[0]["beta"] in (0.0, 0.9995)  # 0.5 -+ beta_lr, clipped


@pytest.mark.parametrize("settings", [
    {}, {"lipschitz": 2.0, "lipschitz_steps": 10}, {"lipschitz_steps": 4, "beta": 0.5, "p_lr_decay_every": 7},
    {"momentum_damping": 0.25}, {"lipschitz": 2.0, "momentum_damping": 1.0, "lipschitz_steps": 5},
])
def test_matches_the_plain_twin(settings):
    loss, f_and_grad, _ = logistic_problem()
    x0 = torch.full((5,), 0.1, dtype=torch.float64)
    expected = reference_hdm(f_and_grad, x0, 40, **settings)
    w = x0.clone().requires_grad_(True)
    optimizer = HDM([w], **settings)
    for step, target in enumerate(expected):
        run_hdm(loss, [w], 1, optimizer=optimizer)
        torch.testing.assert_close(w.detach(), target, rtol=1e-12, atol=1e-14, msg=f"step {step}")


def test_several_tensors_in_one_group_match_the_twin_on_their_concatenation():
    loss, f_and_grad, _ = logistic_problem()
    expected = reference_hdm(f_and_grad, torch.zeros(5, dtype=torch.float64), 60)[-1]
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    run_hdm(lambda a, b: loss(torch.cat([a, b])), [a, b], 60)
    torch.testing.assert_close(torch.cat([a, b]).detach(), expected, rtol=1e-9, atol=1e-12)


def test_reaches_the_minimiser_of_an_ill_conditioned_quadratic():
    generator = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator, dtype=torch.float64))
    hessian = q @ torch.diag(torch.logspace(0, 2, 8, dtype=torch.float64)) @ q.T
    target = torch.randn(8, generator=generator, dtype=torch.float64)
    minimiser = torch.linalg.solve(hessian, target)
    x = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    run_hdm(lambda x: 0.5 * x @ hessian @ x - target @ x, [x], 400)
    torch.testing.assert_close(x.detach(), minimiser, rtol=0, atol=1e-6)


def test_loss_never_increases_and_grad_is_the_gradient_at_the_parameters():
    loss, f_and_grad, _ = logistic_problem(seed=1)
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    optimizer = HDM([w])
    previous = math.inf
    for _ in range(25):
        value = float(run_hdm(loss, [w], 1, optimizer=optimizer)[0].state[w]["loss"])
        assert value <= previous
        previous = value
        torch.testing.assert_close(value, f_and_grad(w)[0], rtol=0, atol=0)
        torch.testing.assert_close(w.grad, f_and_grad(w)[1], rtol=0, atol=0)


def test_counts_one_evaluation_per_step_after_the_first():
    loss, _, _ = logistic_problem()
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    optimizer, calls = run_hdm(loss, [w], 25)
    assert calls == 26 == optimizer.state[w]["func_evals"]


def test_state_dict_round_trip_resumes_exactly():
    loss, _, _ = logistic_problem()
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    optimizer, _ = run_hdm(loss, [w], 15)
    saved_w, saved_state = w.detach().clone(), copy.deepcopy(optimizer.state_dict())
    run_hdm(loss, [w], 20, optimizer=optimizer)
    resumed = saved_w.clone().requires_grad_(True)
    fresh = HDM([resumed], beta=0.1, p_max=3.0)
    fresh.load_state_dict(saved_state)
    run_hdm(loss, [resumed], 20, optimizer=fresh)
    assert torch.equal(resumed.detach(), w.detach())
    assert fresh.param_groups[0]["beta"] == optimizer.param_groups[0]["beta"]


def test_param_groups_keep_their_own_settings_and_state():
    loss, _, _ = logistic_problem()
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = HDM([{"params": [a], "lipschitz": 5.0, "beta": 0.3}, {"params": [b]}])
    run_hdm(lambda a, b: loss(torch.cat([a, b])), [a, b], 30, optimizer=optimizer)
    first, second = optimizer.param_groups
    assert first["beta"] != second["beta"]
    assert first["lipschitz"] != second["lipschitz"] and second["lipschitz"] is not None
    assert float(optimizer.state[a]["P"].max()) <= 100.0 / first["lipschitz"]


def test_non_finite_trial_is_rejected_and_shrinks_the_step():
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    optimizer = HDM([x], lipschitz=1.0, p_lr=1e6, p_max=1e6)

    def loss(x):  # finite only on |x| < 2
        return torch.where(x.abs() < 2, x * x, torch.full_like(x, math.inf)).sum()

    run_hdm(loss, [x], 1, optimizer=optimizer)  # trial at x - P g = 1 - 2e6: infinite
    assert x.item() == 1.0 and optimizer.param_groups[0]["beta"] == 0.475
    assert optimizer.state[x]["P"].item() == pytest.approx(0.5e6)


def test_stationary_start_and_float32():
    x = torch.zeros(3, requires_grad=True)
    optimizer, calls = run_hdm(lambda x: (x * x).sum(), [x], 3)
    assert calls == 1 and torch.equal(x.detach(), torch.zeros(3))
    y = torch.ones(3, requires_grad=True)
    run_hdm(lambda y: ((y - 2) ** 2).sum(), [y], 60)
    torch.testing.assert_close(y.detach(), torch.full((3,), 2.0), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name, value, error", [
    ("lipschitz", 0.0, ValueError), ("lipschitz", "1", TypeError), ("p_lr", -1.0, ValueError),
    ("p_lr_decay", 1.5, ValueError), ("p_lr_decay_every", 0, ValueError), ("p_lr_decay_every", 2.0, TypeError),
    ("p_max", math.inf, ValueError), ("beta", 1.0, ValueError), ("beta_lr", math.nan, ValueError),
    ("beta_max", 1.0, ValueError), ("lipschitz_steps", -1, ValueError), ("lipschitz_steps", True, TypeError),
    ("momentum_damping", -0.1, ValueError), ("momentum_damping", math.inf, ValueError),
])
def test_bad_settings_are_refused_naming_the_argument(name, value, error):
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(error, match=name):
        HDM([x], **{name: value})
    optimizer = HDM([x])
    with pytest.raises(error, match=name):
        optimizer.add_param_group({"params": [torch.zeros(1, requires_grad=True)], name: value})
    assert len(optimizer.param_groups) == 1


def test_bad_params_and_missing_closure_are_refused():
    with pytest.raises(TypeError, match="params"):
        HDM([torch.zeros(2, dtype=torch.int64)])
    optimizer = HDM([torch.zeros(2, requires_grad=True)])
    with pytest.raises(TypeError, match="closure"):
        optimizer.step()
