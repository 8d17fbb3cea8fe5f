"""Tests of the 2-D test surfaces and the path recording (experiments.paper.toy); the study that draws them is
tested in tests/test_experiments_reproduce.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hypergrad
from experiments.paper import toy
from experiments.core.methods import METHODS

SURFACE_KEYS = list(toy.SURFACES)


def closed_form_gradient(key: str, x: float, y: float) -> tuple[float, float]:
    """Gradients derived by hand, independent of the torch code."""
    if key == "beale":
        a, b, c = 1.5 - x + x * y, 2.25 - x + x * y**2, 2.625 - x + x * y**3
        return (
            2 * a * (y - 1) + 2 * b * (y**2 - 1) + 2 * c * (y**3 - 1),
            2 * a * x + 2 * b * 2 * x * y + 2 * c * 3 * x * y**2,
        )
    if key == "rosenbrock":
        return (-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2))
    if key == "saddle":
        return (2 * x, 4 * y * (y**2 - 1))
    if key == "valley":
        return tuple(valley_matrix() @ np.array([x, y]))
    raise KeyError(key)


def valley_matrix() -> np.ndarray:
    """Hessian of the valley built from its stated geometry: curvature 0.1 along 30 deg, 10 across."""
    along = np.array([math.cos(math.pi / 6), math.sin(math.pi / 6)])
    across = np.array([-along[1], along[0]])
    return 0.1 * np.outer(along, along) + 10.0 * np.outer(across, across)


def hessian(key: str, point) -> np.ndarray:
    func = toy.SURFACES[key].func
    return torch.autograd.functional.hessian(func, torch.tensor(point, dtype=torch.float64)).numpy()


@pytest.mark.parametrize("key", SURFACE_KEYS)
def test_autograd_gradient_matches_closed_form(key):
    rng = np.random.default_rng(0)
    surface = toy.SURFACES[key]
    for _ in range(5):
        point = (rng.uniform(*surface.xlim), rng.uniform(*surface.ylim))
        p = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        surface.func(p).backward()
        np.testing.assert_allclose(p.grad.numpy(), closed_form_gradient(key, *point), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", SURFACE_KEYS)
def test_minima_are_zero_stationary_and_strict(key):
    surface = toy.SURFACES[key]
    for minimum in surface.minima:
        assert float(surface.func(torch.tensor(minimum, dtype=torch.float64))) == 0.0
        assert closed_form_gradient(key, *minimum) == pytest.approx((0.0, 0.0), abs=1e-12)
        assert np.all(np.linalg.eigvalsh(hessian(key, minimum)) > 0)
        assert surface.xlim[0] < minimum[0] < surface.xlim[1] and surface.ylim[0] < minimum[1] < surface.ylim[1]
    assert surface.xlim[0] < surface.start[0] < surface.xlim[1]
    assert surface.ylim[0] < surface.start[1] < surface.ylim[1]
    assert float(surface.func(torch.tensor(surface.start, dtype=torch.float64))) > 10 * toy.THRESHOLD


def test_saddle_is_a_strict_saddle_and_valley_has_condition_number_100():
    assert float(toy.double_well_saddle(torch.zeros(2, dtype=torch.float64))) == 1.0
    np.testing.assert_allclose(np.linalg.eigvalsh(hessian("saddle", (0.0, 0.0))), [-4.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(hessian("valley", (0.3, -0.7)), valley_matrix(), atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(valley_matrix())
    assert eigenvalues[1] / eigenvalues[0] == pytest.approx(100.0)


def test_path_starts_at_start_and_matches_hand_written_gradient_descent():
    surface = toy.SURFACES["valley"]
    lr, steps = 0.1, 25
    path = toy.run_path(surface, "sgd", lr, steps)
    assert path.points[0].tolist() == list(surface.start)
    assert path.f[0] == float(surface.func(torch.tensor(surface.start, dtype=torch.float64)))
    assert path.steps == steps and path.lr.shape == (steps,) and np.all(path.lr == lr)
    point, matrix = np.array(surface.start), valley_matrix()
    for t in range(1, steps + 1):
        point = point - lr * matrix @ point
        np.testing.assert_allclose(path.points[t], point, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(path.f, [0.5 * p @ matrix @ p for p in path.points], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("base", ["sgd", "sgdn", "adam"])
def test_hd_variant_with_zero_hypergrad_lr_retraces_its_base(base):
    surface = toy.SURFACES["beale"]
    lr = surface.base_lr[base]
    off = toy.HypergradSettings(rule="additive", hypergrad_lr=0.0)
    base_path = toy.run_path(surface, base, lr, 40)
    hd_path = toy.run_path(surface, base + "_hd", lr, 40, off)
    # Our default CPU path is torch's fused kernel, whose arithmetic rounds in the last bit unlike
    # torch's default for-loop: the paths agree to rounding, step for step.
    np.testing.assert_allclose(hd_path.points, base_path.points, rtol=1e-13, atol=1e-15)
    adapting = toy.run_path(surface, base + "_hd", lr, 40)
    assert not np.all(adapting.lr == lr)  # the default settings do adapt the learning rate


def test_run_path_stops_at_threshold_and_on_divergence():
    rosenbrock = toy.SURFACES["rosenbrock"]
    stopped = toy.run_path(rosenbrock, "sgdm", rosenbrock.base_lr["sgdm"], 3000, stop_below=toy.THRESHOLD)
    assert stopped.f[-1] < toy.THRESHOLD <= stopped.f[-2] and stopped.steps_to() == stopped.steps
    diverging = toy.run_path(rosenbrock, "sgd", 0.1, 1000)
    assert diverging.diverged and diverging.steps < 1000 and toy.steps_to_stay_below(diverging) is None


def test_every_base_and_its_hd_variant_build_the_right_optimizer():
    expected = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
                "adam": torch.optim.Adam, "sgdn_hd": hypergrad.SGDHD, "adagrad_hd": hypergrad.AdagradHD,
                "rmsprop_hd": hypergrad.RMSpropHD, "adam_hd": hypergrad.AdamHD}
    assert set(expected) <= set(toy.methods_available()) <= set(METHODS)  # one registry
    hd = toy.HypergradSettings()
    for method, cls in expected.items():
        optimizer = toy.make_optimizer(method, [torch.nn.Parameter(torch.zeros(2))], 0.1, hd)
        assert type(optimizer) is cls
        assert optimizer.defaults["lr"] == 0.1 and optimizer.defaults["weight_decay"] == 0
        if method.endswith("_hd"):
            assert optimizer.defaults["hypergrad_lr"] == hd.hypergrad_lr
            assert optimizer.defaults["hypergrad_rule"] == hd.rule
    nesterov = toy.make_optimizer("sgdn", [torch.nn.Parameter(torch.zeros(2))], 0.1, hd)
    assert nesterov.defaults["momentum"] == 0.9 and nesterov.defaults["nesterov"]
    with pytest.raises(ValueError, match="method"):
        toy.make_optimizer("lbfgs", [torch.nn.Parameter(torch.zeros(2))], 0.1, toy.HypergradSettings())
    with pytest.raises(ValueError, match="lr"):
        toy.run_path(toy.SURFACES["beale"], "sgd", -1.0, 10)
    with pytest.raises(ValueError, match="steps"):
        toy.run_path(toy.SURFACES["beale"], "sgd", 0.1, 0)


def test_stated_base_learning_rates_follow_the_stated_rule():
    # The cheapest surface; the same call checks the others (minutes).
    valley = toy.SURFACES["valley"]
    assert {base: toy.best_base_lr(valley, base) for base in toy.BASE_METHODS} == dict(valley.base_lr)
