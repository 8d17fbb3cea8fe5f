"""The sensitivity study's Markdown and heatmap figure, drawn from ``sensitivity.json``'s record.

* :func:`goal_table`: per workload and HD method at its default beta, the worst ratio over the
  goal's alpha_0 range and whether it is within the goal's ratio;
* :func:`markdown`: ``sensitivity.md`` (workloads, the goal table, per workload a table of ratios:
  rows method and beta, columns alpha_0);
* :func:`plot_heatmaps`: ``sensitivity_heatmap.png`` (rows workloads, columns HD methods).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from experiments.core.methods import METHODS  # noqa: E402
from experiments.core.plotting import save_figure  # noqa: E402
from experiments.core.runs import compact_number  # noqa: E402

__all__ = ["cell_ratio", "goal_table", "markdown", "plot_heatmaps"]

VMIN, VMAX = 0.5, 100.0
"""The colour scale's range of ratios (beyond: the end colours)."""


def _value(value: float | None) -> float:
    """A ratio as read back from JSON (null: inf for a diverged run, NaN without a reference)."""
    return math.inf if value is None else value


def cell_ratio(cell: dict) -> float:
    """A cell's ratio, also as read back from JSON, where null is inf (diverged) or, when the base
    has no finite loss either, NaN."""
    if cell["ratio"] is None:
        return math.nan if cell["base_best"] is None else math.inf
    return cell["ratio"]


def _ratio(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "div"
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def _hd_methods(record: dict) -> list[str]:
    return list(record["default_betas"])


def goal_table(record: dict) -> str:
    """The goal table as printed and as ``sensitivity.md`` shows it."""
    low, high = record["goal"]["alpha0s"]
    ratio = record["goal"]["ratio"]
    lines = [f"| workload | method | worst ratio, alpha_0 in [{compact_number(low)}, {compact_number(high)}] | "
             f"at alpha_0 | within {ratio:g}x |", "|---|---|---:|---:|---|"]
    for row in record["goal_rows"]:
        worst = row["worst_ratio"]
        meets = {True: "yes", False: "**no**", None: "n/a (base diverged)"}[row["meets"]]
        where = "-" if row["worst_alpha0"] is None else compact_number(row["worst_alpha0"])
        shown = "n/a" if row["meets"] is None else _ratio(worst)
        lines.append(f"| {row['workload']} | {row['method']} | {shown} | {where} | {meets} |")
    met = sum(row["meets"] is True for row in record["goal_rows"])
    lines.append("")
    lines.append(f"{met} of {len(record['goal_rows'])} (workload, method) pairs meet the goal.")
    return "\n".join(lines)


def _workload_table(record: dict, name: str) -> list[str]:
    alpha0s = record["alpha0s"]
    lines = ["| method | beta | " + " | ".join(f"alpha_0 {compact_number(a)}" for a in alpha0s) + " |",
             "|---|---:|" + "---:|" * len(alpha0s)]
    best = record["workloads"][name]["bases"]
    for base in best:
        runs = {r["alpha0"]: r for r in record["runs"] if r["workload"] == name and r["method"] == base}
        reference = _value(best[base]["best_loss"])
        row = []
        for alpha0 in alpha0s:
            loss = _value(runs[alpha0]["final_loss"])
            row.append("n/a" if math.isinf(reference) else _ratio(loss / reference))
        lines.append(f"| {base} (base) | - | " + " | ".join(row) + " |")
        for method in (m for m in _hd_methods(record) if m.startswith(base + "_")):
            for factor in record["beta_factors"]:
                cells = {c["alpha0"]: c for c in record["cells"]
                         if c["workload"] == name and c["method"] == method and c["factor"] == factor}
                beta = compact_number(float(f"{record['default_betas'][method] * factor:.3g}"))
                mark = " (default)" if factor == 1.0 else ""
                lines.append(f"| {method} | {beta}{mark} | " + " | ".join(_ratio(cell_ratio(cells[a])) for a in alpha0s)
                             + " |")
    return lines


def markdown(record: dict, command: str, elapsed_s: float) -> str:
    """``sensitivity.md``."""
    goal = record["goal"]
    lines = [f"# Sensitivity to alpha_0 and beta (`--{record['mode']}`)", "",
             f"`{command}`: {len(record['runs'])} runs, {elapsed_s / 60:.1f} min in this session (cached runs "
             f"are reused); seed {record['seed']}. Each cell: the final validation loss of the HD run over the "
             "base's best final validation loss on the alpha_0 grid (`div`: diverged; `n/a`: the base "
             "diverged from every alpha_0). Goal: with the default beta, from every alpha_0 in "
             f"[{compact_number(goal['alpha0s'][0])}, {compact_number(goal['alpha0s'][1])}], within "
             f"{goal['ratio']:g}x on every workload.", "", "## The goal", "", goal_table(record), "",
             "## Workloads", ""]
    bases = list(next(iter(record["workloads"].values()))["bases"]) if record["workloads"] else []
    lines += ["| workload | steps | metric | " + " | ".join(f"{b} best loss (alpha_0)" for b in bases) +
              " | source | SHA-256 |", "|---|---:|---|" + "---:|" * len(bases) + "---|---|"]
    for name, w in record["workloads"].items():
        best = [f"{_value(b['best_loss']):.4g} ({'-' if b['best_alpha0'] is None else compact_number(b['best_alpha0'])})"
                for b in w["bases"].values()]
        lines.append(f"| {name} | {w['steps']} | {w['metric']} | {' | '.join(best)} | {w['source']} | "
                     f"`{w['sha256']}` |")
    for name in record["workloads"]:
        lines += ["", f"## {name}", "", *_workload_table(record, name)]
    lines += ["", "Methods: " + "; ".join(f"`{m}`: {METHODS[m].description}, default beta "
                                         f"{compact_number(b)}" for m, b in record["default_betas"].items()) + ".", ""]
    return "\n".join(lines)


def plot_heatmaps(record: dict, path: Path) -> tuple[Path, Path]:
    """Rows workloads, columns HD methods; each panel beta (rows) vs alpha_0 (columns), the ratio
    on a log colour scale, cells within the goal's ratio ringed, diverged cells crossed on grey."""
    names, methods = list(record["workloads"]), _hd_methods(record)
    alpha0s, factors = record["alpha0s"], record["beta_factors"]
    fig = Figure(figsize=(2.2 + 2.6 * len(methods), 0.6 + 2.1 * len(names)))
    axes = fig.subplots(len(names), len(methods), squeeze=False)
    norm = LogNorm(VMIN, VMAX)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = None
    for i, name in enumerate(names):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            grid = np.full((len(factors), len(alpha0s)), np.nan)
            for cell in record["cells"]:
                if cell["workload"] == name and cell["method"] == method:
                    grid[factors.index(cell["factor"]), alpha0s.index(cell["alpha0"])] = cell_ratio(cell)
            image = ax.imshow(np.where(np.isfinite(grid), grid, np.nan), cmap=cmap, norm=norm, origin="lower",
                              aspect="auto")
            for (row, column), value in np.ndenumerate(grid):
                if math.isinf(value):
                    ax.text(column, row, "x", ha="center", va="center", color="black", fontsize=9)
                elif value <= record["goal"]["ratio"]:
                    ax.plot(column, row, marker="o", markersize=9, markerfacecolor="none", color="white")
            ax.set_xticks(range(len(alpha0s)), [compact_number(a) for a in alpha0s], fontsize=6, rotation=45)
            beta = record["default_betas"][method]
            ax.set_yticks(range(len(factors)), [compact_number(float(f"{beta * f:.2g}")) for f in factors], fontsize=6)
            if i == 0:
                ax.set_title(method, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{name}\nbeta", fontsize=8)
            if i == len(names) - 1:
                ax.set_xlabel("alpha_0", fontsize=8)
    fig.suptitle(f"Final validation loss / base's best over alpha_0 (--{record['mode']}); o: within "
                 f"{record['goal']['ratio']:g}x, x: diverged, grey: no reference", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 0.97))
    colorbar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
    colorbar.set_label("ratio to the base's best (log scale)")
    return save_figure(fig, path)
