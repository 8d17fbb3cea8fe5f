"""Runs as cache keys, the cache, the worker pool, and the paper studies' framework.

Read top to bottom: the budgets of the paper's studies in ``--quick`` and ``--full``
(:class:`SuiteBudget`), one training run of any workload as the one cache key (:class:`RunSpec`),
a run of the benchmark's kind (:func:`train`: batches drawn with replacement, through
:func:`experiments.core.training.train_steps`), a paper run read back (:class:`RunLog`), the
cache (:class:`RunCache`), the worker pool (:func:`run_pool`), and what every study gets and
returns (:class:`SuiteContext`, :class:`StudyOutput`). The studies themselves are the modules of
:mod:`experiments.paper`; the commands over the benchmark's workloads are :mod:`experiments.benchmark`.

Layout of the cache (``OUT/runs/``)::

    runs/TASK-LABEL-HASH/   a paper task's run: config.json, the runner's CSVs, done.json
    runs/NAME-HASH/result.json   any other run (the benchmark's), or a small computed result (an LR
                                 range test, a 2-D path set...)

A run folder without ``done.json`` is an interrupted run: the runner resumes it from its last
complete epoch (its checkpoint); a finished run's checkpoint is deleted to keep the cache small.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.core import runner
from experiments.core.datasets import DatasetSplits
from experiments.core.files import read_csv_columns, read_json, read_torch, write_json, write_torch
from experiments.core.methods import METHODS, MethodSettings, resolve_settings
from experiments.core.models import has_batch_norm
from experiments.core.runner import RunConfig, run_method
from experiments.core.schedules import SCHEDULES, build_schedule, schedule_identity
from experiments.core.tables import TableData
from experiments.core.training import Steps, subset_size, train_steps
from experiments.core.workloads import EVALUATIONS_PER_N, WORKLOADS, Workload, workload_data

__all__ = ["ALPHA0", "BUDGETS", "RunCache", "RunLog", "RunSpec", "StudyOutput", "SuiteBudget", "SuiteContext",
           "TaskBudget", "compact_number", "run_pool", "train"]

ALPHA0 = 1e-3
"""The paper's initial learning rate, shared by the studies that compare methods at it."""


def compact_number(value: float) -> str:
    """``1e-4`` and ``2.5e-5`` rather than ``0.0001`` and ``2.5e-05``; otherwise as ``:g`` writes it."""
    text = f"{value:g}"
    if value != 0 and ("e" in text or abs(value) < 1e-3):
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return text


# ----------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class TaskBudget:
    """How long one run of a task trains: ``epochs`` over a seeded ``train_fraction`` of the data."""

    epochs: int
    train_fraction: float = 1.0

    def describe(self, task: str) -> str:
        """``'3 epochs on 5% of the training set'`` (for titles and tables)."""
        share = "all" if self.train_fraction == 1 else f"{self.train_fraction:.0%}"
        return f"{task}: {self.epochs} epoch{'s' if self.epochs > 1 else ''} on {share} of the training set"


@dataclass(frozen=True)
class SuiteBudget:
    """Every study's budget in one mode (``quick`` or ``full``)."""

    name: str
    comparison: dict[str, TaskBudget]
    sensitivity: dict[str, TaskBudget]
    convergence: TaskBudget  # logreg
    lr_sweep: TaskBudget  # logreg
    lr_finder_iterations: int
    lr_finder_fraction: dict[str, float]
    peers: dict[str, TaskBudget]
    peer_seeds: tuple[int, ...]
    schedules: TaskBudget  # logreg; off by default (``--only schedules``)
    transfer_seeds: tuple[int, ...]  # off by default (``--only transfer``)
    comparison_seed: int = 1


BUDGETS: dict[str, SuiteBudget] = {
    # Sized for 2 CPU cores: full data for the cheap logistic regression, seeded subsets
    # of the training set (the whole validation set) for the MLP and the CNN.
    "quick": SuiteBudget(
        name="quick",
        comparison={"logreg": TaskBudget(3), "mlp": TaskBudget(6, 0.05), "cnn": TaskBudget(4, 0.02)},
        sensitivity={"logreg": TaskBudget(1), "mlp": TaskBudget(2, 0.05)},
        convergence=TaskBudget(1),
        lr_sweep=TaskBudget(5),
        lr_finder_iterations=100,
        lr_finder_fraction={"logreg": 0.25, "mlp": 0.25, "cnn": 0.25},
        peers={"logreg": TaskBudget(3), "mlp": TaskBudget(6, 0.05), "cnn": TaskBudget(4, 0.02)},
        peer_seeds=(1, 2),
        schedules=TaskBudget(5, 0.3),
        transfer_seeds=(0, 1, 2),
    ),
    # The paper's budgets (a GPU or a long night): logreg 10 epochs, mlp 100, sensitivity 50.
    "full": SuiteBudget(
        name="full",
        comparison={"logreg": TaskBudget(10), "mlp": TaskBudget(100), "cnn": TaskBudget(100)},
        sensitivity={"logreg": TaskBudget(50), "mlp": TaskBudget(50)},
        convergence=TaskBudget(50),
        lr_sweep=TaskBudget(30),
        lr_finder_iterations=300,
        lr_finder_fraction={"logreg": 1.0, "mlp": 1.0, "cnn": 1.0},
        peers={"logreg": TaskBudget(10), "mlp": TaskBudget(100), "cnn": TaskBudget(100)},
        peer_seeds=(1, 2, 3),
        schedules=TaskBudget(10),
        transfer_seeds=(0, 1, 2),
    ),
}


# ----------------------------------------------------------------------------- one run


def _data(workload: str, mode: str, data_dir: str | None) -> DatasetSplits | TableData:
    """The workload's data as its runs read them (once per process): a paper task's through the runner."""
    if WORKLOADS[workload].suite == "paper":
        return runner.dataset_for(RunConfig(task=workload, data_dir=data_dir))
    return workload_data(workload, mode, data_dir)


@functools.lru_cache(maxsize=16)
def _has_batch_norm(workload: str, mode: str, data_dir: str | None) -> bool:
    """Whether the workload's model has batch norm (built once; the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        return has_batch_norm(WORKLOADS[workload].model(_data(workload, mode, data_dir), mode))


@dataclass(frozen=True)
class RunSpec:
    """One training run of a workload of :data:`workloads.WORKLOADS`, and the only cache key:
    :meth:`identity` determines its numbers, and its folder is ``runs/NAME-HASH/``.

    ``settings`` are resolved from the named ``configuration`` (:meth:`resolved`, :meth:`paper`);
    the key holds the resolved numbers, the workload's identity in ``mode`` and its data's SHA-256,
    so two names resolving to the same settings share a run. The budget is ``steps``; a paper
    task's run (the runner's: epochs of a fresh permutation of a seeded ``train_fraction`` of the
    data, CSVs per step and per epoch) evaluates every ``eval_every`` steps, an epoch; a run of the
    other workloads (batches drawn with replacement, :func:`train`) evaluates as its workload says
    (``eval_every=None``). ``keyed_schedule=False``: a run of the ``sensitivity`` command, whose keys
    never held a schedule (it has none), so that its cache stays valid.
    """

    name: str
    workload: str
    mode: str
    method: str
    configuration: str
    settings: MethodSettings
    seed: int
    steps: int
    schedule: str | None = None
    eval_every: int | None = None
    train_fraction: float = 1.0
    train_metrics: bool = False
    keyed_schedule: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be None or one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule is not None and not self.keyed_schedule:
            raise ValueError(f"schedule {self.schedule!r} needs keyed_schedule=True")
        if self.schedule == "hypergrad_cosine" and self.settings.hypergrad_lr is None:
            raise ValueError(f"schedule 'hypergrad_cosine' needs an HD method, got {self.method!r}")
        if (WORKLOADS[self.workload].suite == "paper") != (self.eval_every is not None):
            raise ValueError(f"eval_every must be given for a paper task's run and only for it, got {self.eval_every!r} "
                             f"for {self.workload!r}")
        if self.eval_every is not None:
            self.run_config()  # validates the remaining fields with the runner's messages
        elif self.train_fraction != 1.0 or self.train_metrics:
            raise ValueError(f"train_fraction and train_metrics are for paper tasks only, not {self.workload!r}")

    @classmethod
    def resolved(cls, name: str, workload: str, mode: str, method: str, configuration: str, seed: int, steps: int,
                 data_dir: str | None, *, schedule: str | None = None, keyed_schedule: bool = True,
                 lr: float | None = None, hypergrad_lr: float | None = None) -> RunSpec:
        """A run of ``steps`` steps with ``configuration``'s settings for ``method`` on ``workload``
        (``lr`` and ``hypergrad_lr``, when given, replace its defaults); batch norm is read from the model."""
        batch_norm = _has_batch_norm(workload, mode, data_dir)
        settings = resolve_settings(method, configuration, workload, batch_norm, lr=lr, hypergrad_lr=hypergrad_lr)
        return cls(name, workload, mode, method, configuration, settings, seed, steps, schedule,
                   keyed_schedule=keyed_schedule)

    @classmethod
    def paper(cls, task: str, method: str, budget: TaskBudget, mode: str, data_dir: str | None = None, *,
              lr: float = ALPHA0, hypergrad_lr: float | None = None, seed: int = 1, schedule: str | None = None,
              train_metrics: bool = False) -> RunSpec:
        """A paper task's run under the ``paper`` configuration for ``budget``: its epochs as steps
        (an epoch: the batches of the seeded ``train_fraction`` of the training set); the peers,
        which keep their own lr, get lr 1.0 ("not used")."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        examples = len(_data(task, mode, data_dir).train_y)
        per_epoch = math.ceil(subset_size(examples, budget.train_fraction) / WORKLOADS[task].batch_size[mode])
        settings = resolve_settings(method, "paper", task, _has_batch_norm(task, mode, data_dir), lr=lr if METHODS[method].uses_alpha0 else 1.0,
                                    hypergrad_lr=hypergrad_lr)
        label = f"{method}_{schedule}" if schedule else method
        return cls(f"{task}-{label}", task, mode, method, "paper", settings, seed, budget.epochs * per_epoch, schedule,
                   per_epoch, budget.train_fraction, train_metrics)

    @property
    def lr(self) -> float:
        return self.settings.lr

    @property
    def hypergrad_lr(self) -> float | None:
        return self.settings.hypergrad_lr

    @property
    def label(self) -> str:
        """The name plots use: the method, with the schedule appended (``sgdn_cosine``)."""
        return f"{self.method}_{self.schedule}" if self.schedule else self.method

    def settings_text(self) -> str:
        """``'batch 128, weight decay 1e-4, seed 1'``: the run's fixed settings, for titles and tables."""
        return (f"batch {WORKLOADS[self.workload].batch_size[self.mode]}, weight decay "
                f"{compact_number(self.settings.weight_decay)}, seed {self.seed}")

    def identity(self, data_dir: str | None) -> dict[str, Any]:
        """The cache key: what determines the run's numbers (with the SHA-256 of its data)."""
        sha256 = _data(self.workload, self.mode, data_dir).source.sha256
        identity = {"workload": WORKLOADS[self.workload].identity(self.mode), "sha256": sha256, "method": self.method,
                    "settings": dataclasses.asdict(self.settings), "seed": self.seed, "steps": self.steps}
        if self.keyed_schedule:
            identity["schedule"] = schedule_identity(self.schedule)
        if self.eval_every is not None:
            identity.update(eval_every=self.eval_every, train_fraction=self.train_fraction,
                            train_metrics=self.train_metrics)
        return identity

    def run_config(self, data_dir: str | None = None, device: str = "auto") -> RunConfig:
        """The runner's configuration for a paper task's run (``steps`` is a whole number of epochs)."""
        return RunConfig(
            task=self.workload, epochs=self.steps // self.eval_every, lr=self.settings.lr,
            hypergrad_lr=self.settings.hypergrad_lr, weight_decay=self.settings.weight_decay,
            batch_size=WORKLOADS[self.workload].batch_size[self.mode], seed=self.seed, device=device,
            data_dir=data_dir, train_fraction=self.train_fraction,
            lr_scheduler=functools.partial(build_schedule, self.schedule) if self.schedule else None,
        )


def train(workload: Workload, data: TableData, mode: str, method: str, settings: MethodSettings, seed: int,
          steps: int, schedule: Callable[[torch.optim.Optimizer, int], object] | None = None) -> dict:
    """Train ``workload``'s model with ``methods.METHODS[method]`` built with ``settings`` for
    ``steps`` steps of batches drawn with replacement (``schedule(optimizer, steps)``: a scheduler
    stepped after each step), through :func:`experiments.core.training.train_steps`.

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
                lambda number: workload.sample(data, mode, generator),
                lambda x, y: workload.loss(model(x), y), train_eval_modes=entry.has_train_eval_modes,
                batch_norm_data=batch_norm)
    curve = {"steps": [], "metric": [], "time_s": []}
    losses = []

    def evaluate(number: int, spent: float) -> bool:
        value, loss = workload.validate(model, data)
        curve["steps"].append(number)
        curve["metric"].append(value)
        curve["time_s"].append(spent)
        losses.append(loss)
        return not math.isfinite(value)

    every = max(1, workload.steps[mode] // EVALUATIONS_PER_N[mode])
    diverged = train_steps(run, steps, eval_every=every, evaluate=evaluate).diverged
    final = None if diverged else curve["metric"][-1]
    final_loss = None if diverged or not math.isfinite(losses[-1]) else losses[-1]
    return {**curve, "diverged": diverged, "final_metric": final, "final_loss": final_loss}


@dataclass(frozen=True)
class RunLog:
    """A finished run as read back from its folder."""

    spec: RunSpec
    epochs: dict[str, np.ndarray]
    iterations: dict[str, np.ndarray]
    train_metrics: dict[str, np.ndarray] | None
    result: dict[str, Any]

    @property
    def diverged(self) -> bool:
        return self.result["status"] == "diverged"

    @property
    def final_train_loss(self) -> float:
        """Mean minibatch loss of the last epoch (NaN when the run diverged)."""
        return math.nan if self.diverged else float(self.epochs["train_loss"][-1])

    @property
    def final_valid_loss(self) -> float:
        return math.nan if self.diverged else float(self.epochs["valid_loss"][-1])

    @property
    def final_valid_accuracy(self) -> float:
        return math.nan if self.diverged else float(self.epochs["valid_accuracy"][-1])


DONE_FILE = "done.json"


@dataclass
class RunCache:
    """Training runs keyed by their :class:`RunSpec`, under ``root/runs/``.

    :meth:`fetch` gives any spec's run, trained or read back. A paper task's run is a folder of the
    runner's files: ``train(spec)`` trains it (or resumes it if an earlier session was
    interrupted) and marks it done, ``read(spec)`` reads it back; any other run is a
    ``result.json`` of :func:`train`. ``trained`` and ``reused`` count runs and small cached
    results (:meth:`cached_json`) that were computed or found.
    """

    root: Path
    data_dir: str | None = None
    device: str = "auto"
    show_progress: bool | None = None
    trained: int = 0
    reused: int = 0

    def folder(self, spec: RunSpec) -> Path:
        return Path(self.root) / "runs" / f"{spec.name}-{_digest(spec.identity(self.data_dir))}"

    def fetch(self, spec: RunSpec) -> RunLog | dict:
        """``spec``'s run, trained or read back: a paper task's as its :class:`RunLog`, any other as
        :func:`train`'s result."""
        if spec.eval_every is not None:
            if not self.is_done(spec):
                self.train(spec)
            return self.read(spec)
        data = workload_data(spec.workload, spec.mode, self.data_dir)
        return self.cached_json(spec.name, spec.identity(self.data_dir), lambda: train(
            WORKLOADS[spec.workload], data, spec.mode, spec.method, spec.settings, spec.seed, spec.steps,
            None if spec.schedule is None else (  # no epochs: a run of ``steps`` steps
                lambda optimizer, steps: build_schedule(spec.schedule, optimizer, steps, steps))))

    def is_done(self, spec: RunSpec) -> bool:
        return (self.folder(spec) / DONE_FILE).is_file()

    def train(self, spec: RunSpec) -> None:
        """Train (or resume) ``spec``'s run and mark it done; its checkpoint is then deleted."""
        folder = self.folder(spec)
        write_json(folder / "config.json", {"spec": dataclasses.asdict(spec), "identity": spec.identity(self.data_dir)})
        result = run_method(spec.run_config(self.data_dir, self.device), spec.method, folder, resume=True,
                            show_progress=self.show_progress, train_metrics=spec.train_metrics)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        write_json(folder / DONE_FILE, dataclasses.asdict(result))

    def read(self, spec: RunSpec) -> RunLog:
        """The finished run of ``spec``."""
        folder = self.folder(spec)
        metrics = folder / f"{spec.method}.train_metrics.csv"
        return RunLog(
            spec=spec,
            epochs=read_csv_columns(folder / f"{spec.method}.epochs.csv"),
            iterations=read_csv_columns(folder / f"{spec.method}.iterations.csv"),
            train_metrics=read_csv_columns(metrics) if spec.train_metrics else None,
            result=read_json(folder / DONE_FILE, keys=("status",)),
        )

    def cached_json(self, name: str, identity: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """A small computed result (an LR range test, a set of 2-D paths...) cached under
        ``runs/NAME-HASH/result.json``; HASH is that of ``identity``, which the file records too."""
        return self._cached(name, identity, compute, "result.json", save=write_json,
                            load=lambda path: read_json(path, keys=("result",)))

    def cached_tensors(self, name: str, identity: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """Like :meth:`cached_json` for a result holding tensors (``runs/NAME-HASH/result.pt``)."""
        return self._cached(name, identity, compute, "result.pt",
                            save=write_torch, load=lambda path: read_torch(path, weights_only=True))

    def _cached(self, name: str, identity: dict[str, Any], compute: Callable[[], Any], file_name: str,
                save: Callable[[Path, Any], Any], load: Callable[[Path], Any]) -> Any:
        """``compute()``'s result, saved as ``{"identity": ..., "result": ...}`` in ``runs/NAME-HASH/FILE_NAME``
        the first time and loaded from there afterwards."""
        path = Path(self.root) / "runs" / f"{name}-{_digest(identity)}" / file_name
        if path.is_file():
            self.reused += 1
            return load(path)["result"]
        result = compute()
        save(path, {"identity": identity, "result": result})
        self.trained += 1
        return result


def _digest(identity: dict[str, Any]) -> str:
    """The hash of a cache key (stable across processes)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def run_pool(run: Callable, common: tuple, jobs: Sequence, workers: int, done: Callable[[object, dict], None]) -> None:
    """``done(job, run(*common, job))`` for every job, in order, ``workers`` runs at a time in worker
    processes (one torch thread each; ``run`` must be a module-level function)."""
    if workers == 1:
        for job in jobs:
            done(job, run(*common, job))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {pool.submit(run, *common, job): job for job in jobs}
        for future in futures:  # in submission order; the pool works ahead
            done(futures[future], future.result())


# ----------------------------------------------------------------------------- studies


@dataclass
class SuiteContext:
    """What every study gets: the cache, the budgets, where to write, and progress reporting."""

    cache: RunCache
    budget: SuiteBudget
    out_dir: Path
    command: str
    progress: Callable[[str], None] = print
    written: list[Path] = field(default_factory=list)

    jobs: int = 1

    def spec(self, task: str, method: str, budget: TaskBudget, **fields) -> RunSpec:
        """A paper task's run for ``budget`` in this suite's mode (:meth:`RunSpec.paper`)."""
        return RunSpec.paper(task, method, budget, self.budget.name, self.cache.data_dir, **fields)

    def get_all(self, specs: Sequence[RunSpec], what: str) -> list[RunLog]:
        """Fetch (train or reuse) ``specs``, with a progress bar over the runs.

        With ``jobs > 1`` the missing runs train in that many worker processes, one torch
        thread each (runs are independent; each writes only its own folder)."""
        from tqdm.auto import tqdm

        unique = list(dict.fromkeys(specs))
        missing = [spec for spec in unique if not self.cache.is_done(spec)]
        bar = tqdm(total=len(unique), desc=what, unit="run", leave=False, disable=not sys.stderr.isatty())
        bar.update(len(unique) - len(missing))

        def done(spec: RunSpec, result: None) -> None:
            self.cache.trained += 1
            bar.update()

        workers = self.jobs if len(missing) > 1 else 1
        worker_cache = dataclasses.replace(self.cache, show_progress=False) if workers > 1 else self.cache
        run_pool(worker_cache.train, (), missing, workers, done)
        bar.close()
        self.cache.reused += len(specs) - len(missing)
        return [self.cache.read(spec) for spec in specs]


@dataclass(frozen=True)
class StudyOutput:
    """A study's files and its Markdown section of ``summary.md``."""

    files: list[Path]
    summary: str


