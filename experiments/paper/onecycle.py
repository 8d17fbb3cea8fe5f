"""Range test -> OneCycleLR, versus AdamHD started anywhere (``schedules.png``; ``--only schedules``).

The practice the range-test articles teach: run ``find_lr`` on the untrained model, read
``(min_lr, max_lr) = result.range()`` and train with ``OneCycleLR(max_lr=max_lr)``. The
alternative HD offers: start AdamHD at any ``alpha_0`` and let the rate adapt. Also measured:
cosine decay of AdamHD's ``hypergrad_lr`` to 0 over the run (the ``hypergrad_cosine`` schedule),
which freezes the adapted rate towards the end. On logreg, every run through the cache:

* SGD with Nesterov momentum 0.9 and Adam, each with its own range test (the lr_finder study's
  cached test), ``OneCycleLR`` peaking at ``range()[1]``;
* Adam at a fixed ``alpha_0``, AdamHD from the same ``alpha_0``, and AdamHD with the cosine-decayed
  ``hypergrad_lr``, for each ``alpha_0`` in :data:`ALPHAS`.
"""

from __future__ import annotations

from matplotlib import pyplot as plt

from experiments.core.plotting import save_figure
from experiments.paper.common import format_value, markdown_table
from experiments.paper.lr_range_test import range_test
from experiments.core.runs import RunLog, RunSpec, StudyOutput, SuiteContext, TaskBudget

TASK = "logreg"
ALPHAS = (1e-5, 1e-4, 1e-3, 1e-2)
RANGE_TESTS = {"sgdn": (1e-5, 10.0), "adam": (1e-7, 1.0)}
"""The one-cycle runs' methods, each with its range test's (start_lr, end_lr)."""


def specs(context: SuiteContext, budget: TaskBudget, peaks: dict[str, float]) -> list[RunSpec]:
    """One one-cycle run per range-tested method, then Adam / AdamHD / AdamHD with decayed beta per alpha_0."""
    planned = [context.spec(TASK, method, budget, lr=peak, schedule="onecycle") for method, peak in peaks.items()]
    for alpha in ALPHAS:
        planned += [context.spec(TASK, "adam", budget, lr=alpha), context.spec(TASK, "adam_hd", budget, lr=alpha),
                    context.spec(TASK, "adam_hd", budget, lr=alpha, schedule="hypergrad_cosine")]
    return planned


def describe(spec: RunSpec) -> str:
    """A run's name in the legend and the table."""
    if spec.schedule == "onecycle":
        return f"{spec.method}, OneCycleLR max_lr {spec.lr:.3g}"
    return f"{spec.method} from alpha_0 {spec.lr:g}" + (", cosine-decayed beta" if spec.schedule else "")


def _style(spec: RunSpec) -> dict:
    """One-cycle dash-dotted (SGDN black, Adam grey); Adam dashed, AdamHD solid, one colour per alpha_0,
    AdamHD with decayed beta dotted."""
    if spec.schedule == "onecycle":
        return {"color": "k" if spec.method == "sgdn" else "0.55", "linestyle": "-."}
    linestyle = ":" if spec.schedule else ("-" if spec.method == "adam_hd" else "--")
    return {"color": f"C{ALPHAS.index(spec.lr)}", "linestyle": linestyle}


def draw(logs: list[RunLog], title: str):
    """Training loss per epoch and lr per iteration; the third panel sets AdamHD's constant beta
    against the cosine-decayed one."""
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for log in logs:
        style = {**_style(log.spec), "label": describe(log.spec)}
        if log.spec.schedule != "hypergrad_cosine":
            axes[0].plot(log.epochs["epoch"][1:], log.epochs["train_loss"][1:], **style)
            axes[1].plot(log.iterations["iteration"], log.iterations["lr"], **style)
        if log.spec.method == "adam_hd":
            axes[2].plot(log.iterations["iteration"], log.iterations["lr"], **style)
    axes[0].set(xlabel="epoch", ylabel="training loss (epoch mean of minibatch losses)", yscale="log",
                title="training loss")
    axes[1].set(xlabel="iteration", ylabel="learning rate", yscale="log",
                title="learning rate: Adam fixed, AdamHD adapting, one-cycle")
    axes[2].set(xlabel="iteration", ylabel="learning rate", yscale="log",
                title="AdamHD: constant beta (solid) vs cosine-decayed beta (dotted)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.36, 0.0), ncol=5, fontsize=8)
    axes[2].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def run(context: SuiteContext) -> StudyOutput:
    budget = context.budget.schedules
    peaks = {method: range_test(context, TASK, method, *lrs).range()[1] for method, lrs in RANGE_TESTS.items()}
    logs = context.get_all(specs(context, budget, peaks), "schedules")
    beta = next(log.spec.hypergrad_lr for log in logs if log.spec.method == "adam_hd")
    settings = f"{budget.describe(TASK)}, {logs[0].spec.settings_text()}, Adam-HD beta {beta:g}"
    fig = draw(logs, f"--{context.budget.name}: {settings}")
    files = list(save_figure(fig, context.out_dir / "schedules"))
    plt.close(fig)
    rows = [[describe(log.spec), log.result["status"], format_value(log.final_train_loss),
             format_value(log.final_valid_loss), format_value(log.final_valid_accuracy),
             format_value(float(log.iterations["lr"][-1]), 3)] for log in logs]
    summary = (
        "## Range test and one-cycle vs AdamHD from any alpha_0 (schedules.png)\n\n"
        f"{settings}; one-cycle peaks: the range test's `range()[1]` "
        f"({', '.join(f'{method} {peak:.3g}' for method, peak in peaks.items())}).\n\n"
        + markdown_table(["run", "status", "final train loss", "valid loss", "valid accuracy", "final lr"], rows)
    )
    return StudyOutput(files, summary)
