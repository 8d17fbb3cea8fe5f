"""Train one task with one or several methods and write the logs that plots and tables use.

Read top to bottom: the configuration (:class:`RunConfig`), the run's state and objects
(:class:`RunState`, :class:`Training`), the pieces of one run (start, checkpoint load and save,
one epoch, the result), the training loop that strings them together (:func:`run_method`), and the
suite around it (:func:`run_suite`: several methods, ``run.json`` and a summary table). The
``reproduce`` command calls :func:`run_method` with per-run overrides
(``run_method(config, "sgd_hd", out, lr=1e-2, max_iterations=500)``).

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

import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from experiments.core.config import MethodResult, RunConfig, resolve_device
from experiments.core.datasets import DATASETS, DatasetSplits
from experiments.core.files import read_json, read_torch, write_csv, write_json, write_torch
from experiments.core.methods import Method, MethodSettings, resolve_hypergrad_lr, resolve_methods
from experiments.core.models import has_batch_norm
from experiments.core.training import (
    Steps,
    cached_dataset,
    epoch_generator,
    evaluate,
    random_crop_flip,
    train_steps,
    training_subset,
)
from experiments.core.workloads import WORKLOADS

__all__ = ["EPOCH_COLUMNS", "ITERATION_COLUMNS", "MethodResult", "RunConfig", "RunState", "dataset_for", "run_method",
           "run_suite"]

EPOCH_COLUMNS = ("epoch", "iteration", "time_s", "train_loss", "valid_loss", "valid_accuracy", "lr")
ITERATION_COLUMNS = ("iteration", "epoch", "time_s", "loss", "lr")
TRAIN_METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy")
CHECKPOINT_VERSION = 1
CHECKPOINT_KEYS = {"version", "method", "config", "state", "model", "optimizer", "scheduler", "rng_cpu", "rng_cuda"}

# ----------------------------------------------------------------------------- one method


def _data_parallel(config: RunConfig, methods: Sequence[str], device: torch.device):
    """This process's :class:`experiments.core.parallel.DataParallel` (joining the torchrun run),
    or None for a one-process run."""
    if config.distributed is None:
        return None
    from experiments.core.parallel import NOT_SHARDABLE, data_parallel

    unshardable = [method for method in methods if method in NOT_SHARDABLE]
    if config.distributed == "fsdp" and unshardable:
        raise ValueError(
            f"method(s) {unshardable} cannot run with distributed='fsdp': their step takes norms over "
            "all parameters without reducing them across ranks; use distributed='ddp'"
        )
    return data_parallel(config.distributed, device)


def dataset_for(config: RunConfig) -> DatasetSplits:
    """The task's dataset, loaded once per process."""
    return cached_dataset(WORKLOADS[config.task].dataset, config.data_dir, config.download)


@dataclass
class RunState:
    """Where a run stands; saved in its checkpoint after every epoch (as a dict)."""

    epoch: int = 0
    iteration: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    status: str = "running"  # running, completed or diverged
    diverged_at_iteration: int | None = None
    epoch_rows: list[list] = field(default_factory=list)
    iteration_rows: list[list] = field(default_factory=list)
    train_metric_rows: list[list] = field(default_factory=list)


@dataclass(frozen=True)
class RunPaths:
    """The files of one method's run under its output folder."""

    epochs: Path
    iterations: Path
    train_metrics: Path
    checkpoint: Path

    @classmethod
    def of(cls, out_dir: Path, method: str) -> RunPaths:
        return cls(out_dir / f"{method}.epochs.csv", out_dir / f"{method}.iterations.csv",
                   out_dir / f"{method}.train_metrics.csv", out_dir / "checkpoints" / f"{method}.pt")


@dataclass
class Training:
    """What one run trains with: data on the device, the model, its optimizer and scheduler, and
    the step-counted run over them (``loop``) that :func:`experiments.core.training.train_steps` drives."""

    config: RunConfig
    method: Method
    device: torch.device
    parallel: Any  # experiments.core.parallel.DataParallel, or None for one process
    train_x: torch.Tensor
    train_y: torch.Tensor
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    augment_fill: torch.Tensor | None  # per-channel black after normalisation; None: no augmentation
    model: nn.Module
    optimizer: Optimizer
    scheduler: Any
    iterations_per_epoch: int
    total_iterations: int
    loop: Steps = field(init=False)

    def __post_init__(self) -> None:
        self.loop = Steps(
            self.model, self.optimizer, self.scheduler, _batches(self),
            lambda x, y: WORKLOADS[self.config.task].loss(self.model(x), y),
            backward=None if self.parallel is None else self._parallel_backward,
            train_eval_modes=self.method.has_train_eval_modes,
            batch_norm_data=(self.train_x, self.config.batch_size) if has_batch_norm(self.model) else None,
            lr=lambda: self.method.effective_lr(self.optimizer), amp=self.config.amp)

    def _parallel_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rows = self.parallel.local_rows(len(y))
        with self.loop.autocast():
            output = self.model(x[rows])
        return self.parallel.backward(output, y[rows], len(y))

    @property
    def writes_files(self) -> bool:
        return self.parallel is None or self.parallel.writes_files

    def evaluate(self, train: bool) -> tuple[float, float]:
        """Loss and accuracy over the whole training (``train``) or validation set."""
        x, y = (self.train_x, self.train_y) if train else (self.valid_x, self.valid_y)
        return evaluate(self.model, x, y, self.config.eval_batch_size)


def _start(config: RunConfig, method: Method) -> Training:
    """Data, model (the same initial weights for every method: seeded here), optimizer, scheduler."""
    device = resolve_device(config.device)
    parallel = _data_parallel(config, [method.name], device)
    if parallel is not None:
        device = parallel.device
    splits = dataset_for(config)
    train_x, train_y = (t.to(device) for t in training_subset(splits, config.train_fraction, config.seed))
    valid_x, valid_y = splits.valid_x.to(device), splits.valid_y.to(device)
    iterations_per_epoch = math.ceil(len(train_y) / config.batch_size)
    total_iterations = config.epochs * iterations_per_epoch
    if config.max_iterations is not None:
        total_iterations = min(total_iterations, config.max_iterations)
    fill = None
    if config.task == "vgg":
        info = DATASETS[splits.name]
        fill = torch.tensor([-m / s for m, s in zip(info.mean, info.std)], device=device)
    torch.manual_seed(config.seed)
    model = WORKLOADS[config.task].model(splits, "full").to(device)
    if parallel is not None:
        model = parallel.wrap(model)
    settings = MethodSettings(config.lr, resolve_hypergrad_lr(method.name, config.task, config.hypergrad_lr),
                              config.weight_decay, has_batch_norm(model))
    optimizer = method.build(method.parameters(model), settings)
    scheduler = config.lr_scheduler(optimizer, iterations_per_epoch, total_iterations) if config.lr_scheduler else None
    return Training(config, method, device, parallel, train_x, train_y, valid_x, valid_y, fill, model, optimizer,
                    scheduler, iterations_per_epoch, total_iterations)


def _fresh_state(run: Training, paths: RunPaths, train_metrics: bool) -> RunState:
    """A new run: old files removed, row 0 evaluated before any training."""
    for path in dataclasses.astuple(paths) if run.writes_files else ():
        path.unlink(missing_ok=True)
    state = RunState()
    run.loop.eval_mode()
    train_loss, _ = run.evaluate(train=True)
    valid_loss, valid_accuracy = run.evaluate(train=False)
    state.epoch_rows.append([0, 0, 0.0, train_loss, valid_loss, valid_accuracy, run.method.effective_lr(run.optimizer)])
    if train_metrics:
        state.train_metric_rows.append([0, *run.evaluate(train=True)])
    return state


def _load_checkpoint(run: Training, path: Path) -> RunState:
    """Restore model, optimizer, scheduler and RNG states from the last complete epoch."""
    # On the CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest. Only
    # tensors and plain data are read (weights_only): a crafted file in a run folder cannot run code.
    try:
        checkpoint = read_torch(path, weights_only=True)
    except ValueError as error:
        raise ValueError(f"cannot resume: {error} (delete it to start the run afresh)") from None
    if not (isinstance(checkpoint, dict) and CHECKPOINT_KEYS <= checkpoint.keys()):
        raise ValueError(f"{path} is not a checkpoint of this runner (delete it to start the run afresh)")
    identity = run.config.identity()
    if checkpoint["config"] != identity or checkpoint["method"] != run.method.name:
        raise ValueError(f"cannot resume {path}: it was made with {checkpoint['config']} for "
                         f"{checkpoint['method']!r}, now {identity} for {run.method.name!r}")
    if run.parallel is None:
        run.model.load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
    else:
        run.parallel.load_state_dicts(run.model, run.optimizer, checkpoint["model"], checkpoint["optimizer"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["rng_cpu"])
    if run.device.type == "cuda" and checkpoint["rng_cuda"] is not None:
        torch.cuda.set_rng_state(checkpoint["rng_cuda"], run.device)
    return RunState(**checkpoint["state"])


def _save(run: Training, state: RunState, paths: RunPaths, train_metrics: bool) -> None:
    """The CSVs so far and a checkpoint to resume from (every rank takes part in gathering)."""
    if run.parallel is None:
        model_state, optimizer_state = run.model.state_dict(), run.optimizer.state_dict()
    else:  # gathered from every rank (FSDP shards), unwrapped names: loads into either kind of run
        model_state, optimizer_state = run.parallel.state_dicts(run.model, run.optimizer)
    if not run.writes_files:
        return
    write_csv(paths.epochs, EPOCH_COLUMNS, state.epoch_rows)
    write_csv(paths.iterations, ITERATION_COLUMNS, state.iteration_rows)
    if train_metrics:
        write_csv(paths.train_metrics, TRAIN_METRIC_COLUMNS, state.train_metric_rows)
    checkpoint = {
        "version": CHECKPOINT_VERSION, "method": run.method.name, "config": run.config.identity(),
        "state": dataclasses.asdict(state), "model": model_state, "optimizer": optimizer_state,
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
    }
    write_torch(paths.checkpoint, checkpoint)


def _batches(run: Training):
    """``number -> (x, y)``: step ``number``'s batch, epoch ``e``'s order (and augmentation) drawn
    from ``epoch_generator(seed, e)``; the last batch of an epoch may be smaller."""
    size, current = run.config.batch_size, {}

    def batch(number: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = divmod(number - 1, run.iterations_per_epoch)
        if current.get("epoch") != epoch + 1:
            generator = epoch_generator(run.config.seed, epoch + 1)
            order = torch.randperm(len(run.train_y), generator=generator).to(run.device)
            current.update(epoch=epoch + 1, generator=generator, order=order)
        rows = current["order"][index * size:(index + 1) * size]
        x, y = run.train_x[rows], run.train_y[rows]
        if run.augment_fill is not None:
            x = random_crop_flip(x, 4, run.augment_fill, current["generator"])
        return x, y

    return batch


def _train(run: Training, state: RunState, paths: RunPaths, train_metrics: bool, progress: str | None,
           save_wall_time) -> None:
    """The run's remaining steps through :func:`train_steps`: a row per step, an evaluation row
    and a checkpoint after every epoch (and after the last, possibly partial one)."""
    losses, lrs = [], []

    def on_step(number: int, loss: float, lr: float, spent: float) -> None:
        state.iteration, state.train_time_s = number, spent
        losses.append(loss)
        lrs.append(lr)
        state.iteration_rows.append([number, state.epoch + 1, round(spent, 6), loss, lr])

    def evaluate_epoch(number: int, spent: float) -> bool:
        valid_loss, valid_accuracy = run.evaluate(train=False)
        state.epoch_rows.append([state.epoch + 1, number, round(spent, 6), sum(losses) / len(losses),
                                 valid_loss, valid_accuracy, sum(lrs) / len(lrs)])
        if train_metrics:
            state.train_metric_rows.append([state.epoch + 1, *run.evaluate(train=True)])
        state.epoch += 1
        losses.clear()
        lrs.clear()
        return False

    def checkpoint(number: int, spent: float) -> None:
        save_wall_time()
        _save(run, state, paths, train_metrics)

    outcome = train_steps(run.loop, run.total_iterations, eval_every=run.iterations_per_epoch,
                          evaluate=evaluate_epoch, start=state.iteration, spent=state.train_time_s, on_step=on_step,
                          checkpoint=checkpoint, progress=progress, clock=time.perf_counter)
    if outcome.diverged:
        state.status, state.diverged_at_iteration = "diverged", state.iteration


def _result(run: Training, state: RunState, paths: RunPaths) -> MethodResult:
    last = state.epoch_rows[-1]
    completed = state.status == "completed"
    return MethodResult(
        method=run.method.name, status=state.status, epochs_completed=state.epoch, iterations=state.iteration,
        final_train_loss=last[3] if completed else float("nan"),
        final_valid_loss=last[4] if completed else float("nan"),
        final_valid_accuracy=last[5] if completed else float("nan"),
        final_lr=state.iteration_rows[-1][4] if state.iteration_rows else last[6],
        hypergrad_lr=resolve_hypergrad_lr(run.method.name, run.config.task, run.config.hypergrad_lr),
        wall_time_s=state.wall_time_s, train_time_s=state.train_time_s,
        diverged_at_iteration=state.diverged_at_iteration,
        epochs_csv=str(paths.epochs), iterations_csv=str(paths.iterations),
        optimizer_defaults={k: v for k, v in run.optimizer.defaults.items()
                            if isinstance(v, (int, float, str, bool, tuple, type(None)))},
    )


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
    paths = RunPaths.of(Path(out_dir), method)
    wall_start = time.perf_counter()
    run = _start(config, spec)
    if resume and paths.checkpoint.is_file():
        state = _load_checkpoint(run, paths.checkpoint)
    else:
        state = _fresh_state(run, paths, train_metrics)
    earlier_wall_time_s = state.wall_time_s  # from interrupted sessions of this run
    if state.status == "completed" and state.iteration < run.total_iterations:
        state.status = "running"  # resumed with more epochs than before

    show = run.writes_files and (sys.stderr.isatty() if show_progress is None else show_progress)

    def save_wall_time() -> None:
        state.wall_time_s = earlier_wall_time_s + time.perf_counter() - wall_start

    if state.status == "running":  # a checkpoint after each epoch
        _train(run, state, paths, train_metrics, f"{config.task} {method}" if show else None, save_wall_time)
    if state.status == "running":
        state.status = "completed"
    save_wall_time()
    _save(run, state, paths, train_metrics)
    return _result(run, state, paths)


# ----------------------------------------------------------------------------- several methods


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for distribution in ("torch", "numpy", "tqdm", "prodigyopt", "dadaptation", "schedulefree", "dog-optimizer",
                         "mechanic-pytorch"):
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
    previous = read_json(run_json, keys=("methods",)) if resume and run_json.is_file() else {}
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
        print(f"{config.task}: {WORKLOADS[config.task].description}; results in {out_dir}")
        print(summary_table(results))
    return results
