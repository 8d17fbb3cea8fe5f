"""The one registry of workloads (:data:`WORKLOADS`): every model-and-data pair any command trains.

A :class:`Workload` holds its data (a loader), its model, its loss and validation metric (both
given by its ``kind``), its batch size and validation size per mode, and the benchmark's budget
per mode. Each belongs to one ``suite``, and each suite's names are a view of the registry
(:func:`suite`):

* ``paper``: the paper's tasks ``logreg``, ``mlp``, ``cnn``, ``vgg`` (image data sets, trained by
  the runner in epochs of a fresh permutation; with the paper's Adam-type beta). Their budgets are
  the studies' (``runs.BUDGETS``): one task gets a different one in each study.
* ``benchmark``: the self-tuning benchmark's workloads (six today), batches drawn with replacement, N steps
  per mode (``steps``).
* ``fullbatch``: the HDM study's two-class logistic problems (float64, every step on all
  examples; the study's budget is gradient evaluations).

A workload's data are a :class:`~experiments.core.tables.TableData`; :func:`load_workload_data`
cuts the validation part to the mode's size (:func:`workload_data`: once per process).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from experiments.core.datasets import load_dataset
from experiments.core.models import ByteTransformer, build_model
from experiments.core.tables import TableData, load_breast_cancer, load_diabetes, load_logistic_problem, load_text_corpus
from experiments.core.training import evaluate

__all__ = ["CONTEXT", "EVALUATIONS_PER_N", "SUITES", "WORKLOADS", "Workload", "load_workload_data", "suite",
           "workload_data"]

CONTEXT = {"quick": 64, "full": 64}
"""Bytes of context of the language model (its training windows and validation windows)."""
EVALUATIONS_PER_N = {"quick": 5, "full": 10}
"""The benchmark's validation evaluations per N steps (every ``N // EVALUATIONS_PER_N`` steps)."""
SUITES = ("paper", "benchmark", "fullbatch")


@dataclass(frozen=True)
class Workload:
    """One workload.

    Attributes:
        name, description: registry key and one line for tables.
        suite: ``paper``, ``benchmark`` or ``fullbatch`` (see the module docstring).
        kind: ``classify`` (cross-entropy, accuracy), ``language`` (next-byte cross-entropy per
            token), ``regress`` (mean squared error in the targets' own units) or ``fullbatch``
            (the mean logistic loss over every example, every step on all of them).
        metric, goal: the validation metric's name and whether lower (``min``) or higher is better.
        batch_size: mode -> examples (or byte windows) per step; None = all (full batch).
        valid_size: mode -> validation examples (windows) used; None = all.
        load: ``data_dir -> TableData``.
        model: ``(data, mode) -> module`` (seed the global RNG first).
        steps: mode -> N, the benchmark's target-setting runs' steps (every entry gets 2N);
            None outside the benchmark.
        dataset: the image data set of :mod:`experiments.core.datasets` (the runner loads it with
            its normalisation and augmentation); None for the others.
        paper_hypergrad_lr: the reference code's beta for Adam-type HD on a paper task.
    """

    name: str
    suite: str
    description: str
    kind: str
    metric: str
    goal: str
    batch_size: dict[str, int | None]
    valid_size: dict[str, int | None]
    load: Callable[[str | None], TableData]
    model: Callable[[TableData, str], nn.Module]
    steps: dict[str, int] | None = None
    dataset: str | None = None
    paper_hypergrad_lr: float | None = None

    def identity(self, mode: str) -> dict:
        """What determines this workload's numbers in ``mode`` (the cache keys include it and the data's hash)."""
        return {"name": self.name, "kind": self.kind, "metric": self.metric,
                "steps": self.steps[mode] if self.steps is not None else None,
                "batch_size": self.batch_size[mode], "valid_size": self.valid_size[mode],
                "context": CONTEXT[mode] if self.kind == "language" else None}

    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch's ``output`` against its targets ``y``."""
        if self.kind == "classify":
            return F.cross_entropy(output, y)
        if self.kind == "language":
            return F.cross_entropy(output.flatten(0, 1), y.flatten())
        if self.kind == "regress":
            return F.mse_loss(output, y)
        return F.binary_cross_entropy_with_logits(output, y)

    @torch.no_grad()
    def validate(self, model: nn.Module, data: TableData) -> tuple[float, float]:
        """The validation metric and the validation loss (full-batch: the objective over every
        example; they differ only for ``classify``: accuracy and cross-entropy)."""
        model.eval()
        if self.kind == "classify":
            loss, accuracy = evaluate(model, data.valid_x, data.valid_y, 1000)
            return accuracy, loss
        if self.kind == "language":
            loss = float(self.loss(model(data.valid_x[:, :-1]), data.valid_x[:, 1:]))
        else:
            loss = float(self.loss(model(data.valid_x), data.valid_y))
        return loss, loss

    def sample(self, data: TableData, mode: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One training batch, drawn with replacement (language: random windows of the text)."""
        size = self.batch_size[mode]
        if self.kind == "language":
            length = CONTEXT[mode] + 1
            starts = torch.randint(0, len(data.train_x) - length, (size,), generator=generator)
            windows = data.train_x[starts[:, None] + torch.arange(length)]
            return windows[:, :-1], windows[:, 1:]
        if size is None:
            return data.train_x, data.train_y
        index = torch.randint(0, len(data.train_x), (size,), generator=generator)
        return data.train_x[index], data.train_y[index]


def _found(data_dir: str | None, *names: str) -> list[Path | None]:
    """``data_dir/NAME`` for each name when all of them are there, else Nones (the packaged files)."""
    paths = [Path(data_dir) / name for name in names] if data_dir else []
    return paths if paths and all(path.exists() for path in paths) else [None] * len(names)


def _images(name: str) -> Callable[[str | None], TableData]:
    def load(data_dir: str | None) -> TableData:
        splits = load_dataset(name, data_dir=data_dir)
        return TableData(splits.train_x, splits.train_y, splits.valid_x, splits.valid_y, splits.source)

    return load


def _every_mode(value) -> dict:
    return {"quick": value, "full": value}


def _task(name: str, dataset: str, description: str, beta: float) -> Workload:
    """A paper task: an image data set, batches of 128, the whole validation set."""
    return Workload(name, "paper", description, "classify", "valid_accuracy", "max", _every_mode(128),
                    _every_mode(None), _images(dataset), lambda data, mode: build_model(name), dataset=dataset,
                    paper_hypergrad_lr=beta)


def _problem(name: str, description: str, *table) -> Workload:
    """A full-batch logistic problem of the HDM study (a linear model over the intercept column)."""
    return Workload(name, "fullbatch", description, "fullbatch", "train_loss", "min", _every_mode(None),
                    _every_mode(None), lambda data_dir: load_logistic_problem(*table),
                    lambda data, mode: nn.Linear(data.train_x.shape[1], 1, bias=False))


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    _task("logreg", "mnist", "logistic regression 784-10 on MNIST", 1e-7),
    _task("mlp", "mnist", "MLP 784-1000-1000-10 (ReLU) on MNIST", 1e-7),
    _task("cnn", "fashion_mnist", "small VGG-style CNN with batch norm on Fashion-MNIST", 1e-8),
    _task("vgg", "cifar10", "VGG-16 with batch norm on CIFAR-10", 1e-8),
    Workload("logreg_mnist", "benchmark", "logistic regression 784-10, MNIST", "classify", "valid_accuracy", "max",
             {"quick": 128, "full": 128}, {"quick": 2000, "full": 5000}, _images("mnist"),
             lambda data, mode: build_model("logreg"), steps={"quick": 300, "full": 1200}),
    Workload("mlp_mnist", "benchmark", "MLP 784-1000-1000-10, MNIST", "classify", "valid_accuracy", "max",
             {"quick": 128, "full": 128}, {"quick": 2000, "full": 5000}, _images("mnist"),
             lambda data, mode: build_model("mlp"), steps={"quick": 80, "full": 320}),
    Workload("cnn_fashion", "benchmark", "CNN with batch norm, Fashion-MNIST", "classify", "valid_accuracy", "max",
             {"quick": 32, "full": 32}, {"quick": 500, "full": 2000}, _images("fashion_mnist"),
             lambda data, mode: build_model("cnn"), steps={"quick": 50, "full": 200}),
    Workload("transformer_fortunes", "benchmark", "byte-level Transformer LM (2 layers, width 128), fortunes",
             "language", "valid_loss_per_token", "min", {"quick": 8, "full": 8}, {"quick": 64, "full": 128},
             lambda data_dir: load_text_corpus(*(p for p in _found(data_dir, "fortunes") if p)),
             lambda data, mode: ByteTransformer(CONTEXT[mode]), steps={"quick": 100, "full": 400}),
    Workload("mlp_diabetes", "benchmark", "MLP 10-64-1, raw-unit MSE, diabetes", "regress", "valid_mse", "min",
             {"quick": 32, "full": 32}, _every_mode(None),
             lambda data_dir: load_diabetes(*_found(data_dir, "diabetes_data_raw.csv.gz", "diabetes_target.csv.gz")),
             lambda data, mode: nn.Sequential(nn.Linear(data.train_x.shape[1], 64), nn.ReLU(), nn.Linear(64, 1)),
             steps={"quick": 300, "full": 1200}),
    Workload("fullbatch_breast_cancer", "benchmark", "full-batch logistic regression, breast cancer", "fullbatch",
             "train_loss", "min", _every_mode(None), _every_mode(None),
             lambda data_dir: load_breast_cancer(*_found(data_dir, "breast_cancer.csv")),
             lambda data, mode: nn.Linear(data.train_x.shape[1], 1, bias=False), steps={"quick": 300, "full": 1200}),
    _problem("breast_cancer", "breast cancer, its ten mean features", "breast_cancer", lambda t: t >= 0,
             lambda t: t == 1, slice(0, 10)),
    _problem("iris_1v2", "iris versicolor against virginica", "iris", lambda t: t > 0, lambda t: t == 2),
    _problem("digits_parity", "digits, even against odd", "digits", lambda t: t >= 0, lambda t: t % 2 == 1),
    _problem("wine_1v2", "wine class 1 against 2, its first six features", "wine", lambda t: t > 0,
             lambda t: t == 2, slice(0, 6)),
    _problem("mnist_3v5", "MNIST 3 against 5", "mnist", lambda t: (t == 3) | (t == 5), lambda t: t == 5),
)}


def suite(name: str) -> tuple[str, ...]:
    """The names of the workloads of one suite (``paper``, ``benchmark`` or ``fullbatch``), in registry order."""
    if name not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got {name!r}")
    return tuple(key for key, workload in WORKLOADS.items() if workload.suite == name)


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


