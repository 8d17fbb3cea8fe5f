"""Tests of the 2-D test surfaces, the path recording, the shared plot style and the figure code."""

from __future__ import annotations

import dataclasses
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

import hypergrad
from experiments import plotting, surfaces as surf
from experiments.plotting import method_style, save_figure

SURFACE_KEYS = list(surf.SURFACES)


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
    func = surf.SURFACES[key].func
    return torch.autograd.functional.hessian(func, torch.tensor(point, dtype=torch.float64)).numpy()


@pytest.mark.parametrize("key", SURFACE_KEYS)
def test_autograd_gradient_matches_closed_form(key):
    rng = np.random.default_rng(0)
    surface = surf.SURFACES[key]
    for _ in range(5):
        point = (rng.uniform(*surface.xlim), rng.uniform(*surface.ylim))
        p = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        surface.func(p).backward()
        np.testing.assert_allclose(p.grad.numpy(), closed_form_gradient(key, *point), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", SURFACE_KEYS)
def test_minima_are_zero_stationary_and_strict(key):
    surface = surf.SURFACES[key]
    for minimum in surface.minima:
        assert float(surface.func(torch.tensor(minimum, dtype=torch.float64))) == 0.0
        assert closed_form_gradient(key, *minimum) == pytest.approx((0.0, 0.0), abs=1e-12)
        assert np.all(np.linalg.eigvalsh(hessian(key, minimum)) > 0)
        assert surface.xlim[0] < minimum[0] < surface.xlim[1] and surface.ylim[0] < minimum[1] < surface.ylim[1]
    assert surface.xlim[0] < surface.start[0] < surface.xlim[1]
    assert surface.ylim[0] < surface.start[1] < surface.ylim[1]
    assert float(surface.func(torch.tensor(surface.start, dtype=torch.float64))) > 10 * surf.THRESHOLD


def test_saddle_is_a_strict_saddle_and_valley_has_condition_number_100():
    assert float(surf.double_well_saddle(torch.zeros(2, dtype=torch.float64))) == 1.0
    np.testing.assert_allclose(np.linalg.eigvalsh(hessian("saddle", (0.0, 0.0))), [-4.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(hessian("valley", (0.3, -0.7)), valley_matrix(), atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(valley_matrix())
    assert eigenvalues[1] / eigenvalues[0] == pytest.approx(100.0)


def test_path_starts_at_start_and_matches_hand_written_gradient_descent():
    surface = surf.SURFACES["valley"]
    lr, steps = 0.1, 25
    path = surf.run_path(surface, "sgd", lr, steps)
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
    surface = surf.SURFACES["beale"]
    lr = surface.base_lr[base]
    off = surf.HypergradSettings(rule="additive", hypergrad_lr=0.0)
    base_path = surf.run_path(surface, base, lr, 40)
    hd_path = surf.run_path(surface, base + "_hd", lr, 40, off)
    np.testing.assert_array_equal(hd_path.points, base_path.points)
    adapting = surf.run_path(surface, base + "_hd", lr, 40)
    assert not np.all(adapting.lr == lr)  # the default settings do adapt the learning rate


def test_run_path_stops_at_threshold_and_on_divergence():
    rosenbrock = surf.SURFACES["rosenbrock"]
    stopped = surf.run_path(rosenbrock, "sgdm", rosenbrock.base_lr["sgdm"], 3000, stop_below=surf.THRESHOLD)
    assert stopped.f[-1] < surf.THRESHOLD <= stopped.f[-2] and stopped.steps_to() == stopped.steps
    diverging = surf.run_path(rosenbrock, "sgd", 0.1, 1000)
    assert diverging.diverged and diverging.steps < 1000 and surf.steps_to_stay_below(diverging) is None


def test_every_base_and_its_hd_variant_build_the_right_optimizer():
    expected = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
                "adam": torch.optim.Adam, "sgdn_hd": hypergrad.SGDHD, "adagrad_hd": hypergrad.AdagradHD,
                "rmsprop_hd": hypergrad.RMSpropHD, "adam_hd": hypergrad.AdamHD}
    assert set(expected) <= set(surf.methods_available())
    for method, cls in expected.items():
        optimizer = surf.make_optimizer(method, [torch.nn.Parameter(torch.zeros(2))], 0.1, surf.HypergradSettings())
        assert type(optimizer) is cls
    with pytest.raises(ValueError, match="method"):
        surf.make_optimizer("lbfgs", [torch.nn.Parameter(torch.zeros(2))], 0.1, surf.HypergradSettings())
    with pytest.raises(ValueError, match="lr"):
        surf.run_path(surf.SURFACES["beale"], "sgd", -1.0, 10)
    with pytest.raises(ValueError, match="steps"):
        surf.run_path(surf.SURFACES["beale"], "sgd", 0.1, 0)


def test_stated_base_learning_rates_follow_the_stated_rule():
    # The cheapest surface; `python -m experiments.surfaces --lr-sweep` checks all of them.
    valley = surf.SURFACES["valley"]
    assert {base: surf.best_base_lr(valley, base) for base in surf.BASE_METHODS} == dict(valley.base_lr)


REGISTRY_NAMES = ["sgd", "sgdm", "sgdn", "adagrad", "rmsprop", "adam", "adamw"]


@pytest.mark.parametrize("base", REGISTRY_NAMES)
def test_hd_solid_and_base_dashed_in_the_same_colour(base):
    base_style, hd_style = method_style(base), method_style(base + "_hd")
    assert base_style.color == hd_style.color
    assert (base_style.linestyle, hd_style.linestyle) == ("--", "-")
    assert method_style(base + "_cosine").linestyle == ":" and method_style(base + "_cosine").color == base_style.color


def test_every_family_and_peer_has_its_own_colour_and_unknown_names_fail():
    names = REGISTRY_NAMES + ["prodigy", "dadapt_adam", "schedulefree_adamw", "dog"]
    colours = [method_style(name).color for name in names]
    assert len(set(colours)) == len(colours)
    assert method_style("schedulefree_adamw").label == "Schedule-Free AdamW"  # not read as "schedulefree" + suffix
    with pytest.raises(ValueError, match="lbfgs"):
        method_style("lbfgs")
    with pytest.raises(TypeError):
        method_style(3)


def test_save_figure_writes_png_and_pdf_and_nothing_on_failure(tmp_path, monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4], label="line")
    plotting.legend_outside(ax)
    png, pdf = save_figure(fig, tmp_path / "figure")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.pdf", "figure.png"]

    original = fig.savefig

    def fail_on_pdf(name, format, **kwargs):
        if format == "pdf":
            raise RuntimeError("disk full")
        original(name, format=format, **kwargs)

    monkeypatch.setattr(fig, "savefig", fail_on_pdf)
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(fig, tmp_path / "broken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.pdf", "figure.png"]
    with pytest.raises(ValueError, match="extension"):
        save_figure(fig, tmp_path / "figure.png")


def test_run_surfaces_smoke_writes_every_file(tmp_path, monkeypatch):
    # Two rows (Rosenbrock is needed for its table), short runs and a coarse contour grid keep it fast.
    short = {key: dataclasses.replace(surf.SURFACES[key], steps=12) for key in ("rosenbrock", "saddle")}
    monkeypatch.setattr(surf, "SURFACES", short)
    monkeypatch.setattr(surf, "GRID_POINTS", 60)
    monkeypatch.setattr(surf, "ROSENBROCK_MAX_STEPS", {True: 30, False: 30})
    monkeypatch.setattr(surf, "GIF_FRAMES", 4)
    result = surf.run_surfaces(tmp_path, quick=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        ["surfaces.png", "surfaces.pdf", "surfaces.gif", "surfaces_curves.png", "surfaces_curves.pdf", "surfaces.md", "surfaces.json"]
    )
    with Image.open(tmp_path / "surfaces.gif") as gif:
        assert gif.n_frames == 4
        gif.seek(3)
        assert gif.info["duration"] == pytest.approx(1000 / surf.GIF_FPS + 1000 * surf.GIF_FINAL_PAUSE_S, abs=10)
    with Image.open(tmp_path / "surfaces.png") as png:
        assert png.size[0] > 1500
    numbers = json.loads((tmp_path / "surfaces.json").read_text())
    assert len(numbers["paths_table"]) == len(short) * len(surf.methods_available())
    rosenbrock_rows = numbers["rosenbrock_table"]
    assert [row["base"] for row in rosenbrock_rows] == list(surf.BASE_METHODS)
    for row in rosenbrock_rows:
        assert row["lr0"] == pytest.approx(row["sensible_lr"] * surf.ROSENBROCK_LR_FACTOR)
        assert row["base_steps"] is None  # 30 iterations at a 100x too small lr get nowhere
    assert "not reached in 30" in result["markdown"] and "| SGD |" in result["markdown"]
