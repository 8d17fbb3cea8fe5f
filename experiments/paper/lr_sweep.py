"""What too-high, too-low and good learning rates look like (``lr_sweep.png``).

Plain SGD on a one-layer network (logistic regression, 784 -> 10) on MNIST with several fixed
learning rates. Left: cross-entropy; right: classification error; training curves solid (the
whole training set evaluated after each epoch), validation curves dashed.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import pyplot as plt, ticker
from matplotlib.lines import Line2D

from experiments.paper.common import format_value, layout_with_legend_below, log_axis, markdown_table
from experiments.core.workloads import WORKLOADS
from experiments.core.plotting import save_figure
from experiments.core.runs import RunLog, RunSpec, StudyOutput, SuiteContext

TASK = "logreg"
METHOD = "sgd"
LEARNING_RATES = (1.0, 0.5, 0.2, 0.1, 0.01)


def specs(context: SuiteContext) -> list[RunSpec]:
    budget = context.budget.lr_sweep
    return [context.spec(TASK, METHOD, budget, lr=lr, train_metrics=True) for lr in LEARNING_RATES]


def _curves(log: RunLog) -> dict[str, np.ndarray]:
    """Per-epoch training/validation loss and error (%), up to where the run diverged."""
    metrics = log.train_metrics
    return {
        "epoch": log.epochs["epoch"], "valid_loss": log.epochs["valid_loss"],
        "valid_error": 100 * (1 - log.epochs["valid_accuracy"]),
        "train_epoch": metrics["epoch"], "train_loss": metrics["train_loss"],
        "train_error": 100 * (1 - metrics["train_accuracy"]),
    }


def run(context: SuiteContext) -> StudyOutput:
    logs = context.get_all(specs(context), "lr_sweep")
    budget = context.budget.lr_sweep
    colours = plt.get_cmap("plasma")(np.linspace(0.0, 0.85, len(LEARNING_RATES)))
    fig, (ax_loss, ax_error) = plt.subplots(1, 2, figsize=(12, 4.6))
    rows = []
    for log, colour in zip(logs, colours):
        curves = _curves(log)
        name = f"lr = {log.spec.lr:g}" + (" (diverged)" if log.diverged else "")
        for ax, quantity in ((ax_loss, "loss"), (ax_error, "error")):
            ax.plot(curves["train_epoch"], curves[f"train_{quantity}"], color=colour, marker=".", label=name)
            ax.plot(curves["epoch"], curves[f"valid_{quantity}"], color=colour, linestyle="--", marker=".")
        rows.append([format_value(log.spec.lr, 2), format_value(float(curves["train_loss"][-1])),
                     format_value(float(curves["valid_loss"][-1])), f"{curves['train_error'][-1]:.2f}",
                     f"{curves['valid_error'][-1]:.2f}", "diverged" if log.diverged else "completed"])
    log_axis(ax_loss)
    ax_loss.set_ylabel("cross-entropy (nats)")
    ax_loss.set_title("loss", fontsize=10)
    log_axis(ax_error)
    ax_error.set_ylabel("classification error (%)")
    ax_error.set_title("error", fontsize=10)
    for ax in (ax_loss, ax_error):
        ax.set_xlabel("epoch (0 = before training)")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(True, which="major", alpha=0.3)
    handles = ax_loss.get_lines()[::2] + [
        Line2D([], [], color="grey", label="training set"),
        Line2D([], [], color="grey", linestyle="--", label="validation set"),
    ]
    best = min((log for log in logs if not log.diverged and math.isfinite(log.final_valid_loss)),
               key=lambda log: log.final_valid_loss, default=None)
    fig.suptitle(f"Fixed learning rates, plain SGD: {WORKLOADS[TASK].description}, "
                 f"{logs[0].spec.settings_text()}; --{context.budget.name}: {budget.describe(TASK)}"
                 + (f"\nlowest final validation loss: lr = {best.spec.lr:g}" if best else ""), fontsize=10)
    layout_with_legend_below(fig, handles, ncol=len(handles))
    files = list(save_figure(fig, context.out_dir / "lr_sweep", dpi=110))
    plt.close(fig)
    summary = (
        "## Fixed learning rates (lr_sweep.png)\n\n"
        f"Plain SGD, {WORKLOADS[TASK].description}; {budget.describe(TASK)}, {logs[0].spec.settings_text()}. "
        "Training columns: the whole training set evaluated after the last epoch.\n\n"
        + markdown_table(["lr", "train loss", "valid loss", "train error %", "valid error %", "status"], rows)
        + (f"\n\nBest fixed lr (lowest final validation loss): **{best.spec.lr:g}**." if best else "")
    )
    return StudyOutput(files, summary)
