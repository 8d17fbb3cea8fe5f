"""The benchmark's workloads and the step-counted training run every entry and target run uses.

Read top to bottom: the data of a workload (:class:`TableData`, from :mod:`experiments.core.datasets` and
:mod:`experiments.core.tables`), what a workload is (:class:`Workload`: data, model, loss,
validation metric, batch size and the target-setting runs' steps per mode), the six workloads
(:data:`WORKLOADS`), and :func:`train`, which trains one model for a number of steps through the
one training loop (:func:`experiments.core.training.train_steps`) and returns the validation
metric after every ``eval_every`` steps with the process time spent in steps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from experiments.core.tables import TableData, load_breast_cancer, load_diabetes, load_text_corpus
from experiments.core.datasets import load_dataset
from experiments.core.methods import METHODS
from experiments.core.models import ByteTransformer, build_model, has_batch_norm
from experiments.core.training import Steps, evaluate, train_steps

__all__ = ["WORKLOADS", "Workload", "load_workload_data", "train", "workload_data"]

CONTEXT = {"quick": 64, "full": 64}
"""Bytes of context of the language model (its training windows and validation windows)."""
EVALUATIONS_PER_N = {"quick": 5, "full": 10}
"""Validation evaluations per N steps (every ``N // EVALUATIONS_PER_N`` steps)."""


@dataclass(frozen=True)
class Workload:
    """One workload.

    Attributes:
        name, description: registry key and one line for tables.
        kind: ``classify`` (cross-entropy, accuracy), ``language`` (next-byte cross-entropy per
            token), ``regress`` (mean squared error in the targets' own units) or ``fullbatch``
            (the mean logistic loss over every example, every step on all of them).
        metric, goal: the validation metric's name and whether lower (``min``) or higher is better.
        steps: mode -> N, the target-setting runs' steps (every entry gets 2N).
        batch_size: mode -> examples (or byte windows) per step; None = all (full batch).
        valid_size: mode -> validation examples (windows) used; None = all.
        load: ``data_dir -> TableData``.
        model: ``(data, mode) -> module`` (seed the global RNG first).
    """

    name: str
    description: str
    kind: str
    metric: str
    goal: str
    steps: dict[str, int]
    batch_size: dict[str, int | None]
    valid_size: dict[str, int | None]
    load: Callable[[str | None], TableData]
    model: Callable[[TableData, str], nn.Module]

    def identity(self, mode: str) -> dict:
        """What determines this workload's numbers in ``mode`` (the cache keys include it and the data's hash)."""
        return {"name": self.name, "kind": self.kind, "metric": self.metric, "steps": self.steps[mode],
                "batch_size": self.batch_size[mode], "valid_size": self.valid_size[mode],
                "context": CONTEXT[mode] if self.kind == "language" else None}


def _found(data_dir: str | None, *names: str) -> list[Path | None]:
    """``data_dir/NAME`` for each name when all of them are there, else Nones (the packaged files)."""
    paths = [Path(data_dir) / name for name in names] if data_dir else []
    return paths if paths and all(path.exists() for path in paths) else [None] * len(names)


def _images(name: str) -> Callable[[str | None], TableData]:
    def load(data_dir: str | None) -> TableData:
        splits = load_dataset(name, data_dir=data_dir)
        return TableData(splits.train_x, splits.train_y, splits.valid_x, splits.valid_y, splits.source)

    return load


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("logreg_mnist", "logistic regression 784-10, MNIST", "classify", "valid_accuracy", "max",
             {"quick": 300, "full": 1200}, {"quick": 128, "full": 128}, {"quick": 2000, "full": 5000},
             _images("mnist"), lambda data, mode: build_model("logreg")),
    Workload("mlp_mnist", "MLP 784-1000-1000-10, MNIST", "classify", "valid_accuracy", "max",
             {"quick": 80, "full": 320}, {"quick": 128, "full": 128}, {"quick": 2000, "full": 5000},
             _images("mnist"), lambda data, mode: build_model("mlp")),
    Workload("cnn_fashion", "CNN with batch norm, Fashion-MNIST", "classify", "valid_accuracy", "max",
             {"quick": 50, "full": 200}, {"quick": 32, "full": 32}, {"quick": 500, "full": 2000},
             _images("fashion_mnist"), lambda data, mode: build_model("cnn")),
    Workload("transformer_fortunes", "byte-level Transformer LM (2 layers, width 128), fortunes", "language",
             "valid_loss_per_token", "min", {"quick": 100, "full": 400}, {"quick": 8, "full": 8},
             {"quick": 64, "full": 128}, lambda data_dir: load_text_corpus(*(p for p in _found(data_dir, "fortunes") if p)),
             lambda data, mode: ByteTransformer(CONTEXT[mode])),
    Workload("mlp_diabetes", "MLP 10-64-1, raw-unit MSE, diabetes", "regress", "valid_mse", "min",
             {"quick": 300, "full": 1200}, {"quick": 32, "full": 32}, {"quick": None, "full": None},
             lambda data_dir: load_diabetes(*_found(data_dir, "diabetes_data_raw.csv.gz", "diabetes_target.csv.gz")),
             lambda data, mode: nn.Sequential(nn.Linear(data.train_x.shape[1], 64), nn.ReLU(), nn.Linear(64, 1))),
    Workload("fullbatch_breast_cancer", "full-batch logistic regression, breast cancer", "fullbatch",
             "train_loss", "min", {"quick": 300, "full": 1200}, {"quick": None, "full": None},
             {"quick": None, "full": None}, lambda data_dir: load_breast_cancer(*_found(data_dir, "breast_cancer.csv")),
             lambda data, mode: nn.Linear(data.train_x.shape[1], 1, bias=False)),
)}


def load_workload_data(workload: Workload, mode: str, data_dir: str | None = None) -> TableData:
    """The workload's data, the validation part cut to ``valid_size`` (language: fixed windows
    of CONTEXT + 1 bytes, evenly spaced)."""
    data = workload.load(data_dir)
    size = workload.valid_size[mode]
    if workload.kind == "language":
        length = CONTEXT[mode] + 1
        count = len(data.valid_x) // length if size is None else size
        starts = torch.linspace(0, len(data.valid_x) - length, count).long()
        windows = torch.stack([data.valid_x[s:s + length] for s in starts.tolist()])
        return TableData(data.train_x, None, windows, None, data.source)
    if size is not None:
        return TableData(data.train_x, data.train_y, data.valid_x[:size], data.valid_y[:size], data.source)
    return data


@functools.lru_cache(maxsize=1)
def workload_data(name: str, mode: str, data_dir: str | None) -> TableData:
    """:func:`load_workload_data` of ``WORKLOADS[name]``, once per process (a worker runs many runs of
    the same workload)."""
    return load_workload_data(WORKLOADS[name], mode, data_dir)


def _batch(workload: Workload, data: TableData, mode: str, generator: torch.Generator):
    """One training batch, drawn with replacement (language: random windows of the text)."""
    size = workload.batch_size[mode]
    if workload.kind == "language":
        length = CONTEXT[mode] + 1
        starts = torch.randint(0, len(data.train_x) - length, (size,), generator=generator)
        windows = data.train_x[starts[:, None] + torch.arange(length)]
        return windows[:, :-1], windows[:, 1:]
    if size is None:
        return data.train_x, data.train_y
    index = torch.randint(0, len(data.train_x), (size,), generator=generator)
    return data.train_x[index], data.train_y[index]


def _loss(workload: Workload, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if workload.kind == "classify":
        return F.cross_entropy(output, y)
    if workload.kind == "language":
        return F.cross_entropy(output.flatten(0, 1), y.flatten())
    if workload.kind == "regress":
        return F.mse_loss(output, y)
    return F.binary_cross_entropy_with_logits(output, y)


@torch.no_grad()
def _metric(workload: Workload, model: nn.Module, data: TableData) -> tuple[float, float]:
    """The validation metric and the validation loss (full-batch: the objective over every
    example; they differ only for ``classify``: accuracy and cross-entropy)."""
    model.eval()
    if workload.kind == "classify":
        loss, accuracy = evaluate(model, data.valid_x, data.valid_y, 1000)
        return accuracy, loss
    if workload.kind == "language":
        loss = float(_loss(workload, model(data.valid_x[:, :-1]), data.valid_x[:, 1:]))
    else:
        loss = float(_loss(workload, model(data.valid_x), data.valid_y))
    return loss, loss


def train(workload: Workload, data: TableData, mode: str, method: str, settings, seed: int, steps: int,
          schedule: Callable[[torch.optim.Optimizer, int], object] | None = None) -> dict:
    """Train ``workload``'s model with ``methods.METHODS[method]`` built with ``settings`` for
    ``steps`` steps (``schedule(optimizer, steps)``: a scheduler stepped after each step), through
    :func:`experiments.core.training.train_steps`.

    Returns ``{"steps", "metric", "time_s"}`` (the validation metric after every
    ``eval_every = max(1, N // EVALUATIONS_PER_N[mode])`` steps and at the end, with the process time spent in
    training steps so far), ``"diverged"`` (a non-finite loss or metric stopped the run),
    ``"final_metric"`` (None when diverged) and ``"final_loss"``, the validation loss at the end
    (None when diverged or not finite). The initial weights and the batches depend on ``seed`` only.
    """
    torch.manual_seed(seed)
    model = workload.model(data, mode)
    entry = METHODS[method]
    optimizer = entry.build(entry.parameters(model), settings)
    generator = torch.Generator().manual_seed(seed)
    batch_norm = (data.train_x[:1000], workload.batch_size[mode] or len(data.train_x)) if has_batch_norm(model) else None
    run = Steps(model, optimizer, schedule(optimizer, steps) if schedule is not None else None,
                lambda number: _batch(workload, data, mode, generator),
                lambda x, y: _loss(workload, model(x), y), train_eval_modes=entry.has_train_eval_modes,
                batch_norm_data=batch_norm)
    curve = {"steps": [], "metric": [], "time_s": []}
    losses = []

    def evaluate(number: int, spent: float) -> bool:
        value, loss = _metric(workload, model, data)
        curve["steps"].append(number)
        curve["metric"].append(value)
        curve["time_s"].append(spent)
        losses.append(loss)
        return not math.isfinite(value)

    outcome = train_steps(run, steps, eval_every=max(1, workload.steps[mode] // EVALUATIONS_PER_N[mode]),
                          evaluate=evaluate)
    diverged = outcome.diverged
    final = None if diverged else curve["metric"][-1]
    final_loss = None if diverged or not math.isfinite(losses[-1]) else losses[-1]
    return {**curve, "diverged": diverged, "final_metric": final, "final_loss": final_loss}
