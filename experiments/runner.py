"""Train one task with one or several methods and write the logs that plots and tables use.

Read top to bottom: the configuration (:class:`RunConfig`), data helpers, the training loop
(:func:`run_method`), and the suite around it (:func:`run_suite`: several methods, ``run.json``
and a summary table). A later ``reproduce`` command calls :func:`run_method` directly with
per-run overrides (``run_method(config, "sgd_hd", out, lr=1e-2, max_iterations=500)``).

Files written under ``out_dir`` (each one atomically: a temporary file renamed into place):

* ``METHOD.epochs.csv``: ``epoch,iteration,time_s,train_loss,valid_loss,valid_accuracy,lr``.
  Row 0 is before training with both losses on the full sets; row ``e`` is after epoch ``e``
  with ``train_loss`` the mean minibatch loss of that epoch (the paper's definition) and ``lr``
  the epoch's mean learning rate.
* ``METHOD.iterations.csv``: ``iteration,epoch,time_s,loss,lr`` (minibatch loss, and the
  learning rate after that step).
* ``METHOD.train_metrics.csv`` (only with ``train_metrics=True``): ``epoch,train_loss,train_accuracy``
  on the whole training set in eval mode, before training and after every epoch (for plots of
  the training error; the epochs CSV keeps the paper's mean minibatch loss).
* ``checkpoints/METHOD.pt``: model, optimizer, scheduler and RNG state after the last complete
  epoch, so ``resume=True`` continues exactly where an interrupted run stopped.
* ``run.json`` (by :func:`run_suite`): arguments, library versions, dataset source and checksum,
  device and per-method results and wall times.

``time_s`` is training time only (forward, backward, step), summed across resumed sessions;
evaluation and checkpointing are not counted.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer

from experiments.data import DATASETS, DatasetSplits, load_dataset
from experiments.methods import MethodSettings, default_hypergrad_lr, resolve_methods
from experiments.models import TASKS, build_model, has_batch_norm

__all__ = ["EPOCH_COLUMNS", "ITERATION_COLUMNS", "MethodResult", "RunConfig", "run_method", "run_suite"]

EPOCH_COLUMNS = ("epoch", "iteration", "time_s", "train_loss", "valid_loss", "valid_accuracy", "lr")
ITERATION_COLUMNS = ("iteration", "epoch", "time_s", "loss", "lr")
TRAIN_METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy")
CHECKPOINT_VERSION = 1
SCHEDULE_FREE_BN_BATCHES = 50
"""Training batches used to recompute batch-norm statistics at Schedule-Free's evaluation point."""

LRSchedulerFactory = Callable[[Optimizer, int, int], Any]
"""``(optimizer, iterations_per_epoch, total_iterations) -> scheduler``; stepped every iteration."""


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run, with the paper's defaults.

    Attributes:
        task: ``logreg``, ``mlp``, ``cnn`` or ``vgg`` (model + dataset, see ``models.TASKS``).
        epochs: passes over the training set.
        lr: alpha_0, the initial learning rate (the learning-rate-free peers keep their own).
        hypergrad_lr: beta for HD methods; None = the reference code's value for the method and
            task (``methods.default_hypergrad_lr``).
        weight_decay: L2 (or the method's own decoupled decay) on every method.
        batch_size: minibatch size; the last, smaller batch of an epoch is kept (as DataLoader).
        seed: seeds the initial weights, the data order of every epoch and dropout.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        data_dir: a folder to look in first for the dataset (and to download into).
        download: download the dataset when it is found nowhere.
        max_iterations: stop after this many iterations in total (the last epoch may be partial).
        train_fraction: train on this fraction of the training set (a fixed, seeded subset).
        lr_scheduler: ``(optimizer, iterations_per_epoch, total_iterations) -> scheduler``,
            stepped after every optimizer step (for tuned-schedule baselines).
        eval_batch_size: batch size for evaluation only (does not change results).
        distributed: ``None`` (one process), ``ddp`` or ``fsdp``: a data-parallel run launched
            by ``torchrun`` (see :mod:`experiments.distributed`); each ``batch_size`` batch is
            split across the ranks and only rank 0 writes files.
    """

    task: str
    epochs: int = 10
    lr: float = 1e-3
    hypergrad_lr: float | None = None
    weight_decay: float = 1e-4
    batch_size: int = 128
    seed: int = 1
    device: str = "auto"
    data_dir: str | None = None
    download: bool = False
    max_iterations: int | None = None
    train_fraction: float = 1.0
    lr_scheduler: LRSchedulerFactory | None = field(default=None, repr=False)
    eval_batch_size: int = 1000
    distributed: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        _check(self.epochs, "epochs", int, lambda v: v >= 1, ">= 1")
        _check(self.lr, "lr", (int, float), lambda v: v > 0 and math.isfinite(v), "> 0")
        if self.hypergrad_lr is not None:
            _check(self.hypergrad_lr, "hypergrad_lr", (int, float), lambda v: v >= 0 and math.isfinite(v), ">= 0")
        _check(self.weight_decay, "weight_decay", (int, float), lambda v: v >= 0 and math.isfinite(v), ">= 0")
        _check(self.batch_size, "batch_size", int, lambda v: v >= 1, ">= 1")
        _check(self.seed, "seed", int, lambda v: 0 <= v < 2**32, "in [0, 2**32)")
        if self.max_iterations is not None:
            _check(self.max_iterations, "max_iterations", int, lambda v: v >= 1, ">= 1")
        _check(self.train_fraction, "train_fraction", (int, float), lambda v: 0 < v <= 1, "in (0, 1]")
        _check(self.eval_batch_size, "eval_batch_size", int, lambda v: v >= 1, ">= 1")
        if self.lr_scheduler is not None and not callable(self.lr_scheduler):
            raise TypeError(f"lr_scheduler must be callable or None, got {type(self.lr_scheduler).__name__}")
        torch.device("cuda" if self.device == "auto" else self.device)  # raises on a malformed device
        if self.distributed is not None and self.distributed not in ("ddp", "fsdp"):
            raise ValueError(f"distributed must be None, 'ddp' or 'fsdp', got {self.distributed!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; the scheduler factory is recorded by its qualified name."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["lr_scheduler"] = _qualified_name(self.lr_scheduler)
        return fields

    def identity(self) -> dict[str, Any]:
        """The fields that determine the numbers a run produces (resume refuses a mismatch).

        ``epochs`` is left out so that a finished run can be extended; where the data were read
        from, the evaluation batch size and how many processes shared each batch do not change
        results (beyond floating-point rounding)."""
        fields = self.to_dict()
        for name in ("epochs", "data_dir", "download", "eval_batch_size", "distributed"):
            del fields[name]
        return fields


def _check(value, name: str, types, condition, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        raise TypeError(f"{name} must be a number {allowed}, got {type(value).__name__}")
    if not condition(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _qualified_name(obj) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, functools.partial):
        return f"partial({_qualified_name(obj.func)}, args={obj.args!r}, kwargs={obj.keywords!r})"
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class MethodResult:
    """Outcome of one method's run (``status``: ``completed`` or ``diverged``)."""

    method: str
    status: str
    epochs_completed: int
    iterations: int
    final_train_loss: float
    final_valid_loss: float
    final_valid_accuracy: float
    final_lr: float
    hypergrad_lr: float | None
    wall_time_s: float
    train_time_s: float
    diverged_at_iteration: int | None
    epochs_csv: str
    iterations_csv: str
    optimizer_defaults: dict[str, Any]


# ----------------------------------------------------------------------------- files


def _atomic_write_file(path: Path, write_file: Callable[[str], None]) -> None:
    """Let ``write_file`` write a temporary file next to ``path``, then rename it over ``path``:
    readers see the old file or the new one, never half of one (Ctrl-C, crash, full disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(handle)
    try:
        write_file(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _atomic_write(path: Path, write: Callable[[io.TextIOBase], None]) -> None:
    """Atomically write a text file through ``write(stream)``."""

    def write_file(temporary: str) -> None:
        with open(temporary, "w", newline="") as stream:
            write(stream)

    _atomic_write_file(path, write_file)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file (UTF-8) atomically."""
    _atomic_write(Path(path), lambda stream: stream.write(text))


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Write a CSV atomically; floats in full precision (``repr``) so reruns compare exactly."""

    def write(stream):
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows([[repr(v) if isinstance(v, float) else v for v in row] for row in rows])

    _atomic_write(path, write)


def write_json(path: Path, content: dict) -> None:
    """Write JSON atomically (NaN and infinities as JSON ``null``)."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return value

    _atomic_write(path, lambda stream: json.dump(clean(content), stream, indent=2, default=str))


# ----------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=2)
def _cached_dataset(name: str, data_dir: str | None, download: bool) -> DatasetSplits:
    return load_dataset(name, data_dir=data_dir, download=download)


def dataset_for(config: RunConfig) -> DatasetSplits:
    """The task's dataset, loaded once per process."""
    return _cached_dataset(TASKS[config.task].dataset, config.data_dir, config.download)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Data order (and augmentation) of ``epoch`` depends on (seed, epoch) only: method order
    and resuming cannot change it."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _training_subset(splits: DatasetSplits, config: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """All training data, or a fixed seeded ``train_fraction`` of it."""
    if config.train_fraction == 1:
        return splits.train_x, splits.train_y
    count = max(1, round(config.train_fraction * len(splits.train_y)))
    chosen = torch.randperm(len(splits.train_y), generator=_epoch_generator(config.seed, 0))[:count]
    return splits.train_x[chosen], splits.train_y[chosen]


def random_crop_flip(x: torch.Tensor, padding: int, fill: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The reference CIFAR-10 augmentation on a batch: random ``padding``-pixel crop and
    horizontal flip. ``fill`` is the per-channel value of a black pixel after normalisation."""
    n, channels, height, width = x.shape
    padded = fill.view(1, channels, 1, 1).expand(n, channels, height + 2 * padding, width + 2 * padding).clone()
    padded[:, :, padding:padding + height, padding:padding + width] = x
    shift_y = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    shift_x = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    columns = torch.arange(width, device=x.device).expand(n, width)
    columns = torch.where(flip[:, None], width - 1 - columns, columns) + shift_x[:, None]
    rows = torch.arange(height, device=x.device)[None, :] + shift_y[:, None]
    batch = torch.arange(n, device=x.device)[:, None, None]
    # (n, h, w, c) from advanced indexing over (batch, rows, columns), channels last.
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) over the whole ``(x, y)``."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(y), batch_size):
        output = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        total_loss += F.cross_entropy(output, target, reduction="sum").double()
        correct += (output.argmax(dim=1) == target).sum()
    return total_loss.item() / len(y), correct.item() / len(y)


@torch.no_grad()
def _recompute_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Schedule-Free evaluates at its averaged point x, whose batch-norm statistics were never
    seen in training; its documentation recommends a few training batches in train mode at x.
    Only batch-norm layers run in train mode here, so dropout draws no random numbers."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
    for start in range(0, min(len(x), SCHEDULE_FREE_BN_BATCHES * batch_size), batch_size):
        model(x[start:start + batch_size])
    model.eval()


# ----------------------------------------------------------------------------- one method


def _data_parallel(config: RunConfig, methods: Sequence[str], device: torch.device):
    """This process's :class:`experiments.distributed.DataParallel` (joining the torchrun run),
    or None for a one-process run."""
    if config.distributed is None:
        return None
    from experiments.distributed import NOT_SHARDABLE, data_parallel

    unshardable = [method for method in methods if method in NOT_SHARDABLE]
    if config.distributed == "fsdp" and unshardable:
        raise ValueError(
            f"method(s) {unshardable} cannot run with distributed='fsdp': their step takes norms over "
            "all parameters without reducing them across ranks; use distributed='ddp'"
        )
    return data_parallel(config.distributed, device)


def run_method(
    config: RunConfig,
    method: str,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    show_progress: bool | None = None,
    train_metrics: bool = False,
    **overrides,
) -> MethodResult:
    """Train ``config.task`` with ``method``; write its CSVs and checkpoint under ``out_dir``.

    Args:
        config: the run's settings.
        method: a key of ``methods.METHODS``.
        out_dir: output folder (created).
        resume: continue from ``out_dir/checkpoints/METHOD.pt`` if it exists (the settings must
            match, except ``epochs``, which may grow); a finished run is not repeated.
        show_progress: tqdm bar; default: only when stderr is a terminal.
        train_metrics: also evaluate the whole training set after every epoch and write
            ``METHOD.train_metrics.csv`` (costs one pass over the training set per epoch).
        **overrides: per-run replacements of ``config`` fields (``lr=..., seed=...``).

    Returns:
        The :class:`MethodResult`. A run whose loss becomes NaN or infinite stops there with
        ``status="diverged"``; that is a result, not an exception.
    """
    if overrides:
        config = dataclasses.replace(config, **overrides)
    (spec,) = resolve_methods([method])
    out_dir = Path(out_dir)
    paths = {
        "epochs": out_dir / f"{method}.epochs.csv",
        "iterations": out_dir / f"{method}.iterations.csv",
        "checkpoint": out_dir / "checkpoints" / f"{method}.pt",
        "train_metrics": out_dir / f"{method}.train_metrics.csv",
    }
    wall_start = time.perf_counter()
    device = resolve_device(config.device)
    parallel = _data_parallel(config, [method], device)
    if parallel is not None:
        device = parallel.device
    writes_files = parallel is None or parallel.writes_files

    # Data: tensors on the device, batched by index slicing.
    splits = dataset_for(config)
    train_x, train_y = (t.to(device) for t in _training_subset(splits, config))
    valid_x, valid_y = splits.valid_x.to(device), splits.valid_y.to(device)
    iterations_per_epoch = math.ceil(len(train_y) / config.batch_size)
    total_iterations = config.epochs * iterations_per_epoch
    if config.max_iterations is not None:
        total_iterations = min(total_iterations, config.max_iterations)
    augment = config.task == "vgg"
    if augment:
        info = DATASETS[splits.name]
        black = torch.tensor([-m / s for m, s in zip(info.mean, info.std)], device=device)

    # Model and optimizer: the same initial weights for every method (seeded here).
    torch.manual_seed(config.seed)
    model = build_model(config.task, splits.num_classes).to(device)
    if parallel is not None:
        model = parallel.wrap(model)
    hypergrad_lr = config.hypergrad_lr if spec.hypergradient else None
    if spec.hypergradient and hypergrad_lr is None:
        hypergrad_lr = default_hypergrad_lr(method, config.task)
    settings = MethodSettings(config.lr, hypergrad_lr, config.weight_decay, has_batch_norm(model))
    optimizer = spec.build(model.parameters(), settings)
    scheduler = config.lr_scheduler(optimizer, iterations_per_epoch, total_iterations) if config.lr_scheduler else None

    def eval_mode() -> None:
        if spec.has_train_eval_modes:
            optimizer.eval()
            if has_batch_norm(model):
                _recompute_batch_norm(model, train_x, config.batch_size)
        model.eval()

    def train_mode() -> None:
        model.train()
        if spec.has_train_eval_modes:
            optimizer.train()

    # State: fresh, or restored from the last complete epoch.
    state = {"epoch": 0, "iteration": 0, "train_time_s": 0.0, "wall_time_s": 0.0, "status": "running",
             "diverged_at_iteration": None, "epoch_rows": [], "iteration_rows": [], "train_metric_rows": []}
    if resume and paths["checkpoint"].is_file():
        # On the CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest.
        checkpoint = torch.load(paths["checkpoint"], map_location="cpu", weights_only=False)
        if checkpoint["config"] != config.identity() or checkpoint["method"] != method:
            raise ValueError(
                f"cannot resume {paths['checkpoint']}: it was made with {checkpoint['config']} "
                f"for {checkpoint['method']!r}, now {config.identity()} for {method!r}"
            )
        if parallel is None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        else:
            parallel.load_state_dicts(model, optimizer, checkpoint["model"], checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["rng_cpu"])
        if device.type == "cuda" and checkpoint["rng_cuda"] is not None:
            torch.cuda.set_rng_state(checkpoint["rng_cuda"], device)
        state = checkpoint["state"]
        state.setdefault("train_metric_rows", [])
    else:
        for path in paths.values() if writes_files else ():
            path.unlink(missing_ok=True)
        eval_mode()
        train_loss, _ = evaluate(model, train_x, train_y, config.eval_batch_size)
        valid_loss, valid_accuracy = evaluate(model, valid_x, valid_y, config.eval_batch_size)
        state["epoch_rows"].append([0, 0, 0.0, train_loss, valid_loss, valid_accuracy, spec.effective_lr(optimizer)])
        if train_metrics:
            state["train_metric_rows"].append([0, *evaluate(model, train_x, train_y, config.eval_batch_size)])

    earlier_wall_time_s = state["wall_time_s"]  # from interrupted sessions of this run

    def save() -> None:
        state["wall_time_s"] = earlier_wall_time_s + time.perf_counter() - wall_start
        if parallel is None:
            model_state, optimizer_state = model.state_dict(), optimizer.state_dict()
        else:  # gathered from every rank (FSDP shards), unwrapped names: loads into either kind of run
            model_state, optimizer_state = parallel.state_dicts(model, optimizer)
        if not writes_files:
            return
        write_csv(paths["epochs"], EPOCH_COLUMNS, state["epoch_rows"])
        write_csv(paths["iterations"], ITERATION_COLUMNS, state["iteration_rows"])
        if train_metrics:
            write_csv(paths["train_metrics"], TRAIN_METRIC_COLUMNS, state["train_metric_rows"])
        _atomic_write_file(paths["checkpoint"], lambda temporary: torch.save({
            "version": CHECKPOINT_VERSION, "method": method, "config": config.identity(), "state": state,
            "model": model_state, "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }, temporary))

    if state["status"] == "completed" and state["iteration"] < total_iterations:
        state["status"] = "running"  # resumed with more epochs than before

    # The loop: one epoch at a time, a checkpoint after each.
    from tqdm.auto import tqdm

    progress = tqdm(
        total=total_iterations, initial=min(state["iteration"], total_iterations), desc=f"{config.task} {method}",
        unit="it", leave=False,
        disable=not writes_files or not (sys.stderr.isatty() if show_progress is None else show_progress),
    )
    while state["status"] == "running" and state["iteration"] < total_iterations:
        epoch = state["epoch"] + 1
        generator = _epoch_generator(config.seed, epoch)
        order = torch.randperm(len(train_y), generator=generator).to(device)
        train_mode()
        losses, lrs = [], []
        for batch in range(iterations_per_epoch):
            if state["iteration"] >= total_iterations:
                break
            index = order[batch * config.batch_size:(batch + 1) * config.batch_size]
            x, y = train_x[index], train_y[index]
            if augment:
                x = random_crop_flip(x, 4, black, generator)
            step_start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            if parallel is None:
                loss = F.cross_entropy(model(x), y)
                loss.backward()
            else:
                rows = parallel.local_rows(len(y))
                loss = parallel.backward(model(x[rows]), y[rows], len(y))
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_value = loss.item()
            state["train_time_s"] += time.perf_counter() - step_start
            state["iteration"] += 1
            lr = spec.effective_lr(optimizer)
            losses.append(loss_value)
            lrs.append(lr)
            state["iteration_rows"].append([state["iteration"], epoch, round(state["train_time_s"], 6), loss_value, lr])
            progress.update()
            if state["iteration"] % 20 == 0:
                progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.3g}")
            if not math.isfinite(loss_value):
                state["status"] = "diverged"
                state["diverged_at_iteration"] = state["iteration"]
                break
        if state["status"] == "diverged":
            break
        eval_mode()
        valid_loss, valid_accuracy = evaluate(model, valid_x, valid_y, config.eval_batch_size)
        state["epoch_rows"].append([epoch, state["iteration"], round(state["train_time_s"], 6),
                                    sum(losses) / len(losses), valid_loss, valid_accuracy, sum(lrs) / len(lrs)])
        if train_metrics:
            state["train_metric_rows"].append([epoch, *evaluate(model, train_x, train_y, config.eval_batch_size)])
        state["epoch"] = epoch
        save()
    progress.close()
    if state["status"] == "running":
        state["status"] = "completed"
    save()

    last = state["epoch_rows"][-1]
    return MethodResult(
        method=method,
        status=state["status"],
        epochs_completed=state["epoch"],
        iterations=state["iteration"],
        final_train_loss=last[3] if state["status"] == "completed" else float("nan"),
        final_valid_loss=last[4] if state["status"] == "completed" else float("nan"),
        final_valid_accuracy=last[5] if state["status"] == "completed" else float("nan"),
        final_lr=state["iteration_rows"][-1][4] if state["iteration_rows"] else last[6],
        hypergrad_lr=hypergrad_lr,
        wall_time_s=state["wall_time_s"],
        train_time_s=state["train_time_s"],
        diverged_at_iteration=state["diverged_at_iteration"],
        epochs_csv=str(paths["epochs"]),
        iterations_csv=str(paths["iterations"]),
        optimizer_defaults={k: v for k, v in optimizer.defaults.items() if isinstance(v, (int, float, str, bool, tuple, type(None)))},
    )


# ----------------------------------------------------------------------------- several methods


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for distribution in ("torch", "numpy", "tqdm", "prodigyopt", "dadaptation", "schedulefree", "dog-optimizer"):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = None
    import hypergrad

    # The module's own version (its distribution is torch-hypergrad; "hypergrad" on PyPI is another
    # project), also right when it runs from a checkout.
    versions["hypergrad"] = hypergrad.__version__
    versions["hypergrad_path"] = str(Path(hypergrad.__file__).parent)
    return versions


def _device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch_threads": torch.get_num_threads(),
                            "platform": platform.platform(), "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["cuda_device_name"] = torch.cuda.get_device_name(device)
    return info


def summary_table(results: Sequence[MethodResult]) -> str:
    """A fixed-width table of the final numbers of each method."""
    header = f"{'method':<20} {'status':<10} {'epochs':>6} {'train loss':>11} {'valid loss':>11} {'valid acc':>9} {'final lr':>10} {'wall s':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        status = r.status if r.status != "diverged" else f"div@{r.diverged_at_iteration}"
        lines.append(
            f"{r.method:<20} {status:<10} {r.epochs_completed:>6} {r.final_train_loss:>11.4f} {r.final_valid_loss:>11.4f} "
            f"{r.final_valid_accuracy:>9.4f} {r.final_lr:>10.3g} {r.wall_time_s:>8.1f}"
        )
    return "\n".join(lines)


def run_suite(
    config: RunConfig,
    methods: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    show_progress: bool | None = None,
    print_summary: bool = True,
) -> list[MethodResult]:
    """Run ``methods`` one after another on ``config``; write ``run.json`` after each.

    Every method is checked to be available before any training starts. A diverging method is
    recorded and the suite goes on.
    """
    resolve_methods(methods)
    device = resolve_device(config.device)
    parallel = _data_parallel(config, methods, device)
    writes_files = parallel is None or parallel.writes_files
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = dataset_for(config)
    run_json = out_dir / "run.json"
    previous = json.loads(run_json.read_text()) if resume and run_json.is_file() else {}
    record: dict[str, Any] = {
        "arguments": {**config.to_dict(), "methods": list(methods), "resume": resume},
        "command": sys.argv,
        "versions": _versions(),
        "dataset": {
            "name": splits.name, "source": splits.source.kind, "files": list(splits.source.files),
            "sha256": splits.source.sha256, "train_size": len(splits.train_y), "valid_size": len(splits.valid_y),
        },
        "device": _device_info(parallel.device if parallel is not None else device),
        "processes": parallel.world_size if parallel is not None else 1,
        "methods": previous.get("methods", {}),
    }
    if writes_files:
        write_json(run_json, record)
    results = []
    for method in methods:
        result = run_method(config, method, out_dir, resume=resume, show_progress=show_progress)
        results.append(result)
        record["methods"][method] = dataclasses.asdict(result)
        if writes_files:
            write_json(run_json, record)
    if print_summary and writes_files:
        print(f"{config.task}: {TASKS[config.task].description}; results in {out_dir}")
        print(summary_table(results))
    return results
