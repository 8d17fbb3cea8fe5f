"""The fixed cost of hypergradient descent: an HD optimizer's step minus its base rule's step, by
model size, for every optimizer and both the default (scale-free) and the paper's (additive) rule.

For each size (1k, 10k, 100k, 1M and 10M parameters, a two-layer parameter set: two square
weights and two biases) and each variant this times, interleaved:

* ``AdamHD(params)`` as a user writes it (the default path: no ``fused``/``foreach`` given), once
  with the default rule and once with ``hypergrad_rule="additive"``;
* the base rule's ``torch.optim`` step on the path our default took (``fused=True`` where ours
  took the fused kernel, else the foreach or for-loop step), and torch.optim's own default.

The overhead is our step minus torch's step on the same path; the last column set is our default
over torch's default (what a user switching from ``torch.optim.Adam`` to ``AdamHD`` sees). Process
CPU time (time spent descheduled on a shared machine does not count), 1 thread, medians of
interleaved rounds in rotating order, fixed random gradients.

    python benchmarks/overhead.py --out overhead.json --plot docs/figures/overhead.png   # measure (~4 min), table, plot
    python benchmarks/overhead.py --out overhead.json --sizes 10000000    # one size, added to the file
    python benchmarks/overhead.py --report overhead.json --plot docs/figures/overhead.png
    python benchmarks/overhead.py --report after.json --before before.json --plot ...
    python benchmarks/overhead.py --paths --sizes 1000,1000000 --variants Adam-HD   # our paths side by side
    python benchmarks/overhead.py --phases --sizes 1000                  # where our step's time goes
    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python benchmarks/overhead.py --first-steps --variants Adam-HD --sizes 1000

Measuring adds each result to the JSON file (``--out``), so that sizes can be measured in separate
short runs, then prints the file's table; ``--report`` prints the table of a file without
measuring. ``--plot`` draws the plot of the file measured or reported (with ``--before``, an
earlier file's overheads dashed, e.g. one measured at an earlier commit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import VARIANTS, fastest_path, has_fused, with_gradients  # noqa: E402

from hypergrad import _compiled  # noqa: E402
from hypergrad._compiled import SWITCH  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
#: The variants timed (SGD-HD with weight decay is SGD-HD's path with one more pass: left out).
NAMES = ("SGD-HD", "heavy-ball-HD", "SGDN-HD", "Adam-HD", "AdamW-HD", "Adagrad-HD", "RMSprop-HD")
RULES = ("scalefree", "additive")


def parameter_set(size: int) -> list[Tensor]:
    """Two ``a x a`` weights and two ``a`` biases, ``2 a^2 + 2 a`` about ``size``."""
    a = max(1, round((-1 + math.sqrt(1 + 2 * size)) / 2))
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=generator) for shape in ((a, a), (a,), (a, a), (a,))]


def taken_path(optimizer: Any) -> str:
    """The path our optimizer's default took at its steps: fused, foreach or for-loop."""
    group = optimizer.param_groups[0]
    if optimizer._use_fused(group):
        return "fused"
    return "foreach" if optimizer._use_foreach(group, group["params"]) else "for-loop"


def median_times(steps: dict[str, Any], rounds: int, round_seconds: float) -> dict[str, float]:
    """Median process seconds per step of each callable over interleaved rounds (rotating order)."""
    per_round = {}
    for name, step in steps.items():
        start = time.process_time()
        step()
        per_round[name] = max(1, math.ceil(round_seconds / max(time.process_time() - start, 1e-6)))
    names = list(steps)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.process_time()
            for _ in range(per_round[name]):
                steps[name]()
            samples[name].append((time.process_time() - start) / per_round[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(variant: str, size: int, rounds: int, warmup: int, round_seconds: float) -> dict[str, Any]:
    hd_cls, base_cls, settings, paper_beta = VARIANTS[variant]
    params = parameter_set(size)
    generator = torch.Generator().manual_seed(1)
    grads = [1e-3 * torch.randn(p.shape, generator=generator) for p in params]
    ours = {rule: hd_cls(with_gradients(params, grads), hypergrad_rule=rule,
                         hypergrad_lr=None if rule == "scalefree" else paper_beta, **settings) for rule in RULES}
    optimizers: dict[str, Any] = {f"ours {rule}": optimizer for rule, optimizer in ours.items()}
    optimizers["torch default"] = base_cls(with_gradients(params, grads), **settings)
    paths = {taken_path(optimizer) for optimizer in ours.values()}
    assert len(paths) == 1, paths
    path = paths.pop()
    if path != "for-loop":
        flag = dict(fused=True) if path == "fused" and has_fused(base_cls) else dict(foreach=True)
        optimizers["torch same path"] = base_cls(with_gradients(params, grads), **flag, **settings)
    steps = {name: optimizer.step for name, optimizer in optimizers.items()}
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = median_times(steps, rounds, round_seconds)
    times.setdefault("torch same path", times["torch default"])
    return dict(variant=variant, size=sum(p.numel() for p in params), path=path, times=times,
                load=os.getloadavg()[0])


#: The paths ``--paths`` compares (``fused, eager``: the fused kernel with the statistics, rule and
#: directions around it eager, as without a C++ compiler; ``fused, compiled``: with every compiled
#: pass, whatever the size, i.e. ``_compiled.MIN_ELEMENTS`` set to 0).
PATHS = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused, eager": dict(fused=True),
         "fused, compiled": dict(fused=True)}


def switched(step: Any, compiled: bool) -> Any:
    """``step`` with the compiled passes off (``_compiled.SWITCH``), or on at every size, while it runs."""
    def switched_step() -> None:
        minimum = _compiled.MIN_ELEMENTS
        os.environ[SWITCH] = "1" if compiled else "0"
        _compiled.MIN_ELEMENTS = 0
        try:
            step()
        finally:
            os.environ[SWITCH] = "1"
            _compiled.MIN_ELEMENTS = minimum
    return switched_step


def measure_paths(variant: str, size: int, rule: str, rounds: int, warmup: int, round_seconds: float) -> str:
    """One line: our step on each path, and torch's fused step, at one size and rule."""
    hd_cls, base_cls, settings, paper_beta = VARIANTS[variant]
    params = parameter_set(size)
    generator = torch.Generator().manual_seed(1)
    grads = [1e-3 * torch.randn(p.shape, generator=generator) for p in params]
    beta = None if rule == "scalefree" else paper_beta
    steps = {}
    for name, flags in PATHS.items():
        if "fused" in flags and not has_fused(hd_cls):
            continue
        step = hd_cls(with_gradients(params, grads), hypergrad_rule=rule, hypergrad_lr=beta, **flags, **settings).step
        steps[name] = switched(step, compiled=name == "fused, compiled") if name.startswith("fused") else step
    steps["torch fused"] = base_cls(with_gradients(params, grads), **fastest_path(base_cls), **settings).step
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = median_times(steps, rounds, round_seconds)
    return (f"{variant:<14} {rule:<9} {sum(p.numel() for p in params):>9} "
            + " ".join(f"{name} {value * 1e6:.0f}us" for name, value in times.items())
            + f"  (load {os.getloadavg()[0]:.1f})")


#: The phases ``--phases`` times: the optimizer's methods (timed in a subclass) and the functions
#: ``step()`` calls from ``hypergrad.optimizer`` (timed in place while the twin steps).
PHASES = {"init": "_init_group", "update": "_update_params"}
FUNCTION_PHASES = {"statistics": "group_statistics", "rates": "step_rates"}


def measure_phases(variant: str, size: int, rule: str, steps: int) -> str:
    """One line: our default step and torch's step on the same path (medians of 5 interleaved
    rounds of ``steps`` steps), and where the time of our step goes (process time per step, over
    ``steps`` more steps of a twin whose phases are timed, each timing adding about a
    microsecond): gathering the gradients, the statistics, the rates (``_rates.step_rates``: the
    rule, the record) and the base update. The rest of the step is ``step()``'s own loop and
    torch.optim's wrapper, which torch's step has too."""
    import hypergrad.optimizer

    hd_cls, base_cls, settings, paper_beta = VARIANTS[variant]
    spent: dict[str, int] = dict.fromkeys([*PHASES, *FUNCTION_PHASES], 0)

    def timed(phase: str, function: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time_ns()
            try:
                return function(*args, **kwargs)
            finally:
                spent[phase] += time.process_time_ns() - start
        return run

    timed_cls = type(hd_cls.__name__, (hd_cls,), {name: timed(phase, getattr(hd_cls, name))
                                                  for phase, name in PHASES.items()})
    params = parameter_set(size)
    generator = torch.Generator().manual_seed(1)
    grads = [1e-3 * torch.randn(p.shape, generator=generator) for p in params]
    beta = None if rule == "scalefree" else paper_beta
    ours, timed_ours = (cls(with_gradients(params, grads), hypergrad_rule=rule, hypergrad_lr=beta, **settings)
                        for cls in (hd_cls, timed_cls))
    path = taken_path(ours)
    flags = {} if path == "for-loop" else dict(fused=True) if path == "fused" else dict(foreach=True)
    base = base_cls(with_gradients(params, grads), **flags, **settings)
    lr = ours.param_groups[0]["lr"]

    def stepper(optimizer: Any) -> Any:
        def step() -> None:
            optimizer.param_groups[0]["lr"] = lr  # (fixed gradients grow the rate without end)
            optimizer.step()
        return step

    for _ in range(20):
        for step in (stepper(ours), stepper(timed_ours), base.step):
            step()
    times: dict[str, list[float]] = {"ours": [], "base": []}
    for name, step in (("ours", stepper(ours)), ("base", base.step)) * 5:
        start = time.process_time()
        for _ in range(steps):
            step()
        times[name].append((time.process_time() - start) / steps * 1e6)
    spent.update(dict.fromkeys(spent, 0))  # (the warm-up's)
    untimed = {name: getattr(hypergrad.optimizer, name) for name in FUNCTION_PHASES.values()}
    for phase, name in FUNCTION_PHASES.items():
        setattr(hypergrad.optimizer, name, timed(phase, untimed[name]))
    try:
        step = stepper(timed_ours)
        for _ in range(steps):
            step()
    finally:
        for name, function in untimed.items():
            setattr(hypergrad.optimizer, name, function)
    ours_us, base_us = (statistics.median(times[name]) for name in ("ours", "base"))
    return (f"{variant:<14} {rule:<9} {sum(p.numel() for p in params):>9} {path:<8} ours {ours_us:7.1f} "
            f"base {base_us:7.1f} overhead {ours_us - base_us:7.1f} | "
            + " ".join(f"{phase} {total / steps / 1e3:6.1f}" for phase, total in spent.items())
            + f" us  (load {os.getloadavg()[0]:.1f})")


def first_steps(variant: str, size: int, flags: dict[str, Any]) -> str:
    """The process and wall seconds of an optimizer's first three steps (the compiling ones, for
    the compiled passes; run in a fresh process, with ``TORCHINDUCTOR_CACHE_DIR`` pointing to an
    empty folder for a cold compile)."""
    hd_cls, _, settings, _ = VARIANTS[variant]
    params = parameter_set(size)
    optimizer = hd_cls(with_gradients(params, [torch.ones_like(p) for p in params]), **flags, **settings)
    process, wall = time.process_time(), time.perf_counter()
    for _ in range(3):
        optimizer.step()
    return (f"{variant} {flags} at {sum(p.numel() for p in params)} parameters: first 3 steps "
            f"{time.process_time() - process:.2f} s process, {time.perf_counter() - wall:.2f} s wall "
            f"(load {os.getloadavg()[0]:.1f})")


def commit() -> str | None:
    """The checkout's commit (``+`` where files differ from it), or ``None`` outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"header": {}, "results": []}


def report(results: dict[str, Any]) -> str:
    """The table: per variant and rule, overhead in microseconds by size, and our default over
    torch's default."""
    rows = results["results"]
    sizes = sorted({row["size"] for row in rows})
    header = results["header"]
    lines = [f"torch {header.get('torch')}, commit {header.get('commit')}, {header.get('threads')} thread, "
             f"process CPU time, medians of "
             f"{header.get('rounds')} interleaved rounds; load average {header.get('loads')} on {os.cpu_count()} cores",
             "", "overhead = our default step - torch's step on the same path (us); "
             "ratio = our default / torch default"]
    size_names = [f"{s / 1e3:.0f}k" if s < 1e6 else f"{s / 1e6:.0f}M" for s in sizes]
    lines.append(f"{'variant':<14} {'rule':<9} {'path':<8} " + " ".join(f"{n:>9}" for n in size_names)
                 + " | " + " ".join(f"{n:>6}" for n in size_names))
    for variant in NAMES:
        for rule in RULES:
            found = {row["size"]: row for row in rows if row["variant"] == variant}
            if not found:
                continue
            overheads, ratios, paths = [], [], set()
            for size in sizes:
                row = found.get(size)
                if row is None:
                    overheads.append(f"{'-':>9}")
                    ratios.append(f"{'-':>6}")
                    continue
                t = row["times"]
                paths.add(row["path"])
                overheads.append(f"{(t[f'ours {rule}'] - t['torch same path']) * 1e6:9.0f}")
                ratios.append(f"{t[f'ours {rule}'] / t['torch default']:5.2f}x")
            lines.append(f"{variant:<14} {rule:<9} {'/'.join(sorted(paths)):<8} " + " ".join(overheads)
                         + " | " + " ".join(ratios))
    return "\n".join(lines)


def plot(results: dict[str, Any], before: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(RULES), figsize=(11, 4.2), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, rule in zip(axes, RULES):
        for colour, variant in zip(colours, NAMES):
            for data, style, label in ((results, "-", variant), (before, "--", None)):
                if data is None:
                    continue
                rows = sorted((row for row in data["results"] if row["variant"] == variant), key=lambda r: r["size"])
                xs = [row["size"] for row in rows]
                ys = [max((row["times"][f"ours {rule}"] - row["times"]["torch same path"]) * 1e6, 1.0) for row in rows]
                axis.plot(xs, ys, style, color=colour, marker="o" if style == "-" else None, label=label)
        axis.set(xscale="log", yscale="log", xlabel="parameters", title=f"hypergrad_rule={rule!r}")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("HD step - base step (us, CPU, 1 thread)")
    axes[0].legend(fontsize=8)
    if before is not None:
        figure.suptitle("overhead of the default path (solid: now; dashed: before)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="measure, adding the results to this JSON file")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated parameter counts")
    parser.add_argument("--variants", default=",".join(NAMES), help=f"comma-separated, from {list(NAMES)}")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps first (compiles; default 4)")
    parser.add_argument("--round-seconds", type=float, default=0.02, help="about this long per step kind per round")
    parser.add_argument("--paths", action="store_true",
                        help="compare our paths (for-loop, foreach, fused eager, fused compiled) instead")
    parser.add_argument("--rules", default=",".join(RULES), help="with --paths, --phases: comma-separated rules")
    parser.add_argument("--phases", action="store_true",
                        help="print where our default step's time goes (gradients, statistics, rates, update) instead")
    parser.add_argument("--steps", type=int, default=1000, help="with --phases: steps per round (default 1000)")
    parser.add_argument("--first-steps", action="store_true",
                        help="print the time of the first three steps, default path and fused=True, instead")
    parser.add_argument("--report", type=Path, help="print the table of this JSON file")
    parser.add_argument("--before", type=Path, help="with --plot: an earlier file, drawn dashed")
    parser.add_argument("--plot", type=Path, help="with --out or --report: save the plot here")
    args = parser.parse_args()
    if args.out is None and args.report is None and not (args.paths or args.phases or args.first_steps):
        parser.error("give --out (measure), --report (print), --paths, --phases or --first-steps")
    torch.set_num_threads(1)
    if args.first_steps:
        for flags in ({}, {"fused": True}):
            print(first_steps(args.variants.split(",")[0], int(args.sizes.split(",")[0]), flags), flush=True)
    if args.paths:
        print(f"torch {torch.__version__}, 1 thread, process CPU time, medians of {args.rounds} interleaved rounds")
        for size in map(int, args.sizes.split(",")):
            for variant in args.variants.split(","):
                for rule in args.rules.split(","):
                    print(measure_paths(variant, size, rule, args.rounds, args.warmup, args.round_seconds), flush=True)
    if args.phases:
        print(f"torch {torch.__version__}, commit {commit()}, 1 thread, process CPU time per step (us), medians of "
              f"5 rounds of {args.steps} steps; the phases summed over {args.steps} more")
        for size in map(int, args.sizes.split(",")):
            for variant in args.variants.split(","):
                for rule in args.rules.split(","):
                    print(measure_phases(variant, size, rule, args.steps), flush=True)
    if args.out is not None:
        results = load_results(args.out)
        header = results["header"]
        header.update(torch=torch.__version__, threads=1, rounds=args.rounds, commit=commit())
        header["loads"] = header.get("loads", []) + [round(os.getloadavg()[0], 1)]
        for size in map(int, args.sizes.split(",")):
            for variant in args.variants.split(","):
                row = measure(variant, size, args.rounds, args.warmup, args.round_seconds)
                results["results"] = [r for r in results["results"]
                                      if (r["variant"], r["size"]) != (variant, row["size"])] + [row]
                args.out.write_text(json.dumps(results, indent=1))
                t = row["times"]
                print(f"{variant:<14} {row['size']:>9} {row['path']:<8} "
                      + " ".join(f"{name} {value * 1e6:.0f}us" for name, value in t.items()), flush=True)
    shown = args.report if args.report is not None else args.out
    if shown is not None:
        results = load_results(shown)
        print(report(results))
        if args.plot is not None:
            plot(results, load_results(args.before) if args.before else None, args.plot)


if __name__ == "__main__":
    main()
