"""What plain SGD can reach at all: the benchmark's ``--quick`` targets for torch's SGD (no
momentum) at fixed rates, within the entries' budget of 2N steps.

``SGDHD(model.parameters())`` is what replacing ``torch.optim.SGD`` gives: plain SGD from torch's
``lr=1e-3``, its rate tuned by HD. However well the rate is tuned, it cannot beat the best fixed
rate of plain SGD by much, so the targets the best fixed rate misses bound what SGD-HD at its
defaults can reach (docs/rule-study.md). For each workload and rate this prints the final
validation metric and the step at which the target is first reached (evaluated every N/5 steps,
as the benchmark does; ``-``: not within 2N)::

    python benchmarks/sgd_ceiling.py
    python benchmarks/sgd_ceiling.py --workloads mlp_mnist --lrs 0.1,0.2,0.3,0.5

Seed 1, one torch thread; the targets are those of docs/benchmark.md's ``--quick`` run. Each
run is a few seconds to a minute on a 2-core CPU (the CNN is the slowest).
"""

from __future__ import annotations

import argparse
import sys

import torch

from experiments.core.methods import resolve_settings
from experiments.core.runs import train
from experiments.core.workloads import WORKLOADS, load_workload_data

TARGETS = {"logreg_mnist": 0.9025, "mlp_mnist": 0.926, "cnn_fashion": 0.708, "transformer_fortunes": 2.825,
           "mlp_diabetes": 4041.0, "fullbatch_breast_cancer": 0.1689}
"""The benchmark's ``--quick`` targets (docs/benchmark.md)."""


def reached(metric: list, steps: list[int], target: float, goal: str) -> int | None:
    """The first evaluated step whose metric meets ``target`` (``goal``: ``max`` or ``min``)."""
    for step, value in zip(steps, metric):
        if value is not None and ((value >= target) if goal == "max" else (value <= target)):
            return step
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="logreg_mnist,mlp_mnist,cnn_fashion,transformer_fortunes")
    parser.add_argument("--lrs", default="0.03,0.1,0.3,1.0", help="comma-separated fixed rates")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| workload | lr | final metric | target | reached at (2N) | 2N |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.workloads.split(","):
        if name not in TARGETS:
            parser.error(f"--workloads: {name!r} is not one of {list(TARGETS)}")
        workload = WORKLOADS[name]
        data = load_workload_data(workload, "quick", args.data_dir)
        budget = 2 * workload.steps["quick"]
        for lr in (float(text) for text in args.lrs.split(",")):
            settings = resolve_settings("sgd", "untuned", name, name == "cnn_fashion", lr=lr)
            result = train(workload, data, "quick", "sgd", settings, 1, budget)
            step = reached(result["metric"], result["steps"], TARGETS[name], workload.goal)
            final = result["metric"][-1]
            shown = "diverged" if final is None else f"{final:.4g}"
            print(f"| {name} | {lr:g} | {shown} | {TARGETS[name]:g} | {'-' if step is None else step} | {budget} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
