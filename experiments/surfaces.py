"""Optimizer paths on 2-D test surfaces: each torch.optim base rule and its HD variant.

Top to bottom: the four surfaces (function, plotting window, start, minimum, base learning rates),
the methods, the loop that records one path, the figures (a static grid and an animated GIF), the
summary table, the Rosenbrock "learning rate 100x too small" table (issue 4), and the CLI.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import hypergrad
from experiments.runner import write_text
from experiments.plotting import (
    BASE_LINESTYLE,
    HD_LINESTYLE,
    legend_outside,
    method_style,
    save_figure,
    save_gif,
)

import matplotlib.pyplot as plt  # noqa: E402  (after experiments.plotting chose the Agg backend)
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Test surfaces. Each is a torch function of a 2-vector p = (x, y) with minimum value 0.


def beale(p: torch.Tensor) -> torch.Tensor:
    """Beale's function; minimum 0 at (3, 0.5), flat plateaus and steep walls around it."""
    x, y = p[0], p[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def rosenbrock(p: torch.Tensor) -> torch.Tensor:
    """Rosenbrock's banana: minimum 0 at (1, 1) at the end of a curved, flat-bottomed valley."""
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def double_well_saddle(p: torch.Tensor) -> torch.Tensor:
    """x^2 + (y^2 - 1)^2: a strict saddle at (0, 0) (f = 1, Hessian diag(2, -4)) between the
    minima 0 at (0, -1) and (0, 1). Unlike x^2 - y^2 it is bounded below, so "distance to the
    minimum" and "iterations to f < threshold" mean something."""
    x, y = p[0], p[1]
    return x**2 + (y**2 - 1) ** 2


VALLEY_ANGLE = math.pi / 6  # direction of the valley floor, 30 degrees above the x axis
VALLEY_CURVATURES = (0.1, 10.0)  # along the floor, across it: condition number 100


def narrow_valley(p: torch.Tensor) -> torch.Tensor:
    """Rotated quadratic 0.5 * (0.1 u^2 + 10 v^2), u along the floor at 30 degrees, v across it:
    a straight, long, narrow valley with condition number 100 and minimum 0 at (0, 0)."""
    along, across = VALLEY_CURVATURES
    c, s = math.cos(VALLEY_ANGLE), math.sin(VALLEY_ANGLE)
    u = c * p[0] + s * p[1]
    v = -s * p[0] + c * p[1]
    return 0.5 * (along * u**2 + across * v**2)


@dataclass(frozen=True)
class Surface:
    """A 2-D test function with everything needed to run and draw optimizers on it."""

    key: str
    title: str
    formula: str
    func: Callable[[torch.Tensor], torch.Tensor]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]  # every global minimiser; f is 0 at each
    steps: int
    # Base learning rate per base rule: from the grid {1, 3} x 10^k, 1e-4 <= lr <= 1, the value
    # after which the base stays below THRESHOLD soonest within `steps` (lowest final f if no
    # value gets there). Recompute with `python -m experiments.surfaces --lr-sweep`.
    base_lr: Mapping[str, float] = field(default_factory=dict)


THRESHOLD = 1e-3  # "converged": f < THRESHOLD (every surface has minimum value 0)

SURFACES: dict[str, Surface] = {
    s.key: s
    for s in (
        Surface(
            key="beale",
            title="Beale",
            formula="(1.5-x+xy)² + (2.25-x+xy²)² + (2.625-x+xy³)²",
            func=beale,
            xlim=(-0.5, 4.5),
            ylim=(-1.5, 2.0),
            start=(1.0, 1.5),
            minima=((3.0, 0.5),),
            steps=1000,
            base_lr={"sgd": 3e-2, "sgdm": 3e-3, "sgdn": 3e-3, "adagrad": 1.0, "rmsprop": 1e-2, "adam": 3e-1},
        ),
        Surface(
            key="rosenbrock",
            title="Rosenbrock",
            formula="(1-x)² + 100 (y-x²)²",
            func=rosenbrock,
            xlim=(-1.6, 1.6),
            ylim=(-0.6, 1.6),
            start=(-1.2, 1.0),
            minima=((1.0, 1.0),),
            steps=3000,
            base_lr={"sgd": 1e-3, "sgdm": 3e-3, "sgdn": 1e-3, "adagrad": 1.0, "rmsprop": 3e-3, "adam": 3e-2},
        ),
        Surface(
            key="saddle",
            title="Saddle",
            formula="x² + (y²-1)², saddle at (0, 0)",
            func=double_well_saddle,
            xlim=(-2.5, 2.5),
            ylim=(-1.6, 1.6),
            start=(2.0, 1e-3),
            minima=((0.0, -1.0), (0.0, 1.0)),
            steps=300,
            base_lr={"sgd": 1e-1, "sgdm": 1e-1, "sgdn": 1e-1, "adagrad": 1.0, "rmsprop": 1e-1, "adam": 3e-1},
        ),
        Surface(
            key="valley",
            title="Narrow valley",
            formula="quadratic, curvatures 0.1 along the 30° floor and 10 across",
            func=narrow_valley,
            xlim=(-3.0, 3.0),
            ylim=(-2.0, 2.0),
            start=(-2.5, -1.0),
            minima=((0.0, 0.0),),
            steps=300,
            base_lr={"sgd": 1e-1, "sgdm": 1e-1, "sgdn": 1e-1, "adagrad": 1.0, "rmsprop": 3e-1, "adam": 3e-1},
        ),
    )
}

# ---------------------------------------------------------------------------------------------
# Methods: six torch.optim base rules and, where hypergrad exports it, the HD variant of each.

BASE_METHODS = ("sgd", "sgdm", "sgdn", "adagrad", "rmsprop", "adam")

TORCH_BASES: dict[str, tuple[type[torch.optim.Optimizer], dict]] = {
    "sgd": (torch.optim.SGD, {}),
    "sgdm": (torch.optim.SGD, {"momentum": 0.9}),
    "sgdn": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "adam": (torch.optim.Adam, {}),
}

HD_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": hypergrad.SGDHD,
    "sgdm": hypergrad.SGDHD,
    "sgdn": hypergrad.SGDHD,
    "adagrad": hypergrad.AdagradHD,
    "rmsprop": hypergrad.RMSpropHD,
    "adam": hypergrad.AdamHD,
}



@dataclass(frozen=True)
class HypergradSettings:
    """The HD keywords every HD variant here gets: one setting for every method and surface, so
    that no HD run is tuned per case. The multiplicative rule is scale-free; the additive rule's
    hypergrad_lr would have to change by orders of magnitude between these surfaces (Rosenbrock's
    gradients are ~100x Beale's near the start)."""

    rule: str = "multiplicative"
    hypergrad_lr: float = 0.003

    def describe(self) -> str:
        return f"{self.rule} HD rule, β = {self.hypergrad_lr:g}"


def methods_available() -> list[str]:
    """Every base in BASE_METHODS, each followed by its "<base>_hd"."""
    return [method for base in BASE_METHODS for method in (base, base + "_hd")]


def make_optimizer(
    method: str, params: Sequence[torch.nn.Parameter], lr: float, hd: HypergradSettings
) -> torch.optim.Optimizer:
    """The optimizer for ``method`` ("<base>" or "<base>_hd") with initial learning rate ``lr``;
    ``hd`` applies to HD variants only."""
    base = method.removesuffix("_hd")
    if base not in TORCH_BASES:
        raise ValueError(f"method must be one of {list(TORCH_BASES)} or '<that>_hd', got {method!r}")
    torch_class, kwargs = TORCH_BASES[base]
    if method == base:
        return torch_class(params, lr=lr, **kwargs)
    return HD_CLASSES[base](params, lr=lr, hypergrad_lr=hd.hypergrad_lr, hypergrad_rule=hd.rule, **kwargs)


# ---------------------------------------------------------------------------------------------
# One optimizer path.

DIVERGED_NORM = 1e6  # a point this far from the origin has left every window for good


@dataclass
class OptimizerPath:
    """Iterates of one method on one surface: ``points[t]`` and ``f[t]`` after t steps
    (t = 0 is the start), ``lr[t-1]`` the learning rate step t used."""

    surface: str
    method: str
    lr0: float
    points: np.ndarray
    f: np.ndarray
    lr: np.ndarray
    diverged: bool

    @property
    def steps(self) -> int:
        return len(self.points) - 1

    def steps_to(self, threshold: float = THRESHOLD) -> int | None:
        """First t with f[t] < threshold, or None if the path never gets there."""
        below = np.flatnonzero(self.f < threshold)
        return int(below[0]) if below.size else None


def run_path(
    surface: Surface,
    method: str,
    lr: float,
    steps: int,
    hd: HypergradSettings = HypergradSettings(),
    stop_below: float | None = None,
) -> OptimizerPath:
    """Run ``method`` from ``surface.start`` for up to ``steps`` steps in float64, recording every
    iterate, its f value and the learning rate of every step.

    Stops early once f < ``stop_below`` (if given), or when f stops being finite or the point
    leaves every window (then ``diverged`` is set).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    point = torch.nn.Parameter(torch.tensor(surface.start, dtype=torch.float64))
    optimizer = make_optimizer(method, [point], lr, hd)
    points: list[np.ndarray] = []
    values: list[float] = []
    lrs: list[float] = []
    diverged = False
    while True:
        loss = surface.func(point)  # f at the current point, and the graph for its gradient
        points.append(point.detach().numpy().copy())
        values.append(float(loss.detach()))
        if not math.isfinite(values[-1]) or float(point.detach().norm()) > DIVERGED_NORM:
            diverged = True
            break
        if len(lrs) == steps or (stop_below is not None and values[-1] < stop_below):
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return OptimizerPath(
        surface=surface.key,
        method=method,
        lr0=lr,
        points=np.array(points),
        f=np.array(values),
        lr=np.array(lrs),
        diverged=diverged,
    )


def run_all(
    surfaces: Sequence[Surface], hd: HypergradSettings = HypergradSettings()
) -> dict[str, dict[str, OptimizerPath]]:
    """Every available method on every surface from its base learning rate:
    ``paths[surface key][method]``."""
    return {
        surface.key: {
            method: run_path(surface, method, surface.base_lr[method.removesuffix("_hd")], surface.steps, hd)
            for method in methods_available()
        }
        for surface in surfaces
    }


# ---------------------------------------------------------------------------------------------
# Figures: a grid with one row per surface and one column per base rule; in each panel the base
# (dashed) and its HD variant (solid) from the same start, over log-spaced contours of f.

CONTOUR_LEVELS = 14
GRID_POINTS = 300


def contour_grid(surface: Surface) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f evaluated on a GRID_POINTS x GRID_POINTS grid over the surface's window."""
    xs = np.linspace(*surface.xlim, GRID_POINTS)
    ys = np.linspace(*surface.ylim, GRID_POINTS)
    grid_x, grid_y = np.meshgrid(xs, ys)
    with torch.no_grad():
        values = surface.func(torch.from_numpy(np.stack([grid_x, grid_y]))).numpy()
    return grid_x, grid_y, values


def contour_levels(values: np.ndarray) -> np.ndarray:
    """Log-spaced levels from THRESHOLD (the innermost contour is the convergence threshold) up
    to the 95th percentile of f over the window."""
    top = float(np.percentile(values, 95))
    return np.logspace(math.log10(THRESHOLD), math.log10(top), CONTOUR_LEVELS)


def _steps_text(path: OptimizerPath) -> str:
    if path.diverged:
        return f"diverged at {path.steps}"
    reached = path.steps_to()
    return f"{reached}" if reached is not None else f"not in {path.steps}"


def _panel_title(surface: Surface, base: str, paths: Mapping[str, OptimizerPath]) -> str:
    """Two lines: the method and its lr; the steps to f < THRESHOLD of the base and of HD."""
    head = f"{method_style(base).label}, α₀ = {surface.base_lr[base]:g}"
    hd_path = paths.get(base + "_hd")
    hd_text = f"HD {_steps_text(hd_path)}" if hd_path is not None else "no HD yet"
    return f"{head}\nsteps to f<{THRESHOLD:g}: {_steps_text(paths[base])} | {hd_text}"


@dataclass
class PathGrid:
    """The drawn grid: the figure and, per (surface, method), the line and end-point artists."""

    fig: plt.Figure
    lines: dict[tuple[str, str], tuple[Line2D, Line2D]]


def draw_path_grid(
    surfaces: Sequence[Surface], paths: Mapping[str, Mapping[str, OptimizerPath]], hd: HypergradSettings
) -> PathGrid:
    """Draw every path in full (the static figure; the animation then shortens the lines)."""
    n_rows, n_cols = len(surfaces), len(BASE_METHODS)
    # Equal aspect, so that rows get heights in proportion to their windows.
    heights = [(s.ylim[1] - s.ylim[0]) / (s.xlim[1] - s.xlim[0]) for s in surfaces]
    panel_width = 2.75
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(panel_width * n_cols, panel_width * sum(heights) + 0.5 * n_rows + 1.2),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    lines: dict[tuple[str, str], tuple[Line2D, Line2D]] = {}
    for row, surface in enumerate(surfaces):
        grid_x, grid_y, values = contour_grid(surface)
        levels = contour_levels(values)
        for col, base in enumerate(BASE_METHODS):
            ax = axes[row, col]
            # Contours below zorder 1 are rasterised in the PDF (vector contours made it megabytes).
            ax.contour(grid_x, grid_y, values, levels=levels, norm=LogNorm(), cmap="Greys_r", vmax=levels[-1] * 30, linewidths=0.6, zorder=0)
            ax.set_rasterization_zorder(1)
            for method in (base, base + "_hd"):
                if method not in paths[surface.key]:
                    continue
                path = paths[surface.key][method]
                style = method_style(method)
                is_hd = method != base
                (line,) = ax.plot(
                    path.points[:, 0],
                    path.points[:, 1],
                    color=style.color,
                    linestyle=style.linestyle,
                    linewidth=1.3 if is_hd else 2.2,
                    zorder=4 if is_hd else 3,
                )
                (end,) = ax.plot(
                    path.points[-1:, 0],
                    path.points[-1:, 1],
                    marker="o",
                    markersize=5,
                    color=style.color,
                    markerfacecolor=style.color if is_hd else "white",
                    linestyle="none",
                    zorder=6,
                )
                lines[(surface.key, method)] = (line, end)
            ax.plot(*surface.start, marker="o", color="black", markersize=6, linestyle="none", zorder=7)
            for minimum in surface.minima:
                ax.plot(*minimum, marker="*", color="gold", markeredgecolor="black", markersize=12, linestyle="none", zorder=7)
            ax.set_xlim(surface.xlim)
            ax.set_ylim(surface.ylim)
            ax.set_title(_panel_title(surface, base, paths[surface.key]), fontsize=8.5, color=method_style(base).color)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("x", fontsize=8, labelpad=1)
            ax.set_ylabel("y", fontsize=8, labelpad=1)
            ax.set_aspect("equal")
            if col == 0:
                ax.set_ylabel(f"{surface.title}\n\ny", fontsize=8, labelpad=1)
                ax.yaxis.label.set_fontweight("bold")
    fig.suptitle(
        "Optimizer paths on 2-D test functions, all from the same start per row: torch.optim base (dashed) "
        f"and its HD variant (solid, {hd.describe()})\n"
        "α₀ = the base's best learning rate from the grid {1, 3}×10^k (also the HD variant's initial lr); "
        f"steps per row: {', '.join(f'{s.title} {s.steps}' for s in surfaces)}; x, y dimensionless; float64\n"
        + "; ".join(f"{s.title}: {s.formula}" for s in surfaces),
        fontsize=10,
    )
    handles = [
        Line2D([], [], color="0.3", linestyle=BASE_LINESTYLE, linewidth=2.2, marker="o", markerfacecolor="white", label="base (torch.optim), ○ = end"),
        Line2D([], [], color="0.3", linestyle=HD_LINESTYLE, linewidth=1.3, marker="o", label="HD variant, ● = end"),
        Line2D([], [], color="black", marker="o", linestyle="none", label="start"),
        Line2D([], [], color="gold", markeredgecolor="black", marker="*", markersize=12, linestyle="none", label="minimum (f = 0)"),
        Line2D([], [], color="0.4", linewidth=0.6, label=f"contours of f, log-spaced; darkest: f = {THRESHOLD:g}"),
    ]
    # The bottom margin holds the legend and, in the animation, the step counter above it.
    fig.tight_layout(rect=(0, 0.055, 1, 0.98))
    legend_outside(fig, where="below", handles=handles, ncol=len(handles), fontsize=9)
    return PathGrid(fig=fig, lines=lines)


GIF_FRAMES = 60


def frame_steps(total_steps: int, frames: int) -> np.ndarray:
    """Steps shown in each frame: quadratic in the frame number, so the fast early moves get
    most frames; the last frame shows every step."""
    fractions = (np.arange(1, frames + 1) / frames) ** 2
    return np.maximum(1, np.round(fractions * total_steps)).astype(int)


def animation_frames(
    grid: PathGrid, surfaces: Sequence[Surface], paths: Mapping[str, Mapping[str, OptimizerPath]], frames: int, dpi: int
) -> list[np.ndarray]:
    """RGB frames of the grid with growing paths: in frame i every row shows its first
    frame_steps(...)[i] steps.

    The contours, markers and titles are rendered once and every frame only redraws the path
    lines onto that background (blitting), which is what makes a 24-panel animation cheap.
    """
    schedule = {s.key: frame_steps(s.steps, frames) for s in surfaces}
    counter = grid.fig.text(0.5, 0.032, "", fontsize=10, ha="center", va="bottom", fontweight="bold")
    moving = [counter] + [artist for pair in grid.lines.values() for artist in pair]
    fig = grid.fig
    fig.set_dpi(dpi)
    canvas = fig.canvas
    for artist in moving:
        artist.set_visible(False)
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    for artist in moving:
        artist.set_visible(True)
    images = []
    for index in range(frames):
        for (surface_key, method), (line, end) in grid.lines.items():
            shown = paths[surface_key][method].points[: schedule[surface_key][index] + 1]
            line.set_data(shown[:, 0], shown[:, 1])
            end.set_data(shown[-1:, 0], shown[-1:, 1])
        counter.set_text("step " + ", ".join(f"{schedule[s.key][index]}/{s.steps} ({s.title})" for s in surfaces))
        canvas.restore_region(background)
        for artist in moving:
            (artist.axes or fig).draw_artist(artist)
        images.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return images


F_FLOOR = 1e-16  # f values below this are float64 round-off around the minimum; plots clip there


def draw_curves(
    surfaces: Sequence[Surface], paths: Mapping[str, Mapping[str, OptimizerPath]], hd: HypergradSettings
) -> plt.Figure:
    """f and the learning rate against the step, one column per surface, every method."""
    fig, axes = plt.subplots(2, len(surfaces), figsize=(3.6 * len(surfaces), 6.4), squeeze=False)
    for col, surface in enumerate(surfaces):
        ax_f, ax_lr = axes[0, col], axes[1, col]
        for method, path in paths[surface.key].items():
            style = method_style(method).kwargs()
            ax_f.plot(np.maximum(path.f, F_FLOOR), linewidth=1.2, **style)
            ax_lr.plot(np.arange(1, path.steps + 1), path.lr, linewidth=1.2, **style)
        ax_f.axhline(THRESHOLD, color="0.5", linewidth=0.7, linestyle=":")
        ax_f.set_title(f"{surface.title}: f along the path", fontsize=10)
        ax_f.set_yscale("log")
        # Diverging runs leave through the top instead of squashing every other curve.
        ax_f.set_ylim(F_FLOOR / 3, 1e3 * max(float(p.f[0]) for p in paths[surface.key].values()))
        ax_f.set_ylabel("f (no unit; clipped at 1e-16)" if col == 0 else "")
        ax_lr.set_title(f"{surface.title}: learning rate", fontsize=10)
        ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate α_t" if col == 0 else "")
        for ax in (ax_f, ax_lr):
            ax.set_xlabel("step")
            ax.set_xlim(0, surface.steps)
            ax.grid(True, which="major", linewidth=0.3)
    fig.suptitle(
        f"f and learning rate per step (bases dashed, HD solid, {hd.describe()}); "
        f"dotted line: f = {THRESHOLD:g}; a run that diverged leaves through the top and ends there",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    handles = [Line2D([], [], **method_style(m).kwargs()) for m in methods_available()]
    legend_outside(fig, where="right", handles=handles, fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------
# Tables.

LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def steps_to_stay_below(path: OptimizerPath, threshold: float = THRESHOLD) -> int | None:
    """First t from which f stays below ``threshold`` to the end of the path (None: never)."""
    if path.diverged or path.f[-1] >= threshold:
        return None
    above = np.flatnonzero(path.f >= threshold)
    return int(above[-1]) + 1 if above.size else 0


def best_base_lr(surface: Surface, base: str, grid: Sequence[float] = LR_GRID) -> float:
    """The rule behind ``Surface.base_lr``: over ``grid``, the lr after which ``base`` stays below
    THRESHOLD soonest within ``surface.steps``; if none gets there, the lowest final f; runs that
    diverge are out."""
    scored = []
    for lr in grid:
        path = run_path(surface, base, lr, surface.steps)
        if path.diverged:
            continue
        stays = steps_to_stay_below(path)
        scored.append((stays is None, stays if stays is not None else 0, float(path.f[-1]), lr))
    if not scored:
        raise RuntimeError(f"{base} diverges on {surface.key} at every learning rate of {list(grid)}")
    return min(scored)[3]


def _format_steps(path: OptimizerPath) -> str:
    if path.diverged:
        return f"diverged at {path.steps}"
    reached = path.steps_to()
    return str(reached) if reached is not None else f"not in {path.steps}"


def paths_table(
    surfaces: Sequence[Surface], paths: Mapping[str, Mapping[str, OptimizerPath]]
) -> list[dict[str, object]]:
    """One row per surface x method: α₀, steps to f < THRESHOLD, final f and lr, divergence."""
    rows = []
    for surface in surfaces:
        for method, path in paths[surface.key].items():
            rows.append(
                {
                    "surface": surface.key,
                    "method": method,
                    "lr0": path.lr0,
                    "steps_run": path.steps,
                    "steps_to_threshold": path.steps_to(),
                    "final_f": float(path.f[-1]),
                    "final_lr": float(path.lr[-1]) if path.lr.size else path.lr0,
                    "diverged": path.diverged,
                }
            )
    return rows


def paths_markdown(
    surfaces: Sequence[Surface], paths: Mapping[str, Mapping[str, OptimizerPath]], hd: HypergradSettings
) -> str:
    """The numbers behind surfaces.png: steps to f < THRESHOLD (final f) per method x surface."""
    header = "| method | " + " | ".join(f"{s.title} (α₀; {s.steps} steps)" for s in surfaces) + " |"
    lines = [header, "|---" * (len(surfaces) + 1) + "|"]
    for method in methods_available():
        cells = []
        for surface in surfaces:
            path = paths[surface.key][method]
            cells.append(f"{_format_steps(path)} (f={path.f[-1]:.1e}; α₀={path.lr0:g})")
        lines.append(f"| {method_style(method).label} | " + " | ".join(cells) + " |")
    notes = [
        f"Steps until f < {THRESHOLD:g} first holds (final f after the run in brackets), from the same start per "
        f"surface; float64. α₀ is the base's best value on the grid {{1, 3}}×10^k ≤ 1 (the HD variant starts "
        f"from the same α₀). HD variants: {hd.describe()}, for every method and surface.",
    ]
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def rosenbrock_bad_lr_table(
    lr_factor: float = 0.01,
    max_steps: int = 20_000,
    threshold: float = THRESHOLD,
    hd: HypergradSettings = HypergradSettings(),
) -> list[dict[str, object]]:
    """Issue 4's table: on Rosenbrock from its fixed start, each base and its HD variant at
    ``lr_factor`` times the base's sensible lr; iterations to f < ``threshold`` (None: not
    reached in ``max_steps``), final f and, for HD, the learning rate it ended with."""
    if not 0 < lr_factor:
        raise ValueError(f"lr_factor must be > 0, got {lr_factor}")
    surface = SURFACES["rosenbrock"]
    rows = []
    for base in BASE_METHODS:
        lr = surface.base_lr[base] * lr_factor
        row: dict[str, object] = {"base": base, "sensible_lr": surface.base_lr[base], "lr0": lr}
        for method in (base, base + "_hd"):
            path = run_path(surface, method, lr, max_steps, hd, stop_below=threshold)
            key = "hd" if method != base else "base"
            row[f"{key}_steps"] = path.steps_to(threshold)
            row[f"{key}_final_f"] = float(path.f[-1])
            row[f"{key}_diverged"] = path.diverged
            row[f"{key}_steps_run"] = path.steps
            if method != base:
                row["hd_final_lr"] = float(path.lr[-1])
        rows.append(row)
    return rows


def rosenbrock_markdown(rows: Sequence[Mapping[str, object]], lr_factor: float, max_steps: int, hd: HypergradSettings) -> str:
    """``rosenbrock_bad_lr_table`` as a Markdown table with its settings."""

    def steps(row: Mapping[str, object], key: str) -> str:
        if row[f"{key}_diverged"]:
            return f"diverged at {row[f'{key}_steps_run']}"
        return str(row[f"{key}_steps"]) if row[f"{key}_steps"] is not None else f"not reached in {max_steps}"

    surface = SURFACES["rosenbrock"]
    lines = [
        f"| base | sensible α₀ | α₀ used (×{lr_factor:g}) | base: iterations to f < {THRESHOLD:g} | HD: iterations | HD: lr at the end |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        label = method_style(str(row["base"])).label
        lines.append(
            f"| {label} | {row['sensible_lr']:g} | {row['lr0']:g} | {steps(row, 'base')} | {steps(row, 'hd')} "
            f"| {row['hd_final_lr']:.3g} |"
        )
    note = (
        f"Rosenbrock {surface.formula} from {surface.start}, float64; α₀ {1 / lr_factor:g}× smaller than the "
        f"base's best grid value (the one in surfaces.png); HD: {hd.describe()}; at most {max_steps} iterations."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


# ---------------------------------------------------------------------------------------------
# Entry points.

GIF_DPI = 75
GIF_FPS = 10
GIF_FINAL_PAUSE_S = 2.0  # the finished paths stay on screen before the loop restarts
ROSENBROCK_LR_FACTOR = 0.01
ROSENBROCK_MAX_STEPS = {True: 5_000, False: 20_000}  # quick, full


def run_surfaces(out_dir: str | Path, quick: bool = True, hd: HypergradSettings = HypergradSettings()) -> dict:
    """Run every method on every surface and write, into ``out_dir``: surfaces.png/.pdf (paths),
    surfaces.gif (the same, animated), surfaces_curves.png/.pdf (f and lr per step),
    surfaces.md (both tables with their settings) and surfaces.json (the numbers).

    ``quick`` only shortens the Rosenbrock bad-lr table's budget (5,000 instead of 20,000
    iterations); the paths are the same. Returns the tables, the Markdown and the file paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    surfaces = list(SURFACES.values())
    paths = run_all(surfaces, hd)
    grid = draw_path_grid(surfaces, paths, hd)
    figure_files = list(save_figure(grid.fig, out / "surfaces"))
    gif_file = save_gif(
        animation_frames(grid, surfaces, paths, GIF_FRAMES, GIF_DPI), out / "surfaces.gif", GIF_FPS, GIF_FINAL_PAUSE_S
    )
    plt.close(grid.fig)
    curves = draw_curves(surfaces, paths, hd)
    figure_files += save_figure(curves, out / "surfaces_curves")
    plt.close(curves)
    max_steps = ROSENBROCK_MAX_STEPS[quick]
    rosenbrock_rows = rosenbrock_bad_lr_table(ROSENBROCK_LR_FACTOR, max_steps, THRESHOLD, hd)
    markdown = (
        "### Optimizer paths on 2-D test surfaces (surfaces.png)\n\n"
        + paths_markdown(surfaces, paths, hd)
        + f"\n### Rosenbrock with a learning rate {1 / ROSENBROCK_LR_FACTOR:g}x too small\n\n"
        + rosenbrock_markdown(rosenbrock_rows, ROSENBROCK_LR_FACTOR, max_steps, hd)
    )
    results = {
        "settings": {
            "hypergrad_rule": hd.rule,
            "hypergrad_lr": hd.hypergrad_lr,
            "threshold": THRESHOLD,
            "quick": quick,
            "surfaces": {
                s.key: {"start": s.start, "minima": s.minima, "steps": s.steps, "base_lr": dict(s.base_lr)}
                for s in surfaces
            },
            "methods": methods_available(),
        },
        "paths_table": paths_table(surfaces, paths),
        "rosenbrock_table": rosenbrock_rows,
    }
    write_text(out / "surfaces.md", markdown)
    write_text(out / "surfaces.json", json.dumps(results, indent=1) + "\n")
    return {
        **results,
        "markdown": markdown,
        "files": [str(f) for f in (*figure_files, gif_file, out / "surfaces.md", out / "surfaces.json")],
        "seconds": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.surfaces",
        description="Optimizer paths of torch.optim bases and their HD variants on 2-D test surfaces.",
    )
    parser.add_argument("--out", type=Path, default=Path("results/surfaces"), help="output folder")
    parser.add_argument("--full", action="store_true", help="Rosenbrock table with 20,000 instead of 5,000 iterations")
    parser.add_argument("--hypergrad-rule", choices=("additive", "multiplicative"), default=HypergradSettings.rule)
    parser.add_argument("--hypergrad-lr", type=float, default=HypergradSettings.hypergrad_lr)
    parser.add_argument(
        "--rosenbrock-table", action="store_true", help="only print issue 4's Rosenbrock table (lr 100x too small)"
    )
    parser.add_argument(
        "--lr-sweep", action="store_true", help="only recompute and print the base learning rates of every surface"
    )
    args = parser.parse_args(argv)
    hd = HypergradSettings(args.hypergrad_rule, args.hypergrad_lr)
    if args.lr_sweep:
        for surface in SURFACES.values():
            chosen = {base: best_base_lr(surface, base) for base in BASE_METHODS}
            print(f"{surface.key}: {chosen}" + ("" if chosen == dict(surface.base_lr) else "  (differs from SURFACES)"))
        return
    if args.rosenbrock_table:
        max_steps = ROSENBROCK_MAX_STEPS[not args.full]
        rows = rosenbrock_bad_lr_table(ROSENBROCK_LR_FACTOR, max_steps, THRESHOLD, hd)
        print(rosenbrock_markdown(rows, ROSENBROCK_LR_FACTOR, max_steps, hd))
        return
    result = run_surfaces(args.out, quick=not args.full, hd=hd)
    print(result["markdown"])
    print("\n".join(result["files"]))
    print(f"{result['seconds']:.1f} s")


if __name__ == "__main__":
    main()
