"""The learning-rate range test on the mlp task (``lr_finder.png``), with fastai's four rules marked.

:func:`range_test` is also what the peers study uses to pick the peak learning rate of its tuned
schedules, so one cached test per task serves both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from matplotlib import pyplot as plt

from experiments.core.methods import MOMENTUM, MethodSettings, build_optimizer
from experiments.core.models import build_model
from experiments.core.workloads import WORKLOADS
from experiments.core.plotting import legend_outside, save_figure
from experiments.core import runner
from experiments.paper.common import markdown_table
from experiments.core.runs import StudyOutput, SuiteContext, compact_number
from experiments.core.training import training_subset

TASK = "mlp"
START_LR, END_LR = 1e-6, 10.0
BATCH_SIZE = 128
WEIGHT_DECAY = 1e-4
SEED = 1
SUGGESTIONS = ("valley", "slide", "minimum", "steep")


RANGE_TEST_OPTIMIZERS = {"sgdn": "sgd nesterov", "adam": "adam"}
"""Methods a range test can probe, with the name its cache identity records."""


def range_test(context: SuiteContext, task: str, method: str = "sgdn", start_lr: float = START_LR,
               end_lr: float = END_LR):
    """The (cached) LR range test of ``method`` (SGD with Nesterov momentum 0.9 by default) on
    ``task`` -> ``LRFinderResult``.

    Trains on a seeded ``lr_finder_fraction`` of the training set for ``lr_finder_iterations``
    steps, lr from ``start_lr`` to ``end_lr`` (geometric), batch 128, weight decay 1e-4.
    """
    from hypergrad.lr_finder import LRFinderResult, find_lr

    if method not in RANGE_TEST_OPTIMIZERS:
        raise ValueError(f"method must be one of {list(RANGE_TEST_OPTIMIZERS)}, got {method!r}")
    budget = context.budget
    identity = {"task": task, "optimizer": RANGE_TEST_OPTIMIZERS[method], "momentum": MOMENTUM,
                "weight_decay": WEIGHT_DECAY, "batch_size": BATCH_SIZE, "seed": SEED, "start_lr": start_lr,
                "end_lr": end_lr, "num_iter": budget.lr_finder_iterations,
                "train_fraction": budget.lr_finder_fraction[task]}

    def compute() -> dict:
        config = runner.RunConfig(task=task, seed=SEED, train_fraction=budget.lr_finder_fraction[task],
                                  data_dir=context.cache.data_dir, device=context.cache.device)
        splits = runner.dataset_for(config)  # the runner's data (one seam for tests)
        train_x, train_y = training_subset(splits, config.train_fraction, config.seed)
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(SEED))
        batches = [(train_x[order[i:i + BATCH_SIZE]], train_y[order[i:i + BATCH_SIZE]])
                   for i in range(0, len(order), BATCH_SIZE)]
        torch.manual_seed(SEED)
        model = build_model(task, splits.num_classes)
        optimizer = build_optimizer(method, model.parameters(), MethodSettings(start_lr, None, WEIGHT_DECAY, False))
        result = find_lr(model, optimizer, F.cross_entropy, batches, start_lr=start_lr, end_lr=end_lr,
                         num_iter=budget.lr_finder_iterations)
        return {"lrs": result.lrs, "losses": result.losses, "raw_losses": result.raw_losses,
                "num_iter": result.num_iter, "diverged": result.diverged}

    name = f"lr_finder-{task}" if method == "sgdn" else f"lr_finder-{task}-{method}"
    stored = context.cache.cached_json(name, identity, compute)
    return LRFinderResult(lrs=stored["lrs"], losses=stored["losses"], raw_losses=stored["raw_losses"],
                          metric_values=None, metric_goal="min", num_iter=stored["num_iter"],
                          diverged=stored["diverged"])


def run(context: SuiteContext) -> StudyOutput:
    result = range_test(context, TASK)
    suggestions, unusable = {}, []
    for rule in SUGGESTIONS:  # a rule needs enough points of the curve (a short or diverged test has fewer)
        try:
            suggestions[rule] = result.suggest(rule)
        except ValueError:
            unusable.append(rule)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    raw = [v if math.isfinite(v) else math.nan for v in result.raw_losses]
    ax.plot(result.lrs, raw, color="0.75", linewidth=0.8, label="raw minibatch loss", zorder=0)
    result.plot(ax, suggestions=tuple(suggestions))
    ax.set_ylabel("training loss (cross-entropy, nats)")
    ax.set_xlabel("learning rate (geometric ramp, one step each)")
    ax.grid(True, which="major", alpha=0.3)
    fraction = context.budget.lr_finder_fraction[TASK]
    ax.set_title(f"LR range test: SGD, Nesterov momentum {MOMENTUM}, {WORKLOADS[TASK].description}\n"
                 f"{result.num_iter} steps from {START_LR:g} to {END_LR:g}, batch {BATCH_SIZE}, weight decay {compact_number(WEIGHT_DECAY)}, "
                 f"{fraction:.0%} of the training set; smoothed loss (EMA 0.05), dotted = last 5 points "
                 f"(ignored by the rules){'; stopped early: diverged' if result.diverged else ''}", fontsize=9)
    legend_outside(ax, "right", fontsize=8)
    files = list(save_figure(fig, context.out_dir / "lr_finder", dpi=110))
    plt.close(fig)
    summary = (
        "## LR range test (lr_finder.png)\n\n"
        f"SGD with Nesterov momentum {MOMENTUM} on {WORKLOADS[TASK].description}: {result.num_iter} steps, lr from "
        f"{START_LR:g} to {END_LR:g}, batch {BATCH_SIZE}, {fraction:.0%} of the training set"
        f"{' (stopped early: diverged)' if result.diverged else ''}.\n\n"
        + markdown_table(["rule", "suggested lr"], [[rule, f"{lr:.3g}"] for rule, lr in suggestions.items()]
                         + [[rule, "too few points on the curve"] for rule in unusable])
    )
    return StudyOutput(files, summary)
