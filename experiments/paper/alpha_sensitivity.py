"""Sensitivity to the initial learning rate (``sensitivity.png``), as in the paper.

Final training loss against alpha_0 from 1e-6 to 1e-1 for SGD vs SGD-HD and Adam vs Adam-HD on
logreg and mlp, with beta = 1e-4 for both HD methods (the paper's setting for this study).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import pyplot as plt

from experiments.paper.common import format_value, label, layout_with_legend_below, log_axis, markdown_table
from experiments.core.workloads import WORKLOADS
from experiments.core.plotting import method_style, save_figure
from experiments.core.runs import RunLog, RunSpec, StudyOutput, SuiteContext

TASK_NAMES = ("logreg", "mlp")
METHOD_NAMES = ("sgd", "sgd_hd", "adam", "adam_hd")
ALPHA0S = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
BETA = 1e-4


def specs(context: SuiteContext, task: str) -> list[RunSpec]:
    budget = context.budget.sensitivity[task]
    return [context.spec(task, method, budget, lr=alpha0, hypergrad_lr=BETA)
            for method in METHOD_NAMES for alpha0 in ALPHA0S]


def final_losses(logs: list[RunLog], method: str) -> np.ndarray:
    """Final training loss per alpha_0 (NaN where the run diverged)."""
    by_alpha = {log.spec.lr: log.final_train_loss for log in logs if log.spec.method == method}
    return np.array([by_alpha[alpha0] for alpha0 in ALPHA0S])


def run(context: SuiteContext) -> StudyOutput:
    fig, axes = plt.subplots(1, len(TASK_NAMES), figsize=(11, 4.2), squeeze=False)
    settings = specs(context, TASK_NAMES[0])[0].settings_text()
    sections = ["## Sensitivity to the initial learning rate (sensitivity.png)",
                f"Final training loss; beta = {BETA:g} for SGD-HD and Adam-HD; {settings}."]
    for ax, task in zip(axes[0], TASK_NAMES):
        logs = context.get_all(specs(context, task), f"sensitivity {task}")
        budget = context.budget.sensitivity[task]
        rows = []
        finite = []
        for method in METHOD_NAMES:
            losses = final_losses(logs, method)
            ax.plot(ALPHA0S, losses, marker="o", **method_style(method).kwargs())
            finite += [v for v in losses if math.isfinite(v)]
            rows.append([label(method)] + [format_value(v) for v in losses])
        top = max(finite) * 1.5 if finite else 10.0
        for method in METHOD_NAMES:  # diverged runs: a cross on the top edge
            losses = final_losses(logs, method)
            diverged = [a for a, v in zip(ALPHA0S, losses) if not math.isfinite(v)]
            if diverged:
                ax.plot(diverged, [top] * len(diverged), marker="x", linestyle="none", markersize=9,
                        color=method_style(method).color)
        ax.set_xscale("log")
        log_axis(ax)
        ax.set_ylim(top=top * 1.2)
        ax.set_xlabel("initial learning rate alpha_0")
        ax.set_ylabel("final training loss (cross-entropy, nats)")
        ax.set_title(f"{WORKLOADS[task].description}\n{budget.describe(task)}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        sections.append(f"### {task} ({budget.describe(task)})\n\n"
                        + markdown_table(["method"] + [f"alpha_0={a:g}" for a in ALPHA0S], rows))
    fig.suptitle(f"Final training loss vs initial learning rate (beta={BETA:g} for the HD methods; "
                 f"x on the top edge = diverged); --{context.budget.name}", fontsize=10)
    layout_with_legend_below(fig, axes[0, 0].get_lines()[:len(METHOD_NAMES)], ncol=4)
    files = list(save_figure(fig, context.out_dir / "sensitivity", dpi=110))
    plt.close(fig)
    return StudyOutput(files, "\n\n".join(sections))
