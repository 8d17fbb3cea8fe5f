"""``python -m experiments compose``: warmup + cosine with HD on top, against the same schedule without it.

The self-tuning benchmark's target-setting recipe (AdamW, linear warmup over ``schedules.WARMUP``
of the steps, cosine decay to 0, N steps, seed ``benchmark.TARGET_SEED``, over the learning rates
``benchmark.TARGET_LRS``) run three ways on each workload: torch's AdamW (the target-setting runs
themselves), and AdamW-HD with the scale-free rule and with the paper's additive rule, each at its
default ``hypergrad_lr``, under the very same ``LambdaLR``. The scheduler owns ``group["lr"]``; HD
learns a factor on top of it (see ``docs/lr-finder-and-schedules.md``). With ``--out`` the
benchmark's folder, the AdamW runs are the benchmark's own target-setting runs, read from its cache.

Outputs in OUT: ``compose.json`` (every run's final validation metric), ``compose.md`` (one table
per workload: final metric per method and lr, and each method's best) and ``compose.png``/``.pdf``
(final metric against lr, one panel per workload).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from experiments.benchmark.selftuning import (  # noqa: E402
    CONFIGURATION, TARGET_LRS, TARGET_SEED, Job, fetch,
)
from experiments.benchmark.options import add_common_arguments, parse_names, run_command  # noqa: E402
from experiments.core.files import write_json, write_text  # noqa: E402
from experiments.core.methods import resolve_methods  # noqa: E402
from experiments.core.plotting import legend_outside, method_style, save_figure  # noqa: E402
from experiments.core.runs import RunCache, compact_number  # noqa: E402
from experiments.core.schedules import WARMUP  # noqa: E402
from experiments.core.workloads import WORKLOADS, suite, workload_data  # noqa: E402

__all__ = ["METHODS", "WORKLOADS_MEASURED", "add_arguments", "compose", "run_from_args"]

METHODS = ("adamw", "adamw_hd_sf", "adamw_hd")
"""torch's AdamW, AdamW-HD with the scale-free rule and with the paper's additive rule."""
WORKLOADS_MEASURED = ("mlp_mnist", "transformer_fortunes")


def best(values: Sequence[float | None], goal: str) -> float | None:
    """The best of the finite ``values`` (``None``: a diverged run), ``None`` if there is none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return min(finite) if goal == "min" else max(finite)


def _cell(value: float | None) -> str:
    return "diverged" if value is None else f"{value:.4g}"


def markdown(record: dict, command: str, elapsed_s: float) -> str:
    lines = ["# Warmup + cosine, with and without HD", "",
             f"`{command}`: {elapsed_s / 60:.1f} min in this session (cached runs are reused). "
             f"Every run: linear warmup over {WARMUP:.0%} of N steps, cosine decay to 0, seed {TARGET_SEED}; "
             "the HD optimizers learn a factor on top of the schedule. Final validation metric.", ""]
    for name, workload in record["workloads"].items():
        lrs = [compact_number(lr) for lr in record["lrs"]]
        lines += [f"## {name} ({workload['metric']}, {'lower' if workload['goal'] == 'min' else 'higher'} is "
                  f"better; N = {workload['steps']})", "",
                  "| method | " + " | ".join(f"lr {lr}" for lr in lrs) + " | best |",
                  "|---|" + "---:|" * (len(lrs) + 1)]
        for method in record["methods"]:
            finals = [run["final_metric"] for run in record["runs"] if run["workload"] == name and run["method"] == method]
            lines.append(f"| {method} | " + " | ".join(_cell(v) for v in finals) + f" | {_cell(best(finals, workload['goal']))} |")
        lines.append("")
    return "\n".join(lines)


def plot(record: dict, path: Path) -> tuple[Path, Path]:
    names = list(record["workloads"])
    fig = Figure(figsize=(5 * len(names), 3.8), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        workload = record["workloads"][name]
        for method in record["methods"]:
            finals = [run["final_metric"] for run in record["runs"] if run["workload"] == name and run["method"] == method]
            values = [math.nan if v is None else v for v in finals]
            ax.plot(record["lrs"], values, marker="o", **method_style(method).kwargs())
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate of the schedule")
        ax.set_ylabel(f"final {workload['metric']}")
        ax.set_title(name)
    legend_outside(fig, "below")
    return save_figure(fig, path)


def compose(out_dir: str | Path, *, mode: str = "quick", only: Sequence[str] | None = None,
            data_dir: str | None = None, jobs: int = 1, command: str = "",
            progress: Callable[[str], None] = print) -> dict:
    """Run (or reuse) every run, write the outputs; the record."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
    resolve_methods(METHODS)
    names = list(only or WORKLOADS_MEASURED)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    record: dict = {"mode": mode, "settings": CONFIGURATION, "methods": list(METHODS), "lrs": list(TARGET_LRS), "workloads": {}, "runs": []}
    for name in names:
        workload, source = WORKLOADS[name], workload_data(name, mode, data_dir).source
        record["workloads"][name] = {"metric": workload.metric, "goal": workload.goal,
                                     "steps": workload.steps[mode], "source": source.kind, "sha256": source.sha256}
    jobs_list = [Job(name, method, TARGET_SEED, lr) for name in names for method in METHODS for lr in TARGET_LRS]
    progress(f"compose --{mode}: {len(names)} workloads, {len(jobs_list)} runs, {jobs} worker(s); "
             f"cache {out_dir / 'runs'}")
    results = fetch(RunCache(out_dir, data_dir=data_dir), mode, data_dir, jobs_list, jobs, progress)
    for job in jobs_list:
        result = results[job]
        record["runs"].append({"workload": job.workload, "method": job.method, "lr": job.lr,
                               "final_metric": None if result["diverged"] else result["final_metric"],
                               "diverged": result["diverged"]})
    elapsed = time.perf_counter() - started
    write_json(out_dir / "compose.json", record)
    text = markdown(record, command, elapsed)
    write_text(out_dir / "compose.md", text)
    plot(record, out_dir / "compose")
    progress(f"\n{text}\ncompose done in {elapsed / 60:.1f} min; wrote {out_dir / 'compose.json'}, compose.md, compose.png")
    return record


def add_arguments(parser) -> None:
    add_common_arguments(parser, out="results/benchmark", quick_help="the benchmark's small workloads (the default)",
                         full_help="the benchmark's larger workloads",
                         only_help=f"comma-separated workloads from: {', '.join(suite('benchmark'))} "
                         f"(default: {', '.join(WORKLOADS_MEASURED)})")


def run_from_args(args, parser) -> int:
    """Run ``compose`` from parsed arguments; bad input exits with status 2 and a message."""
    return run_command("compose", args, parser, lambda command: compose(
        args.out, mode=args.mode, data_dir=args.data_dir, jobs=args.jobs, command=command,
        only=parse_names(args.only, list(suite("benchmark")), "--only", WORKLOADS_MEASURED)))
