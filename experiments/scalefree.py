"""How far each hypergradient rule gets from each initial learning rate: a grid of alpha_0 per base
optimizer and rule, final validation loss relative to the base optimizer's best alpha_0.

``python -m experiments.scalefree [--problems logreg,mlp,diabetes] [--iterations N]
[--data-dir DIR] [--dataset mnist|fashion_mnist] [--threads 1]`` prints one table per problem.

* ``logreg``, ``mlp``: the experiments' models on an image dataset (cross-entropy, batch 128).
* ``diabetes``: :func:`diabetes_regression`, scikit-learn's ``load_diabetes`` with the raw targets
  (about 25 to 346: a mean-squared error of ~3e4 at the start), standardised features, an MLP
  10-32-32-1 with tanh, batch 32.

Methods per base (SGD with Nesterov momentum 0.9, Adam): the torch.optim base, HD with the
paper's additive rule at the reference code's beta (1e-3 SGD-type, 1e-7 Adam-type), the
multiplicative rule and the scale-free rule at beta 0.05 (the scale-free rule's default).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

import hypergrad

ALPHA0S = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SCALEFREE_BETA = 0.05


@dataclass(frozen=True)
class Problem:
    """A model factory, the data and the loss of one grid."""

    name: str
    model: Callable[[], nn.Module]
    train: tuple[torch.Tensor, torch.Tensor]
    valid: tuple[torch.Tensor, torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batch_size: int


def diabetes_regression(seed: int = 0) -> Problem:
    """scikit-learn's diabetes data with unnormalised targets (MSE ~3e4 at the start): 342 training
    and 100 validation rows (a seeded split), features standardised on the training rows, an MLP
    10-32-32-1 with tanh."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True, scaled=False)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)[:, None]
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, valid = order[100:], order[:100]
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))

    return Problem("diabetes", model, (x[train], y[train]), (x[valid], y[valid]), F.mse_loss, 32)


def image_classification(task: str, dataset: str, data_dir: str | None) -> Problem:
    """An experiments task's model (``logreg``, ``mlp``) on ``dataset`` (cross-entropy, batch 128)."""
    from experiments.data import load_dataset
    from experiments.models import build_model

    splits = load_dataset(dataset, data_dir)
    return Problem(task, lambda: build_model(task, splits.num_classes), (splits.train_x, splits.train_y),
                   (splits.valid_x, splits.valid_y), F.cross_entropy, 128)


def final_valid_loss(problem: Problem, make_optimizer: Callable, lr: float, iterations: int, seed: int = 0) -> float:
    """Train ``problem`` for ``iterations`` minibatch steps (seeded model and batches) with
    ``make_optimizer(params, lr)``; the validation loss at the end (inf when it is not finite)."""
    torch.manual_seed(seed)
    model = problem.model()
    optimizer = make_optimizer(model.parameters(), lr)
    x, y = problem.train
    batches = torch.Generator().manual_seed(seed)
    for _ in range(iterations):
        rows = torch.randint(len(y), (problem.batch_size,), generator=batches)
        optimizer.zero_grad(set_to_none=True)
        loss = problem.loss(model(x[rows]), y[rows])
        if not torch.isfinite(loss):
            return math.inf
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        value = float(problem.loss(model(problem.valid[0]), problem.valid[1]))
    return value if math.isfinite(value) else math.inf


def methods() -> dict[str, Callable]:
    """name -> ``(params, lr) -> optimizer``: per base, the base and its three HD rules."""
    sgdn = {"momentum": 0.9, "nesterov": True}
    return {
        "sgdn": lambda p, lr: torch.optim.SGD(p, lr=lr, **sgdn),
        "sgdn_hd": lambda p, lr: hypergrad.SGDHD(p, lr=lr, hypergrad_lr=1e-3, **sgdn),
        "sgdn_hd_mult": lambda p, lr: hypergrad.SGDHD(p, lr=lr, hypergrad_lr=SCALEFREE_BETA,
                                                      hypergrad_rule="multiplicative", **sgdn),
        "sgdn_hd_sf": lambda p, lr: hypergrad.SGDHD(p, lr=lr, hypergrad_rule="scalefree", **sgdn),
        "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
        "adam_hd": lambda p, lr: hypergrad.AdamHD(p, lr=lr, hypergrad_lr=1e-7),
        "adam_hd_mult": lambda p, lr: hypergrad.AdamHD(p, lr=lr, hypergrad_lr=SCALEFREE_BETA,
                                                       hypergrad_rule="multiplicative"),
        "adam_hd_sf": lambda p, lr: hypergrad.AdamHD(p, lr=lr, hypergrad_rule="scalefree"),
    }


def grid_table(problem: Problem, iterations: int, alpha0s: Sequence[float] = ALPHA0S) -> str:
    """One row per method: the final validation loss from each alpha_0 over the best of its base
    on the grid (``sgdn`` for the ``sgdn_*`` rows, ``adam`` for the ``adam_*`` rows), and the worst
    of those ratios; the base's best loss in the header."""
    losses = {name: [final_valid_loss(problem, make, lr, iterations) for lr in alpha0s]
              for name, make in methods().items()}
    best = {base: min(losses[base]) for base in ("sgdn", "adam")}
    header = f"{problem.name}, {iterations} iterations: final validation loss / base's best " \
             f"(sgdn best {best['sgdn']:.4g}, adam best {best['adam']:.4g})"
    lines = [header, f"{'method':<14}" + "".join(f"{a:>10.0e}" for a in alpha0s) + f"{'worst':>10}"]
    for name, values in losses.items():
        ratios = [v / best[name.split('_')[0]] for v in values]
        lines.append(f"{name:<14}" + "".join(f"{r:>10.3g}" for r in ratios) + f"{max(ratios):>10.3g}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.scalefree", description=__doc__)
    parser.add_argument("--problems", default="logreg,mlp,diabetes")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--dataset", default="mnist", help="the image dataset of logreg and mlp")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for name in args.problems.split(","):
        problem = diabetes_regression() if name == "diabetes" else image_classification(name, args.dataset,
                                                                                       args.data_dir)
        print(grid_table(problem, args.iterations), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
