"""Optimizer paths on 2-D test functions (``surfaces.png``, ``surfaces.gif``, ``surfaces_curves.png``).

Every torch.optim base rule and its HD variant from the same start on each surface of
:mod:`experiments.paper.toy`, and issue 4's Rosenbrock table (the learning rate 100x too small). The paths
take no data and are deterministic; they are computed once and cached (``runs/surfaces-HASH``), and
the figures, the animation and the tables of the summary are drawn from the cached paths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D

from experiments.core.plotting import BASE_LINESTYLE, HD_LINESTYLE, legend_outside, method_style, save_figure, save_gif
from experiments.core.runs import StudyOutput, SuiteContext
from experiments.paper.toy import (
    BASE_METHODS,
    SURFACES,
    THRESHOLD,
    HypergradSettings,
    OptimizerPath,
    Surface,
    methods_available,
    rosenbrock_bad_lr_table,
    run_all,
)

GIF_FRAMES = 60
GIF_DPI = 75
GIF_FPS = 10
GIF_FINAL_PAUSE_S = 2.0  # the finished paths stay on screen before the loop restarts
ROSENBROCK_LR_FACTOR = 0.01
ROSENBROCK_MAX_STEPS = {"quick": 5_000, "full": 20_000}

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


def _panel_title(surface: Surface, base: str, paths: Mapping[str, OptimizerPath]) -> str:
    """Two lines: the method and its lr; the steps to f < THRESHOLD of the base and of HD."""
    head = f"{method_style(base).label}, α₀ = {surface.base_lr[base]:g}"
    return f"{head}\nsteps to f<{THRESHOLD:g}: {paths[base].steps_text()} | HD {paths[base + '_hd'].steps_text()}"


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
            cells.append(f"{path.steps_text()} (f={path.f[-1]:.1e}; α₀={path.lr0:g})")
        lines.append(f"| {method_style(method).label} | " + " | ".join(cells) + " |")
    notes = [
        f"Steps until f < {THRESHOLD:g} first holds (final f after the run in brackets), from the same start per "
        f"surface; float64. α₀ is the base's best value on the grid {{1, 3}}×10^k ≤ 1 (the HD variant starts "
        f"from the same α₀). HD variants: {hd.describe()}, for every method and surface.",
    ]
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


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
# The study.


def compute(surfaces: Sequence[Surface], hd: HypergradSettings, max_steps: int) -> dict:
    """Every path and the Rosenbrock table, JSON-ready (what the cache stores)."""
    paths = run_all(surfaces, hd)
    return {"paths": {key: {method: path.to_json() for method, path in by_method.items()}
                      for key, by_method in paths.items()},
            "rosenbrock_table": rosenbrock_bad_lr_table(ROSENBROCK_LR_FACTOR, max_steps, THRESHOLD, hd)}


def run(context: SuiteContext) -> StudyOutput:
    hd = HypergradSettings()
    surfaces = list(SURFACES.values())
    max_steps = ROSENBROCK_MAX_STEPS[context.budget.name]
    identity = {"hypergrad_rule": hd.rule, "hypergrad_lr": hd.hypergrad_lr, "threshold": THRESHOLD,
                "methods": methods_available(), "rosenbrock_max_steps": max_steps,
                "rosenbrock_lr_factor": ROSENBROCK_LR_FACTOR,
                "surfaces": {s.key: {"start": s.start, "steps": s.steps, "base_lr": dict(s.base_lr)} for s in surfaces}}
    stored = context.cache.cached_json("surfaces", identity, lambda: compute(surfaces, hd, max_steps))
    paths = {key: {method: OptimizerPath.from_json(path) for method, path in by_method.items()}
             for key, by_method in stored["paths"].items()}
    grid = draw_path_grid(surfaces, paths, hd)
    files = list(save_figure(grid.fig, context.out_dir / "surfaces"))
    frames = animation_frames(grid, surfaces, paths, GIF_FRAMES, GIF_DPI)
    files.append(save_gif(frames, context.out_dir / "surfaces.gif", GIF_FPS, GIF_FINAL_PAUSE_S))
    plt.close(grid.fig)
    curves = draw_curves(surfaces, paths, hd)
    files += save_figure(curves, context.out_dir / "surfaces_curves")
    plt.close(curves)
    summary = (
        "## Optimizer paths on 2-D test surfaces (surfaces.png, surfaces.gif)\n\n"
        + paths_markdown(surfaces, paths, hd)
        + f"\n### Rosenbrock with a learning rate {1 / ROSENBROCK_LR_FACTOR:g}x too small\n\n"
        + rosenbrock_markdown(stored["rosenbrock_table"], ROSENBROCK_LR_FACTOR, max_steps, hd)
    )
    return StudyOutput(files, summary)
