"""The paper's comparison figure per task (``logreg.png``, ``mlp.png``, ``cnn.png``).

Three stacked panels share the epoch axis: the learning rate (epoch mean; an inset shows every
iteration on a log axis), the training loss (mean minibatch loss per epoch; epoch 0 is the loss
on the training set before training) and the validation loss, for SGD, SGD-HD, SGDN, SGDN-HD,
Adam and Adam-HD at the paper's alpha_0 = 1e-3 and betas.
"""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt, ticker

from experiments.paper.common import format_value, label, layout_with_legend_below, log_axis, markdown_table
from experiments.core.methods import PAPER_METHODS
from experiments.core.workloads import WORKLOADS
from experiments.core.plotting import method_style, save_figure
from experiments.core.runs import ALPHA0, RunLog, RunSpec, StudyOutput, SuiteContext

TASK_NAMES = ("logreg", "mlp", "cnn")
PAPER_TRAIN_LOSS = {
    # Final-epoch training loss published with the reference code (10 epochs logreg, 100 mlp).
    "logreg": {"sgd": 0.396, "sgd_hd": 0.293, "sgdn": 0.289, "sgdn_hd": 0.261, "adam": 0.259, "adam_hd": 0.258},
    "mlp": {"sgd": 0.145, "sgd_hd": 0.081, "sgdn": 0.0065, "sgdn_hd": 0.0070},
}


def specs(context: SuiteContext, task: str) -> list[RunSpec]:
    """The six paper methods on ``task`` at alpha_0 = 1e-3 with the reference code's betas."""
    budget = context.budget.comparison[task]
    return [context.spec(task, method, budget, lr=ALPHA0, seed=context.budget.comparison_seed)
            for method in PAPER_METHODS]


def _beta_text(logs: list[RunLog]) -> str:
    betas = {format_value(log.spec.hypergrad_lr, 2): [] for log in logs if log.spec.hypergrad_lr is not None}
    for log in logs:
        if log.spec.hypergrad_lr is not None:
            betas[format_value(log.spec.hypergrad_lr, 2)].append(label(log.spec.method))
    return "; ".join(f"beta={beta} ({', '.join(names)})" for beta, names in betas.items())


def draw(task: str, logs: list[RunLog], budget_text: str):
    """The three-panel figure of one task."""
    fig, (ax_lr, ax_train, ax_valid) = plt.subplots(3, 1, figsize=(8, 9.5), sharex=True,
                                                     gridspec_kw={"height_ratios": [1.2, 1, 1]})
    positive_lrs = []
    for log in logs:
        style = method_style(log.spec.method).kwargs()
        epochs = log.epochs["epoch"]
        if log.diverged:
            style["label"] += " (diverged)"
        ax_lr.plot(epochs, log.epochs["lr"], marker=".", **style)
        ax_train.plot(epochs, log.epochs["train_loss"], **style)
        ax_valid.plot(epochs, log.epochs["valid_loss"], **style)
        positive_lrs += [v for v in log.epochs["lr"] if v > 0]
    # Leave the upper part of the lr panel empty for the per-iteration inset.
    low, high = min(positive_lrs), max(positive_lrs)
    span = max(high / low, 10.0)
    log_axis(ax_lr)
    ax_lr.set_ylim(low / span ** 0.1, high * span ** 0.9)
    ax_lr.set_ylabel("learning rate\n(epoch mean)")
    inset = ax_lr.inset_axes([0.5, 0.56, 0.48, 0.4])
    negative = []
    for log in logs:
        lr = log.iterations["lr"]
        inset.plot(log.iterations["iteration"], np.where(lr > 0, lr, np.nan), linewidth=0.8,
                   **{k: v for k, v in method_style(log.spec.method).kwargs().items() if k != "label"})
        if (lr <= 0).any():
            negative.append(label(log.spec.method))
    inset.set_yscale("log")
    inset.set_xlabel("iteration", fontsize=7, labelpad=1)
    inset.set_title("per iteration" + (f" ({', '.join(negative)} <= 0 at times: not shown)" if negative else ""),
                    fontsize=7, pad=2)
    inset.tick_params(labelsize=7)
    inset.patch.set_alpha(0.9)
    log_axis(ax_train)
    ax_train.set_ylabel("training loss\n(cross-entropy, nats)")
    log_axis(ax_valid)
    ax_valid.set_ylabel("validation loss\n(cross-entropy, nats)")
    ax_valid.set_xlabel("epoch")
    ax_valid.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    for ax in (ax_lr, ax_train, ax_valid):
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(f"{WORKLOADS[task].description}\n"
                 f"alpha_0={ALPHA0:g}, {_beta_text(logs)}\n"
                 f"{logs[0].spec.settings_text()}; {budget_text}", fontsize=10)
    layout_with_legend_below(fig, ax_train.get_lines(), ncol=3)
    return fig


def summary(task: str, logs: list[RunLog], budget_text: str, full: bool) -> str:
    paper = PAPER_TRAIN_LOSS.get(task, {})
    headers = ["method", "alpha_0", "beta", "final train loss", "final valid loss", "valid accuracy",
               "final lr", "iterations"]
    if paper:
        headers.append("paper's train loss" + ("" if full else " (full budget)"))
    rows = []
    for log in logs:
        row = [label(log.spec.method), format_value(log.spec.lr, 2), format_value(log.spec.hypergrad_lr, 2),
               format_value(log.final_train_loss), format_value(log.final_valid_loss),
               format_value(log.final_valid_accuracy), format_value(float(log.iterations["lr"][-1]), 3),
               str(int(log.result["iterations"]))]
        if paper:
            row.append(format_value(paper.get(log.spec.method)))
        rows.append(row)
    return f"### {task}.png: {WORKLOADS[task].description}\n\n{budget_text}.\n\n" + markdown_table(headers, rows)


def run(context: SuiteContext) -> StudyOutput:
    files, sections = [], ["## Comparison of the paper's methods (logreg.png, mlp.png, cnn.png)"]
    for task in TASK_NAMES:
        budget = context.budget.comparison[task]
        logs = context.get_all(specs(context, task), f"comparison {task}")
        budget_text = f"--{context.budget.name}: {budget.describe(task)}"
        fig = draw(task, logs, budget_text)
        files += save_figure(fig, context.out_dir / task, dpi=110)
        plt.close(fig)
        sections.append(summary(task, logs, budget_text, context.budget.name == "full"))
    return StudyOutput(files, "\n\n".join(sections))
