"""``python -m experiments sensitivity``: how far each hypergradient rule gets from each initial
learning rate alpha_0 and each beta, on every workload of the self-tuning benchmark.

Per workload and base optimizer (SGD with Nesterov momentum 0.9, ``sgdn``; Adam, ``adam``) the base
runs from every alpha_0 of the grid; each HD method of that base (the paper's additive rule,
``*_hd``, and the scale-free rule, ``*_hd_sf``) runs from every alpha_0 with every beta of
``default beta x BETA_FACTORS``. A cell is the HD run's final validation loss over the base's best
final validation loss on the alpha_0 grid (a diverged run: infinity; a base that diverges from
every alpha_0 leaves no reference: NaN). The goal (issue 14): with the default beta, from every
alpha_0 in ``GOAL_ALPHA0S``, within ``GOAL_RATIO`` of the base's best, on every workload.

One seed; each run the workload's N steps (``--quick``) or 2N (``--full``), the benchmark's
untuned settings otherwise (:func:`methods.untuned_settings`), through the benchmark's run cache
(``OUT/runs/``: finished runs are reused). Outputs in OUT: ``sensitivity.json``,
``sensitivity.md`` and ``sensitivity_heatmap.png`` (and ``.pdf``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments.benchmark.options import add_common_arguments, parse_names, run_command
from experiments.core.files import write_json, write_text
from experiments.benchmark.selftuning import CONFIGURATION
from experiments.core.methods import untuned_settings
from experiments.core.runs import RunCache, RunSpec, compact_number, run_pool
from experiments.core.workloads import WORKLOADS, suite, workload_data

__all__ = ["ALPHA0S", "BASES", "BETA_FACTORS", "add_arguments", "cells", "goal_rows", "run_from_args",
           "sensitivity"]

BASES = {"sgdn": ("sgdn_hd", "sgdn_hd_sf", "sgdn_hd_bracket"), "adam": ("adam_hd", "adam_hd_sf", "adam_hd_bracket"),
         "muon": ("muon_hd",)}
"""Base optimizer -> its HD methods (additive rule, scale-free rule, bracketing rule; Muon: the
scale-free rule). alpha_0 is the base's ``lr``: for Muon, the rate of its hidden matrices (the
AdamW part of the split keeps AdamW's default rate)."""
ALPHA0S = {"quick": (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), "full": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)}
"""Initial learning rates, one per decade (``--quick``: the goal's range only, to fit ~15 min on 2 cores)."""
BETA_FACTORS = {"quick": (10 ** -1.5, 1.0, 10 ** 1.5), "full": tuple(10 ** (k / 2) for k in range(-3, 4))}
"""Multiples of each HD method's default beta: three decades around it."""
STEPS_PER_N = {"quick": 1, "full": 2}
SEED = 1
GOAL_ALPHA0S = (1e-5, 1e-1)
GOAL_RATIO = 1.25


@dataclasses.dataclass(frozen=True)
class Job:
    """One run: ``method`` from ``alpha0`` (``factor`` times its default beta; None for a base)."""

    workload: str
    method: str
    alpha0: float
    factor: float | None = None

    def spec(self, mode: str, data_dir: str | None) -> RunSpec:
        """The run this job plans (its keys never held a schedule: ``keyed_schedule=False``)."""
        beta = None if self.factor is None else default_beta(self.method) * self.factor
        name = f"sensitivity-{self.workload}-{self.method}-a{compact_number(self.alpha0)}"
        if beta is not None:
            name += f"-b{compact_number(beta)}"
        return RunSpec.resolved(name, self.workload, mode, self.method, CONFIGURATION, SEED,
                                    WORKLOADS[self.workload].steps[mode] * STEPS_PER_N[mode], data_dir,
                                    keyed_schedule=False, lr=self.alpha0, hypergrad_lr=beta)


def default_beta(method: str) -> float:
    """The beta an HD method is given untuned (scale-free: the rule's default)."""
    return untuned_settings(method, False).hypergrad_lr


def run_job(cache: RunCache, mode: str, data_dir: str | None, job: Job) -> dict:
    """Train (or read back from the cache) one job's run: :func:`runs.train`'s result."""
    return cache.fetch(job.spec(mode, data_dir))


def jobs_for(names: Sequence[str], mode: str, bases: Sequence[str] | None = None) -> list[Job]:
    """Every run of the study: per workload the bases (all of :data:`BASES` unless given), then
    their HD methods."""
    jobs = []
    for name in names:
        for base in bases or BASES:
            hd_methods = BASES[base]
            jobs += [Job(name, base, alpha0) for alpha0 in ALPHA0S[mode]]
            jobs += [Job(name, method, alpha0, factor) for method in hd_methods
                     for factor in BETA_FACTORS[mode] for alpha0 in ALPHA0S[mode]]
    return jobs


# ----------------------------------------------------------------------------- cells and the goal


def _loss(value: float | None) -> float:
    return math.inf if value is None or not math.isfinite(value) else float(value)


def cells(runs: Sequence[dict]) -> list[dict]:
    """From ``runs`` (dicts with ``workload, method, alpha0, factor, final_loss``; None = diverged)
    one cell per HD run: ``ratio`` = its loss over its base's best loss on the workload (inf when
    it diverged; NaN when the base diverged from every alpha_0), with ``base_best``."""
    best = {}
    for run in runs:
        if run["method"] in BASES:
            key = (run["workload"], run["method"])
            best[key] = min(best.get(key, math.inf), _loss(run["final_loss"]))
    out = []
    for run in runs:
        if run["method"] in BASES:
            continue
        base = next(b for b, methods in BASES.items() if run["method"] in methods)
        reference, loss = best[(run["workload"], base)], _loss(run["final_loss"])
        ratio = math.nan if math.isinf(reference) else loss / reference
        out.append({"workload": run["workload"], "method": run["method"], "base": base, "alpha0": run["alpha0"],
                    "factor": run["factor"], "beta": run["beta"], "ratio": ratio, "base_best": reference})
    return out


def _in_goal_range(alpha0: float) -> bool:
    return GOAL_ALPHA0S[0] * (1 - 1e-9) <= alpha0 <= GOAL_ALPHA0S[1] * (1 + 1e-9)


def goal_rows(cell_list: Sequence[dict]) -> list[dict]:
    """Per workload and HD method at its default beta (factor 1): the worst ratio over the alpha_0
    in ``GOAL_ALPHA0S`` (where), and ``meets``: worst <= GOAL_RATIO (None when it is NaN)."""
    rows = {}
    for cell in cell_list:
        if cell["factor"] != 1.0 or not _in_goal_range(cell["alpha0"]):
            continue
        row = rows.setdefault((cell["workload"], cell["method"]),
                              {"workload": cell["workload"], "method": cell["method"], "worst_ratio": -math.inf,
                               "worst_alpha0": None})
        ratio = cell["ratio"]
        if math.isnan(ratio) or math.isnan(row["worst_ratio"]):
            row["worst_ratio"], row["worst_alpha0"] = math.nan, None
        elif ratio > row["worst_ratio"]:
            row["worst_ratio"], row["worst_alpha0"] = ratio, cell["alpha0"]
    for row in rows.values():
        row["meets"] = None if math.isnan(row["worst_ratio"]) else row["worst_ratio"] <= GOAL_RATIO
    return list(rows.values())


def build_record(mode: str, names: Sequence[str], sources: dict, results: dict[Job, dict],
                 bases: Sequence[str] | None = None) -> dict:
    """``sensitivity.json``'s content from the finished runs."""
    runs = [{"workload": j.workload, "method": j.method, "alpha0": j.alpha0, "factor": j.factor,
             "beta": None if j.factor is None else default_beta(j.method) * j.factor,
             "final_loss": r.get("final_loss"), "final_metric": r["final_metric"], "diverged": r["diverged"]}
            for j, r in results.items()]
    cell_list = cells(runs)
    workloads = {}
    for name in names:
        workload = WORKLOADS[name]
        best = {}
        for base in bases or BASES:
            losses = [(_loss(r["final_loss"]), r["alpha0"]) for r in runs if r["workload"] == name and r["method"] == base]
            loss, alpha0 = min(losses, key=lambda pair: pair[0])
            best[base] = {"best_loss": loss, "best_alpha0": None if math.isinf(loss) else alpha0}
        workloads[name] = {"metric": workload.metric, "steps": workload.steps[mode] * STEPS_PER_N[mode],
                           "bases": best, **sources[name]}
    return {"mode": mode, "settings": CONFIGURATION, "seed": SEED, "alpha0s": list(ALPHA0S[mode]), "beta_factors": list(BETA_FACTORS[mode]),
            "default_betas": {m: default_beta(m) for base in bases or BASES for m in BASES[base]},
            "goal": {"alpha0s": list(GOAL_ALPHA0S), "ratio": GOAL_RATIO}, "workloads": workloads,
            "runs": runs, "cells": cell_list, "goal_rows": goal_rows(cell_list)}


# ----------------------------------------------------------------------------- the command


def sensitivity(out_dir: str | Path, *, mode: str = "quick", only: Sequence[str] | None = None,
                data_dir: str | None = None, jobs: int = 1, command: str = "", bases: Sequence[str] | None = None,
                progress: Callable[[str], None] = functools.partial(print, flush=True)) -> dict:
    """Run (or reuse) every run of the study and write the outputs; the record (progress lines
    are flushed: a log file shows them as they come)."""
    from experiments.benchmark import beta_sensitivity_report as report

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    if mode not in ALPHA0S:
        raise ValueError(f"mode must be one of {sorted(ALPHA0S)}, got {mode!r}")
    names = list(only or suite("benchmark"))
    started = time.perf_counter()
    out_dir = Path(out_dir)
    sources = {}
    for name in names:  # in this process: missing data fails before any training
        source = workload_data(name, mode, data_dir).source
        sources[name] = {"source": source.kind, "sha256": source.sha256}
    jobs_list = jobs_for(names, mode, bases)
    progress(f"sensitivity --{mode}: {len(names)} workloads, {len(ALPHA0S[mode])} alpha_0, "
             f"{len(BETA_FACTORS[mode])} beta per HD method, {len(jobs_list)} runs, {jobs} worker(s); "
             f"cache {out_dir / 'runs'}")
    results: dict[Job, dict] = {}

    def done(job: Job, result: dict) -> None:
        results[job] = result
        beta = "" if job.factor is None else f" beta x{job.factor:.3g}"
        loss = result.get("final_loss")
        progress(f"  [{len(results)}/{len(jobs_list)}, {time.perf_counter() - started:.0f} s] {job.workload} "
                 f"{job.method} alpha_0 {compact_number(job.alpha0)}{beta}: "
                 f"{'diverged' if loss is None else f'valid loss {loss:.4g}'}")

    run_pool(run_job, (RunCache(out_dir, data_dir=data_dir), mode, data_dir), jobs_list, jobs, done)
    record = build_record(mode, names, sources, results, bases)
    elapsed = time.perf_counter() - started
    write_json(out_dir / "sensitivity.json", record)
    write_text(out_dir / "sensitivity.md", report.markdown(record, command, elapsed))
    report.plot_heatmaps(record, out_dir / "sensitivity_heatmap")
    progress(f"\n{report.goal_table(record)}\n\nsensitivity done in {elapsed / 60:.1f} min; wrote "
             f"{out_dir / 'sensitivity.json'}, sensitivity.md, sensitivity_heatmap.png")
    return record


def add_arguments(parser) -> None:
    """The ``sensitivity`` options."""
    add_common_arguments(parser, out="results/sensitivity",
                         quick_help="small workloads, N steps a run, 5 alpha_0 and 3 beta per HD method (the default; "
                         "~15 min on 2 idle cores with --jobs 2)",
                         full_help="larger workloads, 2N steps a run, 7 alpha_0 and 7 beta per HD method")
    parser.add_argument("--bases", default=None,
                        help=f"comma-separated base optimizers from: {', '.join(BASES)} (default: all)")


def run_from_args(args, parser) -> int:
    """Run ``sensitivity`` from parsed arguments; bad input exits with status 2 and a message."""
    return run_command("sensitivity", args, parser, lambda command: sensitivity(
        args.out, mode=args.mode, only=parse_names(args.only, list(suite("benchmark")), "--only", list(suite("benchmark"))),
        data_dir=args.data_dir, jobs=args.jobs, command=command,
        bases=parse_names(args.bases, list(BASES), "--bases", list(BASES))), ["--bases", args.bases] if args.bases else [])
