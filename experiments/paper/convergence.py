"""Iterations to reach a training-loss threshold over alpha_0 x beta (``convergence.png``).

Logistic regression on MNIST, as the paper's convergence study. "Converged at iteration i" means
the mean of the minibatch losses of iterations i-19..i (a trailing 20-iteration mean, which
removes most minibatch noise without lagging much) is below :data:`THRESHOLD` for the first time.
The beta = 0 column is the base method itself (SGD for SGD-HD, Adam for Adam-HD).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colors, pyplot as plt, ticker

from experiments.paper.common import markdown_table, trailing_mean
from experiments.core.workloads import WORKLOADS
from experiments.core.plotting import save_figure
from experiments.core.runs import RunLog, RunSpec, StudyOutput, SuiteContext

TASK = "logreg"
HD_METHODS = {"sgd_hd": "sgd", "adam_hd": "adam"}
ALPHA0S = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
BETAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
THRESHOLD = 0.4
"""Training-loss threshold (nats): reached in one epoch by well-tuned SGD on this task, far from
the initial 2.3, and above the loss plateau of every converging configuration."""
WINDOW = 20


def specs(context: SuiteContext) -> list[RunSpec]:
    budget = context.budget.convergence
    planned = []
    for hd_method, base in HD_METHODS.items():
        for alpha0 in ALPHA0S:
            planned.append(context.spec(TASK, base, budget, lr=alpha0))
            planned += [context.spec(TASK, hd_method, budget, lr=alpha0, hypergrad_lr=beta) for beta in BETAS]
    return planned


def iterations_to_threshold(log: RunLog) -> int | None:
    """First iteration whose trailing mean minibatch loss is below the threshold, or None."""
    smoothed = trailing_mean(log.iterations["loss"], WINDOW)
    below = np.flatnonzero(np.nan_to_num(smoothed, nan=math.inf) < THRESHOLD)
    below = below[below >= WINDOW - 1]  # a full window
    return int(log.iterations["iteration"][below[0]]) if len(below) else None


def grid(logs: list[RunLog], hd_method: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, diverged) of shape (len(ALPHA0S), 1 + len(BETAS)); NaN iterations = not reached."""
    by_key = {(log.spec.method, log.spec.lr, log.spec.hypergrad_lr): log for log in logs}
    iterations = np.full((len(ALPHA0S), 1 + len(BETAS)), np.nan)
    diverged = np.zeros_like(iterations, dtype=bool)
    for i, alpha0 in enumerate(ALPHA0S):
        cells = [by_key[(HD_METHODS[hd_method], alpha0, None)]] + [by_key[(hd_method, alpha0, b)] for b in BETAS]
        for j, log in enumerate(cells):
            reached = iterations_to_threshold(log)
            iterations[i, j] = np.nan if reached is None else reached
            diverged[i, j] = log.diverged and reached is None
    return iterations, diverged


def run(context: SuiteContext) -> StudyOutput:
    logs = context.get_all(specs(context), "convergence")
    budget = context.budget.convergence
    total = int(max(log.result["iterations"] for log in logs))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), layout="constrained")
    norm = colors.LogNorm(vmin=WINDOW, vmax=max(total, WINDOW + 1))
    column_labels = ["0\n(base)"] + [f"{b:.0e}".replace("e-0", "e-") for b in BETAS]
    sections = ["## Iterations to reach the training-loss threshold (convergence.png)",
                f"{WORKLOADS[TASK].description}; {budget.describe(TASK)} ({total} iterations, {logs[0].spec.settings_text()}). "
                f"Converged = trailing {WINDOW}-iteration mean minibatch loss < {THRESHOLD} nats; "
                f"'-' = not reached in {total} iterations, 'div' = diverged."]
    for ax, hd_method in zip(axes, HD_METHODS):
        iterations, diverged = grid(logs, hd_method)
        image = ax.imshow(np.ma.masked_invalid(iterations), cmap="viridis", norm=norm, aspect="auto")
        ax.set_facecolor("#dddddd")
        for i in range(len(ALPHA0S)):
            for j in range(1 + len(BETAS)):
                value = iterations[i, j]
                text = "div" if diverged[i, j] else ("-" if math.isnan(value) else f"{int(value)}")
                shade = "black" if math.isnan(value) or norm(value) > 0.6 else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=shade)
        ax.axvline(0.5, color="white", linewidth=3)
        ax.set_xticks(range(1 + len(BETAS)), column_labels, fontsize=8)
        ax.set_yticks(range(len(ALPHA0S)), [f"{a:g}" for a in ALPHA0S])
        ax.set_xlabel("hypergradient learning rate beta")
        ax.set_ylabel("initial learning rate alpha_0")
        base = HD_METHODS[hd_method]
        ax.set_title(f"{hd_method.replace('_hd', '').upper().replace('ADAM', 'Adam')}-HD "
                     f"(beta = 0 column: {base.upper().replace('ADAM', 'Adam')})", fontsize=10)
        rows = [[f"{alpha0:g}"] + [("div" if diverged[i, j] else "-") if math.isnan(iterations[i, j])
                                   else str(int(iterations[i, j])) for j in range(1 + len(BETAS))]
                for i, alpha0 in enumerate(ALPHA0S)]
        sections.append(f"### {hd_method} (beta = 0: {base})\n\n"
                        + markdown_table(["alpha_0 \\ beta", "0 (base)"] + [f"{b:g}" for b in BETAS], rows))
    colorbar = fig.colorbar(image, ax=axes, label="iterations to threshold (log scale)", fraction=0.03)
    colorbar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    colorbar.ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
        lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else ""))
    fig.suptitle(f"Iterations until the trailing {WINDOW}-iteration mean training loss < {THRESHOLD} nats; "
                 f"{WORKLOADS[TASK].description}, {budget.describe(TASK)} = {total} iterations, --{context.budget.name}\n"
                 f"grey '-' = not reached within the budget, 'div' = diverged", fontsize=10)
    files = list(save_figure(fig, context.out_dir / "convergence", dpi=110))
    plt.close(fig)
    return StudyOutput(files, "\n\n".join(sections))
