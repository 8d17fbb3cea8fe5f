"""Range test -> OneCycleLR, versus AdamHD started anywhere.

The practice the range-test articles teach: run ``find_lr`` on the untrained model, read
``(min_lr, max_lr) = result.range()`` and train with ``OneCycleLR(max_lr=max_lr)``. The
alternative HD offers: start AdamHD at any ``alpha_0`` and let the rate adapt. Also measured:
cosine decay of AdamHD's ``hypergrad_lr`` to 0 over the run (``LambdaHypergradLR``), which
freezes the adapted rate towards the end.

Runs (paper settings: batch 128, weight decay 1e-4, the reference Adam-HD beta for the task):

* ``sgdn_onecycle``, ``adam_onecycle``: SGD with Nesterov momentum 0.9 / Adam, each with its own
  range test, ``OneCycleLR(max_lr=range()[1])`` stepped every iteration;
* ``adam_a{alpha_0}``: Adam at a fixed ``alpha_0`` for each ``alpha_0`` in ``ALPHAS``;
* ``adam_hd_a{alpha_0}``: AdamHD from the same ``alpha_0``;
* ``adam_hd_cos_a{alpha_0}``: the same with ``hypergrad_lr`` decayed by a cosine to 0.

Run ``python -m experiments.schedules_demo --task logreg --epochs 10 --out results/schedules``.
Every run goes through ``experiments.runner.run_method`` (its CSVs land in ``OUT/runs/NAME``);
this script adds ``range_test.png``, ``schedules.png``, ``schedules.md`` and ``schedules.csv``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.optim.lr_scheduler import OneCycleLR  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from experiments.plotting import save_figure  # noqa: E402
from experiments.methods import MethodSettings, build_optimizer  # noqa: E402
from experiments.models import TASKS, build_model  # noqa: E402
from experiments.runner import RunConfig, dataset_for, run_method, write_csv, write_text  # noqa: E402
from hypergrad.lr_finder import LRFinderResult, find_lr  # noqa: E402
from hypergrad.schedulers import LambdaHypergradLR  # noqa: E402

ALPHAS = (1e-5, 1e-4, 1e-3, 1e-2)
RANGE_TESTS = {"sgdn": (1e-5, 10.0), "adam": (1e-7, 1.0)}  # (start_lr, end_lr)
RANGE_TEST_ITERATIONS = 100


def one_cycle(optimizer, iterations_per_epoch: int, total_iterations: int, *, max_lr: float) -> OneCycleLR:
    """``OneCycleLR`` over the whole run (torch's defaults: 30% warm-up, cosine, div 25).

    The runner steps the scheduler after every optimizer step, the last one included, so the
    schedule gets one point more than there are steps (else that last call runs past its end).
    """
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_iterations + 1)


def cosine_hypergrad_decay(optimizer, iterations_per_epoch: int, total_iterations: int) -> LambdaHypergradLR:
    """``hypergrad_lr`` from its initial value to 0 along a half cosine over the run."""
    return LambdaHypergradLR(
        optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total_iterations) / total_iterations))
    )


def range_test(config: RunConfig, method: str) -> LRFinderResult:
    """``find_lr`` for ``method`` on the untrained model, with the training data and settings."""
    splits = dataset_for(config)
    torch.manual_seed(config.seed)
    model = build_model(config.task, splits.num_classes)
    settings = MethodSettings(config.lr, None, config.weight_decay, False)
    optimizer = build_optimizer(method, model.parameters(), settings)
    loader = DataLoader(TensorDataset(splits.train_x, splits.train_y), batch_size=config.batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(config.seed))
    start_lr, end_lr = RANGE_TESTS[method]
    return find_lr(model, optimizer, F.cross_entropy, loader, start_lr=start_lr, end_lr=end_lr,
                   num_iter=RANGE_TEST_ITERATIONS)


def read_csv(path: str) -> dict[str, list[float]]:
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.schedules_demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="logreg")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="results/schedules")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished runs in OUT/runs (and continue interrupted ones)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = RunConfig(task=args.task, epochs=args.epochs, train_fraction=args.train_fraction, seed=args.seed,
                       device="cpu")

    # 1. Range tests -> OneCycleLR's max_lr.
    fig, axes = plt.subplots(1, len(RANGE_TESTS), figsize=(12, 4))
    max_lrs = {}
    for ax, method in zip(axes, RANGE_TESTS, strict=True):
        result = range_test(config, method)
        _, max_lrs[method] = result.range()
        print(f"range test {method}: " + ", ".join(f"{k} {v:.3g}" for k, v in result.suggestions().items())
              + f"; range() max_lr {max_lrs[method]:.3g}" + (" (stopped: diverged)" if result.diverged else ""))
        result.plot(ax, suggestions=("valley", "slide", "minimum", "steep"))
        ax.set_ylabel("training loss (cross-entropy, smoothed)")
        ax.set_title(f"Range test: {method} on {args.task}, {RANGE_TEST_ITERATIONS} steps, batch {config.batch_size}")
    fig.tight_layout()
    save_figure(fig, out / "range_test")
    plt.close(fig)

    # 2. Training runs, all through the shared runner.
    runs = {}  # name -> (description, MethodResult)
    for method, max_lr in max_lrs.items():
        name = f"{method}_onecycle"
        factory = functools.partial(one_cycle, max_lr=max_lr)
        runs[name] = (f"{method}, OneCycleLR max_lr {max_lr:.3g}",
                      run_method(config, method, out / "runs" / name, resume=args.resume, lr=max_lr,
                                 lr_scheduler=factory))
    for alpha in ALPHAS:
        for name, method, factory in (
            (f"adam_a{alpha:g}", "adam", None),
            (f"adam_hd_a{alpha:g}", "adam_hd", None),
            (f"adam_hd_cos_a{alpha:g}", "adam_hd", cosine_hypergrad_decay),
        ):
            runs[name] = (f"{method} from alpha_0 {alpha:g}" + (", cosine-decayed beta" if factory else ""),
                          run_method(config, method, out / "runs" / name, resume=args.resume, lr=alpha,
                                     lr_scheduler=factory))
    for name, (_, result) in runs.items():
        print(f"{name:<22} {result.status:<9} train loss {result.final_train_loss:.4f}  valid acc "
              f"{result.final_valid_accuracy:.4f}  final lr {result.final_lr:.3g}")

    rows = [[name, description, r.status, r.final_train_loss, r.final_valid_loss, r.final_valid_accuracy, r.final_lr]
            for name, (description, r) in runs.items()]
    write_csv(out / "schedules.csv", ["run", "description", "status", "final_train_loss", "final_valid_loss",
                                      "final_valid_accuracy", "final_lr"], rows)
    lines = [f"{TASKS[args.task].description}, {args.epochs} epochs, batch {config.batch_size}, weight decay "
             f"{config.weight_decay:g}, seed {args.seed}, train fraction {args.train_fraction:g}.", "",
             "| run | final train loss | valid loss | valid accuracy | final lr |", "|---|---|---|---|---|"]
    lines += [f"| {description} | {r.final_train_loss:.4f} | {r.final_valid_loss:.4f} | {r.final_valid_accuracy:.4f} "
              f"| {r.final_lr:.3g} |" for description, r in runs.values()]
    table = "\n".join(lines) + "\n"
    write_text(out / "schedules.md", table)
    print(table)

    # 3. Figure: loss per epoch and lr per iteration; Adam dashed, AdamHD solid, same colour per alpha_0.
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for name, (description, result) in runs.items():
        if name.startswith("adam_hd_cos"):
            continue
        if name.endswith("onecycle"):
            colour, style = ("k" if name.startswith("sgdn") else "0.55"), "-."
        else:
            alpha = float(name.rsplit("_a", 1)[1])
            colour, style = f"C{ALPHAS.index(alpha)}", "-" if "_hd" in name else "--"
        epochs = read_csv(result.epochs_csv)
        iterations = read_csv(result.iterations_csv)
        axes[0].plot(epochs["epoch"][1:], epochs["train_loss"][1:], color=colour, linestyle=style, label=description)
        axes[1].plot(iterations["iteration"], iterations["lr"], color=colour, linestyle=style, label=description)
    for alpha in ALPHAS:
        colour = f"C{ALPHAS.index(alpha)}"
        for name, style in ((f"adam_hd_a{alpha:g}", "-"), (f"adam_hd_cos_a{alpha:g}", ":")):
            description, result = runs[name]
            iterations = read_csv(result.iterations_csv)
            axes[2].plot(iterations["iteration"], iterations["lr"], color=colour, linestyle=style, label=description)
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
    fig.suptitle(f"{TASKS[args.task].description}: {args.epochs} epochs on {args.train_fraction:.0%} of the training "
                 f"set, batch {config.batch_size}, weight decay {config.weight_decay:g}, Adam-HD beta "
                 f"{runs[f'adam_hd_a{ALPHAS[0]:g}'][1].hypergrad_lr:g}, seed {args.seed}")
    fig.tight_layout()
    save_figure(fig, out / "schedules")
    plt.close(fig)
    print(f"wrote {out}/range_test.png, schedules.png, schedules.md, schedules.csv")


if __name__ == "__main__":
    main()
