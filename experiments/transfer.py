"""Transfer learning with discriminative (layer-wise) learning rates, with and without HD.

Pretrain the paper's MLP (784-1000-1000, ReLU) on MNIST digits 0-4, replace its head by a fresh
1000 -> 5 layer, and fine-tune on a small labelled set of digits 5-9 (``PER_CLASS`` images per
class). The fine-tuning rate ``lr`` is the range test's ``"valley"`` suggestion for Adam on the
model with its new head (``hypergrad.find_lr``). Variants, all Adam-based:

* ``adam``: one rate, ``lr``, for every layer.
* ``adam_layerwise``: discriminative rates, fastai's ``slice(lr/100, lr)``: the hidden layers at
  ``lr/100`` and ``lr/10``, the new head at ``lr`` (``layerwise_param_groups(..., lr_range=(lr/100,
  lr/10), head=..., head_lr_mult=10)``).
* ``adam_hd_layerwise``: AdamHD from the same per-group rates; each group adapts its own.
* ``adam_hd``: AdamHD from one rate ``lr`` in every group: does HD find layer-wise rates itself?
* ``scratch``: Adam at ``lr`` from random weights: what the pretraining is worth.

Run ``python -m experiments.transfer --out results/transfer``. Writes (atomically) ``transfer.csv``
(per variant and seed: final test accuracy, lr), ``transfer_curves.csv`` (test accuracy per
epoch), ``transfer_lrs.csv`` (per-group lr after every step of the HD variants), ``transfer.md``
(the table) and ``transfer.png`` (``--plot-only`` redraws it from the CSVs). The pretrained
weights are cached in ``pretrained.pt``.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from experiments.data import load_dataset  # noqa: E402
from experiments.plotting import save_figure  # noqa: E402
from experiments.models import build_model  # noqa: E402
from experiments.runner import evaluate, write_csv, write_text  # noqa: E402
from hypergrad import AdamHD  # noqa: E402
from hypergrad.lr_finder import find_lr  # noqa: E402
from hypergrad.param_groups import layerwise_param_groups  # noqa: E402

# ----------------------------------------------------------------------------- configuration
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
FINETUNE_CLASSES = (5, 6, 7, 8, 9)
PRETRAIN_EPOCHS = 1
PRETRAIN_LR = 1e-3  # Adam
PRETRAIN_BATCH = 128
PER_CLASS = 100  # labelled fine-tuning images per new class
FINETUNE_EPOCHS = 10
FINETUNE_BATCH = 32
HYPERGRAD_LR = 1e-7  # the reference code's Adam-HD beta for this MLP on MNIST
SEEDS = (0, 1, 2)
HEAD = "5"  # build_model("mlp") is Sequential(Flatten, Linear, ReLU, Linear, ReLU, Linear)
VARIANTS = ("adam", "adam_hd", "adam_layerwise", "adam_hd_layerwise", "scratch")
STYLE = {  # HD solid, its base dashed in the same colour
    "adam": ("C0", "--"), "adam_hd": ("C0", "-"),
    "adam_layerwise": ("C1", "--"), "adam_hd_layerwise": ("C1", "-"),
    "scratch": ("0.5", ":"),
}


def subset(x: torch.Tensor, y: torch.Tensor, classes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``classes``, labels renumbered 0..len(classes)-1."""
    keep = torch.isin(y, torch.tensor(classes))
    relabel = torch.full((10,), -1, dtype=torch.long)
    relabel[list(classes)] = torch.arange(len(classes))
    return x[keep], relabel[y[keep]]


def few_per_class(x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded draw of ``per_class`` images of every class."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in y.unique():
        index = (y == label).nonzero().squeeze(1)
        chosen.append(index[torch.randperm(len(index), generator=generator)[:per_class]])
    chosen = torch.cat(chosen)
    return x[chosen], y[chosen]


def batches(x: torch.Tensor, y: torch.Tensor, size: int, generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled epoch of ``(x, y)`` mini-batches."""
    order = torch.randperm(len(y), generator=generator)
    return [(x[order[i:i + size]], y[order[i:i + size]]) for i in range(0, len(y), size)]


def pretrain(x: torch.Tensor, y: torch.Tensor, cache: Path) -> dict[str, torch.Tensor]:
    """The MLP trained on digits 0-4 (cached in ``cache``)."""
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=len(PRETRAIN_CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=PRETRAIN_LR)
    generator = torch.Generator().manual_seed(0)
    for _ in range(PRETRAIN_EPOCHS):
        for xb, yb in batches(x, y, PRETRAIN_BATCH, generator):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    state = model.state_dict()
    cache.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
    os.close(handle)
    torch.save(state, temporary)
    os.replace(temporary, cache)
    return state


def model_with_new_head(pretrained: dict[str, torch.Tensor] | None, seed: int) -> nn.Sequential:
    """The pretrained body (or random weights with ``None``) and a freshly initialised head."""
    torch.manual_seed(seed)
    model = build_model("mlp", num_classes=len(FINETUNE_CLASSES))
    if pretrained is not None:
        body = {k: v for k, v in pretrained.items() if not k.startswith(HEAD + ".")}
        model.load_state_dict(body, strict=False)
    return model


def build_optimizer(variant: str, model: nn.Sequential, lr: float) -> torch.optim.Optimizer:
    if variant in ("adam", "scratch"):
        return torch.optim.Adam(layerwise_param_groups(model, lr, head=HEAD, head_lr_mult=1.0))
    if variant == "adam_hd":
        return AdamHD(layerwise_param_groups(model, lr, head=HEAD, head_lr_mult=1.0), hypergrad_lr=HYPERGRAD_LR)
    groups = layerwise_param_groups(model, lr_range=(lr / 100, lr / 10), head=HEAD, head_lr_mult=10.0)
    if variant == "adam_layerwise":
        return torch.optim.Adam(groups)
    return AdamHD(groups, hypergrad_lr=HYPERGRAD_LR)


def finetune(variant, model, lr, train, test, seed):
    """Fine-tune; return the test accuracy before and after each epoch, the per-group lrs
    before the first step and after every step, and the groups' names."""
    optimizer = build_optimizer(variant, model, lr)
    generator = torch.Generator().manual_seed(seed)
    accuracies = [evaluate(model, *test, batch_size=1000)[1]]
    group_lrs = [[float(g["lr"]) for g in optimizer.param_groups]]
    for _ in range(FINETUNE_EPOCHS):
        model.train()
        for xb, yb in batches(*train, FINETUNE_BATCH, generator):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            group_lrs.append([float(g["lr"]) for g in optimizer.param_groups])
        accuracies.append(evaluate(model, *test, batch_size=1000)[1])
    return accuracies, group_lrs, [g["name"] for g in optimizer.param_groups]


def make_figure(out: Path) -> None:
    """``transfer.png`` from the CSVs: test error per epoch of every variant (mean and range
    over seeds), and the per-group lr of both HD variants (first seed) beside their fixed Adam
    counterparts."""
    with open(out / "transfer_curves.csv", newline="") as stream:
        curve_rows = list(csv.DictReader(stream))
    with open(out / "transfer_lrs.csv", newline="") as stream:
        lr_rows = list(csv.DictReader(stream))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    for variant in VARIANTS:
        colour, style = STYLE[variant]
        by_seed: dict[str, list[float]] = {}
        for row in curve_rows:
            if row["variant"] == variant:
                by_seed.setdefault(row["seed"], []).append(1 - float(row["test_accuracy"]))
        errors = torch.tensor(list(by_seed.values()))
        epochs = range(errors.shape[1])
        ax.plot(epochs, errors.mean(0), color=colour, linestyle=style, label=variant)
        if errors.shape[0] > 1:
            ax.fill_between(epochs, errors.min(0).values, errors.max(0).values, color=colour, alpha=0.12)
    ax.set_yscale("log")
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("test error, digits 5-9 (1 - accuracy)")
    ax.set_title(f"Test error (mean; band: min..max of {errors.shape[0]} seeds)", fontsize=10)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3, which="both")
    layers = build_model("mlp", num_classes=len(FINETUNE_CLASSES))
    first_seed = lr_rows[0]["seed"]
    for ax, variant in zip(axes[1:], ("adam_hd_layerwise", "adam_hd"), strict=True):
        series: dict[str, list[float]] = {}
        for row in lr_rows:
            if row["variant"] == variant and row["seed"] == first_seed:
                series.setdefault(row["group"], []).append(float(row["lr"]))
        for i, (name, values) in enumerate(series.items()):
            layer = layers.get_submodule(HEAD if name == "head" else name)
            label = f"{'new head' if name == 'head' else 'hidden'} {layer.in_features}->{layer.out_features}"
            ax.plot(range(len(values)), values, color=f"C{i + 2}", label=f"{label}: AdamHD")
            ax.axhline(values[0], color=f"C{i + 2}", linestyle="--", linewidth=1, label=f"{label}: Adam (fixed)")
        ax.set_yscale("log")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("learning rate")
        origin = "fastai slice(lr/100, lr)" if variant == "adam_hd_layerwise" else "one rate lr"
        ax.set_title(f"{variant}: per-group lr from {origin} (seed {first_seed})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.66, 0.0), ncol=3, fontsize=8)
    fig.suptitle(f"MLP pretrained on MNIST digits 0-4, new head, fine-tuned on {PER_CLASS} images per digit 5-9 "
                 f"(batch {FINETUNE_BATCH}, lr = range-test valley for Adam, AdamHD beta {HYPERGRAD_LR:g})")
    fig.tight_layout()
    save_figure(fig, out / "transfer")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.transfer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/transfer", help="output folder")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="how many of the seeds to run")
    parser.add_argument("--plot-only", action="store_true", help="redraw transfer.png from the CSVs in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.plot_only:
        make_figure(out)
        return
    out.mkdir(parents=True, exist_ok=True)

    # Data: digits 0-4 (all training images) to pretrain; PER_CLASS images of each of 5-9 to
    # fine-tune; the test images of 5-9 to score.
    mnist = load_dataset("mnist")
    pretrain_x, pretrain_y = subset(mnist.train_x, mnist.train_y, PRETRAIN_CLASSES)
    pool_x, pool_y = subset(mnist.train_x, mnist.train_y, FINETUNE_CLASSES)
    test = subset(mnist.valid_x, mnist.valid_y, FINETUNE_CLASSES)
    start = time.perf_counter()
    pretrained = pretrain(pretrain_x, pretrain_y, out / "pretrained.pt")
    check = build_model("mlp", num_classes=len(PRETRAIN_CLASSES))
    check.load_state_dict(pretrained)
    pretrain_accuracy = evaluate(check, *subset(mnist.valid_x, mnist.valid_y, PRETRAIN_CLASSES), batch_size=1000)[1]
    print(f"pretrained on digits 0-4: test accuracy {pretrain_accuracy:.4f} ({time.perf_counter() - start:.0f} s)")

    rows, curve_rows, lr_rows = [], [], []
    curves: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}
    for seed in SEEDS[: args.seeds]:
        train = few_per_class(pool_x, pool_y, PER_CLASS, seed)
        # The range test on the model with its new head, Adam, one rate everywhere.
        model = model_with_new_head(pretrained, seed)
        probe = torch.optim.Adam(model.parameters(), lr=1e-3)
        range_batches = batches(*train, FINETUNE_BATCH, torch.Generator().manual_seed(seed))
        result = find_lr(model, probe, F.cross_entropy, range_batches, start_lr=1e-7, end_lr=1.0, num_iter=100)
        lr = result.suggest("valley")
        print(f"seed {seed}: range test suggests " + ", ".join(f"{k} {v:.2e}" for k, v in result.suggestions().items()))
        if seed == SEEDS[0]:
            fig, ax = plt.subplots(figsize=(6, 4))
            result.plot(ax, suggestions=("valley", "slide", "minimum", "steep"))
            ax.set_title(f"Range test, Adam, MLP with a new head on {len(train[1])} images of digits 5-9")
            ax.set_ylabel("training loss (cross-entropy, smoothed)")
            save_figure(fig, out / "transfer_range_test")
            plt.close(fig)
        for variant in VARIANTS:
            model = model_with_new_head(None if variant == "scratch" else pretrained, seed)
            t0 = time.perf_counter()
            accuracies, group_lrs, names = finetune(variant, model, lr, train, test, seed)
            print(f"  {variant:<18} final test accuracy {accuracies[-1]:.4f}  ({time.perf_counter() - t0:.0f} s)")
            rows.append([variant, seed, lr, accuracies[-1]])
            curve_rows += [[variant, seed, epoch, acc] for epoch, acc in enumerate(accuracies)]
            curves[variant].append(accuracies)
            if variant.startswith("adam_hd"):
                lr_rows += [[variant, seed, step, name, value]
                            for step, values in enumerate(group_lrs) for name, value in zip(names, values, strict=True)]

    write_csv(out / "transfer.csv", ["variant", "seed", "lr", "final_test_accuracy"], rows)
    write_csv(out / "transfer_curves.csv", ["variant", "seed", "epoch", "test_accuracy"], curve_rows)
    write_csv(out / "transfer_lrs.csv", ["variant", "seed", "step", "group", "lr"], lr_rows)

    # The table: mean and spread over seeds of the final test accuracy.
    lines = [
        f"MLP 784-1000-1000 pretrained on MNIST digits 0-4 (test accuracy {pretrain_accuracy:.4f}); new head, "
        f"fine-tuned {FINETUNE_EPOCHS} epochs on {PER_CLASS} images per digit 5-9, batch {FINETUNE_BATCH}; "
        f"{len(curves['adam'])} seeds; lr = range-test valley (Adam); AdamHD beta = {HYPERGRAD_LR:g}.",
        "",
        "| variant | final test accuracy (mean ± sd) | min | max |",
        "|---|---|---|---|",
    ]
    for variant in VARIANTS:
        finals = [c[-1] for c in curves[variant]]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        lines.append(f"| {variant} | {statistics.mean(finals):.4f} ± {sd:.4f} | {min(finals):.4f} | {max(finals):.4f} |")
    table = "\n".join(lines) + "\n"
    write_text(out / "transfer.md", table)
    print(table)

    make_figure(out)
    print(f"wrote {out}/transfer.png, transfer.md, transfer.csv ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
