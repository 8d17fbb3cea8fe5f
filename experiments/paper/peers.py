"""HD methods against learning-rate-free peers and tuned schedules (``peers.png``).

On logreg, mlp and cnn, several seeds each:

* HD: SGDN-HD and Adam-HD at the paper's alpha_0 = 1e-3 and betas (no tuning).
* Learning-rate-free peers at their packages' defaults: Prodigy, D-Adaptation Adam,
  Schedule-Free AdamW, DoG.
* Tuned schedules of SGD with Nesterov momentum 0.9: step decay, exponential decay, cosine and
  one-cycle, each starting from (one-cycle: peaking at) the learning rate that the LR range test
  on the same task suggests (fastai's "valley" rule) - what a practitioner would do.

Top row: final validation loss as bars (mean over seeds; error bars span min to max; dots are
the seeds). Bottom row: validation loss per epoch (mean over seeds).
"""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt, ticker
from matplotlib.lines import Line2D

from experiments.paper.common import format_value, label, layout_with_legend_below, log_axis, markdown_table
from experiments.core.workloads import WORKLOADS
from experiments.core.plotting import method_style, save_figure
from experiments.core.schedules import LR_SCHEDULES
from experiments.core.runs import ALPHA0, RunLog, RunSpec, StudyOutput, SuiteContext
from experiments.paper.lr_range_test import range_test

TASK_NAMES = ("logreg", "mlp", "cnn")
HD_METHODS = ("sgdn_hd", "adam_hd")
PEERS = ("prodigy", "dadapt_adam", "schedulefree_adamw", "dog")
SCHEDULE_BASE = "sgdn"
SCHEDULE_MARKERS = {"step": "s", "exp": "^", "cosine": "o", "onecycle": "D"}
SUGGESTION_RULE = "valley"


def specs(context: SuiteContext, task: str, schedule_lr: float | None) -> list[RunSpec]:
    budget = context.budget.peers[task]
    planned = []
    for seed in context.budget.peer_seeds:
        planned += [context.spec(task, method, budget, lr=ALPHA0, seed=seed) for method in HD_METHODS + PEERS]
        if schedule_lr is not None:
            planned += [context.spec(task, SCHEDULE_BASE, budget, lr=schedule_lr, seed=seed, schedule=schedule)
                        for schedule in LR_SCHEDULES]
    return planned


def _style(name: str) -> dict:
    style = method_style(name).kwargs()
    schedule = name.removeprefix(SCHEDULE_BASE + "_")
    if schedule in SCHEDULE_MARKERS:
        style["marker"] = SCHEDULE_MARKERS[schedule]
        style["markersize"] = 4
    return style


def _by_label(logs: list[RunLog]) -> dict[str, list[RunLog]]:
    grouped: dict[str, list[RunLog]] = {}
    for log in logs:
        grouped.setdefault(log.spec.label, []).append(log)
    return grouped


def _draw_task(ax_bars, ax_curves, task: str, grouped: dict[str, list[RunLog]]) -> None:
    names = list(grouped)
    for position, name in enumerate(names):
        finals = np.array([log.final_valid_loss for log in grouped[name]])
        style = method_style(name)
        finite = finals[np.isfinite(finals)]
        if len(finite):
            mean = finite.mean()
            ax_bars.bar(position, mean, color=style.color, alpha=0.85 if name.endswith("_hd") else 0.45,
                        hatch="//" if name.startswith(SCHEDULE_BASE + "_") and not name.endswith("_hd") else None,
                        edgecolor=style.color, yerr=[[mean - finite.min()], [finite.max() - mean]], capsize=3)
            ax_bars.plot([position] * len(finite), finite, "k.", markersize=4)
        if len(finite) < len(finals):
            ax_bars.annotate("div" if not len(finite) else f"{len(finals) - len(finite)} div", (position, 0),
                             xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=7, color="red")
        completed = [log for log in grouped[name] if not log.diverged]
        if completed:
            length = min(len(log.epochs["epoch"]) for log in completed)
            mean_curve = np.mean([log.epochs["valid_loss"][:length] for log in completed], axis=0)
            ax_curves.plot(completed[0].epochs["epoch"][:length], mean_curve, **_style(name))
    ax_bars.set_xticks(range(len(names)), [label(name) for name in names], rotation=60, ha="right", fontsize=7)
    ax_bars.set_ylim(bottom=0)
    ax_bars.set_ylabel("final validation loss (nats)")
    ax_bars.set_title(WORKLOADS[task].description, fontsize=9)
    ax_bars.grid(True, axis="y", which="major", alpha=0.3)
    log_axis(ax_curves)
    ax_curves.set_xlabel("epoch")
    ax_curves.set_ylabel("validation loss (nats), seed mean")
    ax_curves.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax_curves.grid(True, which="major", alpha=0.3)


def run(context: SuiteContext) -> StudyOutput:
    budget = context.budget
    seeds = budget.peer_seeds
    fig, axes = plt.subplots(2, len(TASK_NAMES), figsize=(15, 9), gridspec_kw={"height_ratios": [1.1, 1]},
                             squeeze=False)
    sections = ["## HD against learning-rate-free peers and tuned schedules (peers.png)",
                f"Final validation loss over seeds {', '.join(map(str, seeds))}: mean [min, max]. "
                f"HD methods at alpha_0 = {ALPHA0:g} with the paper's betas; peers at their packages' defaults; "
                f"schedules: SGD with Nesterov momentum 0.9 from the LR range test's '{SUGGESTION_RULE}' learning rate "
                "(step: /10 at 50% and 75% of the run; exp: to 1% at the end; cosine to 0; one-cycle peaking there)."]
    schedule_lrs = {}
    for column, task in enumerate(TASK_NAMES):
        schedule_lr = range_test(context, task).suggest(SUGGESTION_RULE)
        schedule_lrs[task] = schedule_lr
        logs = context.get_all(specs(context, task, schedule_lr), f"peers {task}")
        grouped = _by_label(logs)
        _draw_task(axes[0, column], axes[1, column], task, grouped)
        rows = []
        for name, runs in grouped.items():
            valid = np.array([log.final_valid_loss for log in runs])
            train = np.array([log.final_train_loss for log in runs])
            accuracy = np.array([log.final_valid_accuracy for log in runs])
            finite = valid[np.isfinite(valid)]
            spread = f"[{format_value(finite.min())}, {format_value(finite.max())}]" if len(finite) else ""
            lr = format_value(runs[0].spec.lr, 3) if runs[0].spec.schedule or name in HD_METHODS else "own"
            rows.append([label(name), lr, f"{format_value(np.nanmean(valid)) if len(finite) else 'diverged'} {spread}",
                         format_value(float(np.nanmean(train))) if len(finite) else "diverged",
                         format_value(float(np.nanmean(accuracy))) if len(finite) else "-",
                         f"{len(runs) - len(finite)}/{len(runs)}"])
        sections.append(
            f"### {task} ({budget.peers[task].describe(task)})\n\n"
            + (f"LR range test suggestion ('{SUGGESTION_RULE}'): {schedule_lr:.3g}.\n\n" if schedule_lr else "")
            + markdown_table(["method", "lr (alpha_0 / peak)", "valid loss mean [min, max]", "train loss mean",
                              "valid accuracy mean", "diverged"], rows))
    handles = [Line2D([], [], **_style(name)) for name in grouped]
    fig.suptitle(
        f"HD methods vs learning-rate-free peers vs tuned schedules; --{budget.name}: "
        + "; ".join(budget.peers[task].describe(task) for task in TASK_NAMES)
        + f"\nbars: mean final validation loss over seeds {', '.join(map(str, seeds))}, error bars min..max, dots = seeds"
        + "\nschedules start at the LR range test's (conservative) 'valley' suggestion, not grid-tuned ("
        + ", ".join(f"{task} {lr:.2g}" for task, lr in schedule_lrs.items() if lr) + ")", fontsize=10)
    layout_with_legend_below(fig, handles, ncol=5)
    files = list(save_figure(fig, context.out_dir / "peers", dpi=100))
    plt.close(fig)
    return StudyOutput(files, "\n\n".join(sections))
