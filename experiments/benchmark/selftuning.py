"""``python -m experiments benchmark``: the self-tuning benchmark of record, scored as AlgoPerf scores.

Every entry runs with ONE configuration (:func:`methods.untuned_settings`) on every workload of
the ``benchmark`` suite of :data:`workloads.WORKLOADS`. Per workload, target-setting runs of AdamW with linear warmup
(``schedules.WARMUP`` of the steps) and cosine decay over :data:`TARGET_LRS` (1 seed, N steps) set the
target: the best final validation metric. Every entry then gets 2N steps per seed; the steps (and
process seconds) at which its validation metric first reaches the target give the scores of
:mod:`experiments.benchmark.scoring`.

Every run is a :class:`experiments.core.runs.RunSpec` (a :class:`Job` plans it) and goes
through the run cache (``OUT/runs/``): a run is keyed by the workload's identity, the SHA-256 of
its data, the method and its settings, the seed, the steps and the schedule, so finished runs are
reused and a changed workload is recomputed.

Outputs in OUT: ``benchmark.json``, ``benchmark.md``, ``performance_profile.png`` (and ``.pdf``)
and ``curves.png`` (one panel per workload: validation metric vs step, target line).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments.benchmark import scoring
from experiments.core.files import write_json, write_text
from experiments.core.methods import METHODS, resolve_methods
from experiments.core.runs import RunCache, RunSpec, compact_number, run_pool
from experiments.benchmark.options import add_common_arguments, parse_names, run_command
from experiments.core.workloads import WORKLOADS, suite, workload_data

__all__ = ["ENTRIES", "SEEDS", "TARGET_LRS", "Job", "add_arguments", "benchmark", "fetch", "run_from_args"]

ENTRIES = ("sgd_hd_sf", "adam_hd_sf", "adamw_hd_sf", "adagrad_hd_sf", "rmsprop_hd_sf", "sgd_hd", "adam_hd",
           "adamw_hd", "adagrad_hd", "rmsprop_hd", "adam_hd_mult", "hdm", "adamw", "schedulefree_adamw", "prodigy",
           "dadapt_adam", "dog", "mechanic", "schedulefree_adamw_hd", "schedulefree_sgd_hd", "muon", "muon_hd",
           "sgd_hd_bracket", "adam_hd_bracket")
"""Our HD optimizers at their defaults (``*_hd_sf``: the scale-free rule), the same with the paper's
additive rule at its betas (``*_hd``, the defaults before the scale-free rule) and with the
multiplicative rule, HDM, torch's AdamW at its defaults (lr 1e-3, the untuned user) and the
learning-rate-free peers at their packages' defaults; Schedule-Free with HD on its rate
(``schedulefree_*_hd``), torch's Muon + AdamW split (``muon``) and the same with HD
(``muon_hd``), and SGD-HD and Adam-HD with the opt-in bracketing rule (``*_hd_bracket``),
each at its constructor's defaults."""
TARGET_LRS = (1e-4, 10 ** -3.5, 1e-3, 10 ** -2.5, 1e-2)
"""The target-setting AdamW's grid: half-decade steps around its usual range (under the
``warmup_cosine`` schedule of :mod:`experiments.core.schedules`)."""
SEEDS = {"quick": (1, 2), "full": (1, 2, 3)}
TARGET_SEED = 1
CONFIGURATION = "untuned"
"""Every run's settings configuration (:data:`methods.CONFIGURATIONS`): the constructors' defaults,
the target-setting runs' lr aside."""


# ----------------------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class Job:
    """One run: an entry's run at its one configuration (2N steps), or with ``lr`` set, a run of
    ``method`` at that lr under the target-setting schedule (N steps; with method ``adamw``, a
    target-setting run)."""

    workload: str
    method: str
    seed: int
    lr: float | None = None

    @property
    def is_target(self) -> bool:
        return self.lr is not None

    def spec(self, mode: str, data_dir: str | None) -> RunSpec:
        """The run this job plans (the target-setting runs keep their names: ``lr{lr}``)."""
        label = self.method
        if self.is_target:
            label = f"lr{compact_number(self.lr)}" if self.method == "adamw" else f"{self.method}-lr{compact_number(self.lr)}"
        steps = WORKLOADS[self.workload].steps[mode] * (1 if self.is_target else 2)
        return RunSpec.resolved(f"benchmark-{self.workload}-{label}-seed{self.seed}", self.workload, mode,
                                    self.method, CONFIGURATION, self.seed, steps, data_dir, lr=self.lr,
                                    schedule="warmup_cosine" if self.is_target else None)


def run_job(cache: RunCache, mode: str, data_dir: str | None, job: Job) -> dict:
    """Train (or read back from the cache) one job's run; its curve as :func:`runs.train` gives it."""
    return cache.fetch(job.spec(mode, data_dir))


def fetch(cache: RunCache, mode: str, data_dir: str | None, jobs: Sequence[Job], workers: int,
           progress: Callable[[str], None]) -> dict[Job, dict]:
    """Every job's run, ``workers`` at a time in worker processes (one torch thread each)."""
    results: dict[Job, dict] = {}
    started = time.perf_counter()

    def done(job: Job, result: dict) -> None:
        results[job] = result
        what = job.method + (f" lr {compact_number(job.lr)}" if job.is_target else "")
        final = result["final_metric"]
        progress(f"  [{len(results)}/{len(jobs)}, {time.perf_counter() - started:.0f} s] {job.workload} {what} "
                 f"seed {job.seed}: {'diverged' if final is None else f'{final:.4g}'}")

    run_pool(run_job, (cache, mode, data_dir), jobs, workers, done)
    return results


# ----------------------------------------------------------------------------- the record


def _reached(result: dict, key: str, target: float, goal: str) -> float | None:
    """Steps (``key="steps"``) or process seconds (``"time_s"``) at which ``result`` first reached ``target``."""
    if result["diverged"]:
        return None
    index = scoring.first_reached(range(len(result["metric"])), result["metric"], target, goal)
    return None if index is None else result[key][index]


def build_record(mode: str, entries: Sequence[str], names: Sequence[str], sources: dict,
                 results: dict[Job, dict]) -> dict:
    """``benchmark.json``'s content from the finished runs (see the module docstring)."""
    record = {"mode": mode, "settings": CONFIGURATION, "workloads": {}, "runs": [], "scores": {}, "time_scores": {}}
    steps_to, seconds_to = {e: {} for e in entries}, {e: {} for e in entries}
    for name in names:
        workload = WORKLOADS[name]
        finals = [results[Job(name, "adamw", TARGET_SEED, lr)]["final_metric"] for lr in TARGET_LRS]
        finals = [value for value in finals if value is not None and math.isfinite(value)]
        target = (min if workload.goal == "min" else max)(finals) if finals else math.nan
        record["workloads"][name] = {"metric": workload.metric, "goal": workload.goal, "target": target,
                                     "budget_steps": 2 * workload.steps[mode], **sources[name]}
        for entry in entries:
            steps, seconds = [], []
            for seed in SEEDS[mode]:
                result = results[Job(name, entry, seed)]
                steps.append(_reached(result, "steps", target, workload.goal))
                seconds.append(_reached(result, "time_s", target, workload.goal))
                record["runs"].append({"workload": name, "entry": entry, "seed": seed, "steps_to_target": steps[-1],
                                       "time_to_target_s": seconds[-1], "final_metric": result["final_metric"],
                                       "diverged": result["diverged"]})
            steps_to[entry][name] = scoring.upper_median(steps)
            seconds_to[entry][name] = scoring.upper_median(seconds)
    record["scores"] = scoring.scores(steps_to)
    record["time_scores"] = scoring.scores(seconds_to)
    return record


def times_from_record(record: dict, key: str) -> dict[str, dict[str, float]]:
    """``t(entry, workload)``: the upper median over seeds of ``runs[*][key]`` (null = infinity)."""
    values: dict[str, dict[str, list]] = {}
    for run in record["runs"]:
        values.setdefault(run["entry"], {}).setdefault(run["workload"], []).append(run[key])
    return {entry: {w: scoring.upper_median(v) for w, v in per.items()} for entry, per in values.items()}


# ----------------------------------------------------------------------------- the command


def benchmark(out_dir: str | Path, *, mode: str = "quick", only: Sequence[str] | None = None,
              entries: Sequence[str] | None = None, data_dir: str | None = None, jobs: int = 1,
              command: str = "", progress: Callable[[str], None] = print) -> dict:
    """Run (or reuse) every target-setting and entry run, score them and write the outputs; the record."""
    from experiments.benchmark import selftuning_report as report

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    if mode not in SEEDS:
        raise ValueError(f"mode must be one of {sorted(SEEDS)}, got {mode!r}")
    names = list(only or suite("benchmark"))
    entries = list(entries or ENTRIES)
    resolve_methods(entries)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    sources = {}
    for name in names:  # in this process: missing data fails before any training, and the hashes
        source = workload_data(name, mode, data_dir).source
        sources[name] = {"source": source.kind, "sha256": source.sha256}
    jobs_list = [Job(name, "adamw", TARGET_SEED, lr) for name in names for lr in TARGET_LRS]
    jobs_list += [Job(name, entry, seed) for name in names for entry in entries for seed in SEEDS[mode]]
    progress(f"benchmark --{mode}: {len(names)} workloads, {len(entries)} entries, {len(jobs_list)} runs, "
             f"{jobs} worker(s); cache {out_dir / 'runs'}")
    results = fetch(RunCache(out_dir, data_dir=data_dir), mode, data_dir, jobs_list, jobs, progress)
    record = build_record(mode, entries, names, sources, results)
    curves = {(j.workload, j.method, j.seed): r for j, r in results.items() if not j.is_target}
    elapsed = time.perf_counter() - started
    write_json(out_dir / "benchmark.json", record)
    write_text(out_dir / "benchmark.md", report.markdown(record, curves, command, elapsed))
    report.plot_profile(record, times_from_record(record, "steps_to_target"), out_dir / "performance_profile")
    report.plot_curves(record, curves, out_dir / "curves")
    progress(f"\n{report.score_table(record, curves)}\n\nbenchmark done in {elapsed / 60:.1f} min; "
             f"wrote {out_dir / 'benchmark.json'}, benchmark.md, performance_profile.png, curves.png")
    return record


def add_arguments(parser) -> None:
    """The ``benchmark`` options."""
    add_common_arguments(parser, out="results/benchmark",
                         quick_help=f"small workloads, {len(SEEDS['quick'])} seeds (the default; ~25 min on 2 idle cores)",
                         full_help=f"4x the quick steps, larger validation sets, {len(SEEDS['full'])} seeds (sized to ~90 min on 2 idle cores)")
    parser.add_argument("--entries", default=None, help=f"comma-separated entries from: {', '.join(METHODS)} "
                        f"(default: {', '.join(ENTRIES)})")


def run_from_args(args, parser) -> int:
    """Run ``benchmark`` from parsed arguments; bad input exits with status 2 and a message."""
    return run_command("benchmark", args, parser, lambda command: benchmark(
        args.out, mode=args.mode, only=parse_names(args.only, list(suite("benchmark")), "--only", list(suite("benchmark"))),
        entries=parse_names(args.entries, list(METHODS), "--entries", ENTRIES), data_dir=args.data_dir,
        jobs=args.jobs, command=command), ["--entries", args.entries] if args.entries else [])
