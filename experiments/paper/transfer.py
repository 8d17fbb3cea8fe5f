"""Transfer learning with discriminative (layer-wise) learning rates, with and without HD
(``transfer.png``; ``--only transfer``).

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

The pretrained weights (``runs/transfer-pretrained-HASH``) and each seed's fine-tuning
(``runs/transfer-seed-HASH``) are cached; the figures, ``transfer.csv`` and the summary's table are
drawn from the cached results.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import pyplot as plt
from torch import nn

from experiments.core import runner
from experiments.core.files import write_csv
from experiments.core.models import build_model
from experiments.core.plotting import save_figure
from experiments.paper.common import markdown_table
from experiments.core.runs import StudyOutput, SuiteContext
from experiments.core.training import evaluate, step

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
FINETUNE_CLASSES = (5, 6, 7, 8, 9)
PRETRAIN_EPOCHS = 1
PRETRAIN_LR = 1e-3  # Adam
PRETRAIN_BATCH = 128
PER_CLASS = 100  # labelled fine-tuning images per new class
FINETUNE_EPOCHS = 10
FINETUNE_BATCH = 32
RANGE_TEST = {"start_lr": 1e-7, "end_lr": 1.0, "num_iter": 100}
HYPERGRAD_LR = 1e-7  # the reference code's Adam-HD beta for this MLP on MNIST
HEAD = "5"  # build_model("mlp") is Sequential(Flatten, Linear, ReLU, Linear, ReLU, Linear)
VARIANTS = ("adam", "adam_hd", "adam_layerwise", "adam_hd_layerwise", "scratch")
STYLE = {  # HD solid, its base dashed in the same colour
    "adam": ("C0", "--"), "adam_hd": ("C0", "-"),
    "adam_layerwise": ("C1", "--"), "adam_hd_layerwise": ("C1", "-"),
    "scratch": ("0.5", ":"),
}


# ----------------------------------------------------------------------------- data and training


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


def pretrain(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """The MLP trained on digits 0-4: its weights and its test accuracy on 0-4."""
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=len(PRETRAIN_CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=PRETRAIN_LR)
    generator = torch.Generator().manual_seed(0)
    for _ in range(PRETRAIN_EPOCHS):
        for xb, yb in batches(*train, PRETRAIN_BATCH, generator):
            step(optimizer, lambda: F.cross_entropy(model(xb), yb))
    return {"state": model.state_dict(), "accuracy": evaluate(model, *test, batch_size=1000)[1]}


def model_with_new_head(pretrained: dict[str, torch.Tensor] | None, seed: int) -> nn.Sequential:
    """The pretrained body (or random weights with ``None``) and a freshly initialised head."""
    torch.manual_seed(seed)
    model = build_model("mlp", num_classes=len(FINETUNE_CLASSES))
    if pretrained is not None:
        body = {k: v for k, v in pretrained.items() if not k.startswith(HEAD + ".")}
        model.load_state_dict(body, strict=False)
    return model


def build_optimizer(variant: str, model: nn.Sequential, lr: float) -> torch.optim.Optimizer:
    """The variant's optimizer: one rate or fastai's layer-wise rates, Adam or AdamHD."""
    from hypergrad import AdamHD
    from hypergrad.param_groups import layerwise_param_groups

    if variant in ("adam", "adam_hd", "scratch"):
        groups = layerwise_param_groups(model, lr, head=HEAD, head_lr_mult=1.0)
    else:
        groups = layerwise_param_groups(model, lr_range=(lr / 100, lr / 10), head=HEAD, head_lr_mult=10.0)
    return AdamHD(groups, hypergrad_lr=HYPERGRAD_LR) if "_hd" in variant else torch.optim.Adam(groups)


def finetune(variant: str, model: nn.Module, lr: float, train, test, seed: int) -> dict:
    """Fine-tune; the test accuracy before and after each epoch, the per-group lrs before the
    first step and after every step, and the groups' names."""
    optimizer = build_optimizer(variant, model, lr)
    generator = torch.Generator().manual_seed(seed)
    accuracies = [evaluate(model, *test, batch_size=1000)[1]]
    group_lrs = [[float(g["lr"]) for g in optimizer.param_groups]]
    for _ in range(FINETUNE_EPOCHS):
        model.train()
        for xb, yb in batches(*train, FINETUNE_BATCH, generator):
            step(optimizer, lambda: F.cross_entropy(model(xb), yb))
            group_lrs.append([float(g["lr"]) for g in optimizer.param_groups])
        accuracies.append(evaluate(model, *test, batch_size=1000)[1])
    return {"accuracies": accuracies, "group_lrs": group_lrs, "groups": [g["name"] for g in optimizer.param_groups]}


def fine_tune_seed(pretrained: dict[str, torch.Tensor], pool, test, seed: int) -> dict:
    """One seed: the labelled draw, the range test on the model with its new head, every variant."""
    from hypergrad.lr_finder import find_lr

    train = few_per_class(*pool, PER_CLASS, seed)
    model = model_with_new_head(pretrained, seed)
    probe = torch.optim.Adam(model.parameters(), lr=1e-3)
    range_batches = batches(*train, FINETUNE_BATCH, torch.Generator().manual_seed(seed))
    result = find_lr(model, probe, F.cross_entropy, range_batches, **RANGE_TEST)
    lr = result.suggest("valley")
    variants = {variant: finetune(variant, model_with_new_head(None if variant == "scratch" else pretrained, seed),
                                  lr, train, test, seed) for variant in VARIANTS}
    return {"lr": lr, "variants": variants}


# ----------------------------------------------------------------------------- figure and study


def draw(results: dict[int, dict], title: str):
    """Test error per epoch of every variant (mean and range over seeds), and the per-group lr of
    both HD variants (first seed) beside their fixed Adam counterparts."""
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    for variant in VARIANTS:
        colour, style = STYLE[variant]
        errors = 1 - np.array([result["variants"][variant]["accuracies"] for result in results.values()])
        epochs = range(errors.shape[1])
        ax.plot(epochs, errors.mean(0), color=colour, linestyle=style, label=variant)
        if errors.shape[0] > 1:
            ax.fill_between(epochs, errors.min(0), errors.max(0), color=colour, alpha=0.12)
    ax.set(yscale="log", xlabel="fine-tuning epoch", ylabel="test error, digits 5-9 (1 - accuracy)")
    ax.set_title(f"Test error (mean; band: min..max of {len(results)} seeds)", fontsize=10)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3, which="both")
    layers = build_model("mlp", num_classes=len(FINETUNE_CLASSES))
    first_seed = next(iter(results))
    for ax, variant in zip(axes[1:], ("adam_hd_layerwise", "adam_hd"), strict=True):
        run = results[first_seed]["variants"][variant]
        for i, (name, values) in enumerate(zip(run["groups"], np.array(run["group_lrs"]).T, strict=True)):
            layer = layers.get_submodule(HEAD if name == "head" else name)
            label = f"{'new head' if name == 'head' else 'hidden'} {layer.in_features}->{layer.out_features}"
            ax.plot(range(len(values)), values, color=f"C{i + 2}", label=f"{label}: AdamHD")
            ax.axhline(values[0], color=f"C{i + 2}", linestyle="--", linewidth=1, label=f"{label}: Adam (fixed)")
        ax.set(yscale="log", xlabel="fine-tuning step", ylabel="learning rate")
        origin = "fastai slice(lr/100, lr)" if variant == "adam_hd_layerwise" else "one rate lr"
        ax.set_title(f"{variant}: per-group lr from {origin} (seed {first_seed})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.66, 0.0), ncol=3, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def run(context: SuiteContext) -> StudyOutput:
    # Digits 0-4 (all training images) to pretrain; PER_CLASS images of each of 5-9 to fine-tune;
    # the test images of 5-9 to score. MNIST is the mlp task's dataset.
    mnist = runner.dataset_for(runner.RunConfig(task="mlp", data_dir=context.cache.data_dir))
    settings = {"pretrain_classes": PRETRAIN_CLASSES, "finetune_classes": FINETUNE_CLASSES,
                "pretrain_epochs": PRETRAIN_EPOCHS, "pretrain_lr": PRETRAIN_LR, "pretrain_batch": PRETRAIN_BATCH}
    pretrained = context.cache.cached_tensors("transfer-pretrained", settings, lambda: pretrain(
        subset(mnist.train_x, mnist.train_y, PRETRAIN_CLASSES), subset(mnist.valid_x, mnist.valid_y, PRETRAIN_CLASSES)))
    pool = subset(mnist.train_x, mnist.train_y, FINETUNE_CLASSES)
    test = subset(mnist.valid_x, mnist.valid_y, FINETUNE_CLASSES)
    settings |= {"per_class": PER_CLASS, "finetune_epochs": FINETUNE_EPOCHS, "finetune_batch": FINETUNE_BATCH,
                 "range_test": RANGE_TEST, "hypergrad_lr": HYPERGRAD_LR, "variants": VARIANTS}
    results = {seed: context.cache.cached_json("transfer-seed", {**settings, "seed": seed},
                                               lambda seed=seed: fine_tune_seed(pretrained["state"], pool, test, seed))
               for seed in context.budget.transfer_seeds}
    setting_text = (f"MLP 784-1000-1000 pretrained on MNIST digits 0-4 (test accuracy {pretrained['accuracy']:.4f}); "
                    f"new head, fine-tuned {FINETUNE_EPOCHS} epochs on {PER_CLASS} images per digit 5-9, batch "
                    f"{FINETUNE_BATCH}; {len(results)} seeds; lr = range-test valley (Adam); AdamHD beta = "
                    f"{HYPERGRAD_LR:g}")
    fig = draw(results, setting_text)
    files = list(save_figure(fig, context.out_dir / "transfer"))
    plt.close(fig)
    rows = [[variant, seed, result["lr"], result["variants"][variant]["accuracies"][-1]]
            for seed, result in results.items() for variant in VARIANTS]
    files.append(write_csv(context.out_dir / "transfer.csv", ["variant", "seed", "lr", "final_test_accuracy"], rows))
    table = []
    for variant in VARIANTS:
        finals = [result["variants"][variant]["accuracies"][-1] for result in results.values()]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        table.append([variant, f"{statistics.mean(finals):.4f} ± {sd:.4f}", f"{min(finals):.4f}", f"{max(finals):.4f}"])
    summary = ("## Transfer learning with layer-wise learning rates (transfer.png)\n\n" + setting_text + ".\n\n"
               + markdown_table(["variant", "final test accuracy (mean ± sd)", "min", "max"], table))
    return StudyOutput(files, summary)
