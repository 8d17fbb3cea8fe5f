"""The benchmark's figures and Markdown, drawn from ``benchmark.json``'s record and the run curves.

* :func:`score_table`: entries by step-based score, with the time-based score and each entry's
  process time per step relative to torch's AdamW;
* :func:`markdown`: ``benchmark.md`` (workloads with sources and hashes, the score table, steps to
  target per workload, final metrics with seed ranges, the time per step per workload);
* :func:`plot_profile` and :func:`plot_curves`: ``performance_profile.png`` and ``curves.png``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from experiments.benchmark import scoring  # noqa: E402
from experiments.core.methods import METHODS  # noqa: E402
from experiments.core.plotting import legend_outside, save_figure  # noqa: E402

__all__ = ["markdown", "plot_curves", "plot_profile", "score_table", "step_cost", "step_cost_table"]


def _color(entries: Sequence[str], entry: str) -> tuple:
    return matplotlib.colormaps["tab20"](entries.index(entry) % 20)


def _linestyle(entry: str) -> str:
    return "-" if "hd" in entry else "--"


def step_cost(curves: dict[tuple[str, str, int], dict], entry: str, baseline: str = "adamw",
              workload: str | None = None) -> float:
    """The median over workloads (or on ``workload`` alone) and seeds of ``entry``'s process
    seconds per step divided by ``baseline``'s on the same workload and seed (NaN where either
    has no steps)."""
    ratios = []
    for (name_of_workload, name, seed), curve in curves.items():
        other = curves.get((name_of_workload, baseline, seed))
        if name == entry and (workload is None or name_of_workload == workload) and other and curve["steps"] \
                and other["steps"]:
            mine = curve["time_s"][-1] / curve["steps"][-1]
            theirs = other["time_s"][-1] / other["steps"][-1]
            if theirs > 0:
                ratios.append(mine / theirs)
    return statistics.median(ratios) if ratios else math.nan


def step_cost_table(record: dict, curves: dict) -> str:
    """Each entry's process time per step relative to AdamW's, per workload (median over seeds;
    ``-`` where AdamW is not among the entries or the entry has no steps)."""
    workloads, entries = list(record["workloads"]), list(record["scores"])
    lines = ["| entry | " + " | ".join(workloads) + " |", "|---|" + "---:|" * len(workloads)]
    for entry in entries:
        costs = [step_cost(curves, entry, workload=name) for name in workloads]
        lines.append(f"| {entry} | " + " | ".join("-" if math.isnan(c) else f"{c:.2f}x" for c in costs) + " |")
    return "\n".join(lines)


def score_table(record: dict, curves: dict) -> str:
    """The score table as printed and as ``benchmark.md`` and the README show it (``-`` for the time
    per step where AdamW is not among the entries or the entry has no steps)."""
    rows = sorted(record["scores"], key=lambda e: (-record["scores"][e], -record["time_scores"][e], e))
    lines = ["| rank | entry | score (steps) | score (process time) | time per step vs AdamW |",
             "|---:|---|---:|---:|---:|"]
    for rank, entry in enumerate(rows, start=1):
        cost = step_cost(curves, entry)
        lines.append(f"| {rank} | {entry} | {record['scores'][entry]:.3f} | {record['time_scores'][entry]:.3f} | "
                     + ("- |" if math.isnan(cost) else f"{cost:.2f}x |"))
    return "\n".join(lines)


def _range(values: Sequence[float | None]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < len(values):
        return "diverged" if not finite else f"{min(finite):.4g}..{max(finite):.4g} ({len(values) - len(finite)} diverged)"
    return f"{min(finite):.4g}" if min(finite) == max(finite) else f"{min(finite):.4g}..{max(finite):.4g}"


def markdown(record: dict, curves: dict, command: str, elapsed_s: float) -> str:
    """``benchmark.md``."""
    workloads, entries = list(record["workloads"]), list(record["scores"])
    runs = record["runs"]
    lines = [f"# Self-tuning benchmark (`--{record['mode']}`)", "",
             f"`{command}`: {len(runs)} entry runs, {elapsed_s / 60:.1f} min in this session "
             "(cached runs are reused). Scores as AlgoPerf's self-tuning track computes them: "
             "t = upper median over seeds of the steps to target, r = t / best t, score = "
             f"integral of the profile over tau in [1, {scoring.TAU_MAX:g}] / {scoring.TAU_MAX - 1:g}.", "",
             "## Scores", "", score_table(record, curves), "", "## Workloads", "",
             "| workload | metric | goal | target | budget (steps) | source | SHA-256 |", "|---|---|---|---:|---:|---|---|"]
    for name, w in record["workloads"].items():
        lines.append(f"| {name} | {w['metric']} | {w['goal']} | {w['target']:.4g} | {w['budget_steps']} | "
                     f"{w['source']} | `{w['sha256']}` |")
    for title, key, show in (("Steps to target (upper median over seeds; - = not reached)", "steps_to_target",
                              lambda t: "-" if math.isinf(t) else f"{t:g}"),
                             ("Final validation metric (range over seeds)", "final_metric", None)):
        lines += ["", f"## {title}", "", "| entry | " + " | ".join(workloads) + " |",
                  "|---|" + "---:|" * len(workloads)]
        for entry in entries:
            cells = []
            for name in workloads:
                values = [r[key] for r in runs if r["entry"] == entry and r["workload"] == name]
                cells.append(show(scoring.upper_median(values)) if show else _range(values))
            lines.append(f"| {entry} | " + " | ".join(cells) + " |")
    lines += ["", "## Process time per step relative to AdamW (median over seeds)", "",
              "The whole training step (forward, backward, the optimizer's step and its schedule), each "
              "entry as its users would write it.", "", step_cost_table(record, curves)]
    lines += ["", "Entries: " + "; ".join(f"`{e}`: {METHODS[e].description}" for e in entries) + ".", ""]
    return "\n".join(lines)


def plot_profile(record: dict, times: dict[str, dict[str, float]], path: Path) -> tuple[Path, Path]:
    """rho_s(tau) over tau in [1, TAU_MAX] for every entry."""
    entries = list(times)
    taus = scoring.tau_grid()
    ratios = scoring.performance_ratios(times)
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for entry in sorted(entries, key=lambda e: -record["scores"][e]):
        ax.step(taus, scoring.profile(ratios[entry], taus), where="post", color=_color(entries, entry),
                linestyle=_linestyle(entry), label=f"{entry} ({record['scores'][entry]:.3f})")
    ax.set(xlabel="tau (steps to target / best entry's)", ylabel="fraction of workloads with r <= tau",
           title=f"Performance profiles, {len(record['workloads'])} workloads (--{record['mode']})",
           xlim=(1, scoring.TAU_MAX), ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return save_figure(fig, path)


def plot_curves(record: dict, curves: dict, path: Path) -> tuple[Path, Path]:
    """One panel per workload: each entry's validation metric vs step (first seed), target line dashed."""
    names, entries = list(record["workloads"]), list(record["scores"])
    columns = 3
    fig = Figure(figsize=(5 * columns, 3.6 * math.ceil(len(names) / columns)))
    for index, name in enumerate(names):
        ax = fig.add_subplot(math.ceil(len(names) / columns), columns, index + 1)
        workload = record["workloads"][name]
        for entry in entries:
            seed = min(seed for (w, e, seed) in curves if w == name and e == entry)
            curve = curves[(name, entry, seed)]
            ax.plot(curve["steps"], curve["metric"], color=_color(entries, entry), linestyle=_linestyle(entry),
                    label=entry)
        ax.axhline(workload["target"], color="black", linestyle=":", label="target")
        if workload["goal"] == "min" and workload["metric"] != "valid_loss_per_token":
            ax.set_yscale("log")
        ax.set(title=name, xlabel="step", ylabel=workload["metric"])
        ax.grid(alpha=0.3)
    legend_outside(fig, handles=fig.axes[0].get_legend_handles_labels()[0])
    fig.tight_layout()
    return save_figure(fig, path)
