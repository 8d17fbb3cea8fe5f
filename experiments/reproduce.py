"""``python -m experiments reproduce``: the paper's comparison figures and the learning-rate pictures.

Read top to bottom: the budgets of ``--quick`` and ``--full`` (:class:`SuiteBudget`), one
training run as a cache key (:class:`RunSpec`), the cache of finished runs (:class:`RunCache`),
and the command (:func:`reproduce`). The studies themselves live in :mod:`experiments.studies`,
one module each; every study plans its runs, asks the cache for them, and draws its figure and
its section of ``summary.md`` from the CSVs alone, so a figure can be restyled without retraining.

Layout of the output folder (default ``results/``)::

    runs/TASK-METHOD-HASH/   one training run: config.json, the runner's CSVs, done.json
    runs/lr_finder-TASK-HASH/result.json   one LR range test
    summary/STUDY.md         each study's section of summary.md
    *.png, *.pdf, summary.md the figures and the table of the numbers behind them

A run folder without ``done.json`` is an interrupted run: the runner resumes it from its last
complete epoch (its checkpoint); a finished run's checkpoint is deleted to keep the cache small.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.methods import METHODS, default_hypergrad_lr
from experiments.runner import RunConfig, run_method, write_json, write_text

__all__ = [
    "BUDGETS",
    "RunCache",
    "RunLog",
    "RunSpec",
    "STUDY_NAMES",
    "StudyOutput",
    "SuiteBudget",
    "SuiteContext",
    "TaskBudget",
    "reproduce",
]

SCHEDULES = ("step", "exp", "cosine", "onecycle")
"""Learning-rate schedules a run can use (see :func:`build_schedule`)."""


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
    ),
}


# ----------------------------------------------------------------------------- one run


def build_schedule(name: str, optimizer: torch.optim.Optimizer, iterations_per_epoch: int, total_iterations: int):
    """A per-iteration learning-rate schedule over the whole run, starting from the optimizer's lr.

    * ``step``: divide by 10 at 50% and 75% of the run (the classic step decay).
    * ``exp``: exponential decay to 1% of the initial lr at the end of the run.
    * ``cosine``: cosine annealing to 0 over the run.
    * ``onecycle``: ``OneCycleLR`` with the initial lr as its peak (warm-up over the first 30%).
    """
    total = max(total_iterations, 1)
    if name == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, [total // 2, (3 * total) // 4], gamma=0.1)
    if name == "exp":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.01 ** (1 / total))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if name == "onecycle":
        peak = float(optimizer.param_groups[0]["lr"])
        # OneCycleLR steps once past the end in our loop's last iteration; one spare step avoids its error.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total + 1)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run; its hash names the run's cache folder.

    ``hypergrad_lr`` is resolved on construction (the task's default beta for HD methods, None for
    the others) so that an explicit default and an implicit one share a cache entry.
    """

    task: str
    method: str
    epochs: int
    lr: float = 1e-3
    hypergrad_lr: float | None = None
    seed: int = 1
    train_fraction: float = 1.0
    schedule: str | None = None
    train_metrics: bool = False
    batch_size: int = 128
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be None or one of {SCHEDULES}, got {self.schedule!r}")
        if METHODS[self.method].hypergradient is None:
            object.__setattr__(self, "hypergrad_lr", None)
        elif self.hypergrad_lr is None:
            object.__setattr__(self, "hypergrad_lr", default_hypergrad_lr(self.method, self.task))
        if not METHODS[self.method].uses_alpha0:
            object.__setattr__(self, "lr", 1.0)  # the peers keep their own lr; 1.0 marks "not used"
        self.run_config()  # validates the remaining fields with the runner's messages

    @classmethod
    def budgeted(cls, task: str, method: str, budget: TaskBudget, **fields) -> RunSpec:
        """A spec that trains for ``budget``."""
        return cls(task=task, method=method, epochs=budget.epochs, train_fraction=budget.train_fraction, **fields)

    @property
    def label(self) -> str:
        """The name plots use: the method, with the schedule appended (``sgdn_cosine``)."""
        return f"{self.method}_{self.schedule}" if self.schedule else self.method

    def key(self) -> str:
        """Folder name: readable prefix plus a hash of every field (stable across processes)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return f"{self.task}-{self.label}-{digest}"

    def run_config(self, data_dir: str | None = None, device: str = "auto") -> RunConfig:
        """The runner's configuration for this run."""
        return RunConfig(
            task=self.task, epochs=self.epochs, lr=self.lr, hypergrad_lr=self.hypergrad_lr,
            weight_decay=self.weight_decay, batch_size=self.batch_size, seed=self.seed, device=device,
            data_dir=data_dir, train_fraction=self.train_fraction,
            lr_scheduler=functools.partial(build_schedule, self.schedule) if self.schedule else None,
        )


def read_csv_columns(path: Path) -> dict[str, np.ndarray]:
    """A CSV of numbers as ``{column: float array}`` (empty cells are NaN)."""
    lines = path.read_text().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty CSV")
    columns = lines[0].split(",")
    rows = [[float(cell) if cell not in ("", "None") else math.nan for cell in line.split(",")] for line in lines[1:]]
    values = np.array(rows, dtype=float).reshape(len(rows), len(columns))
    return {name: values[:, i] for i, name in enumerate(columns)}


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

    ``get(spec)`` returns the finished run, training it first if it is not in the cache (or
    resuming it if an earlier session was interrupted). ``trained`` and ``reused`` count both cases.
    """

    root: Path
    data_dir: str | None = None
    device: str = "auto"
    show_progress: bool | None = None
    trained: int = 0
    reused: int = 0

    def folder(self, spec: RunSpec) -> Path:
        return Path(self.root) / "runs" / spec.key()

    def is_done(self, spec: RunSpec) -> bool:
        return (self.folder(spec) / DONE_FILE).is_file()

    def train(self, spec: RunSpec) -> None:
        """Train (or resume) ``spec``'s run and mark it done; its checkpoint is then deleted."""
        folder = self.folder(spec)
        write_json(folder / "config.json", dataclasses.asdict(spec))
        result = run_method(spec.run_config(self.data_dir, self.device), spec.method, folder, resume=True,
                            show_progress=self.show_progress, train_metrics=spec.train_metrics)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        write_json(folder / DONE_FILE, dataclasses.asdict(result))

    def get(self, spec: RunSpec) -> RunLog:
        """The finished run of ``spec``, trained first if needed."""
        if self.is_done(spec):
            self.reused += 1
        else:
            self.train(spec)
            self.trained += 1
        return self.read(spec)

    def read(self, spec: RunSpec) -> RunLog:
        folder = self.folder(spec)
        metrics = folder / f"{spec.method}.train_metrics.csv"
        return RunLog(
            spec=spec,
            epochs=read_csv_columns(folder / f"{spec.method}.epochs.csv"),
            iterations=read_csv_columns(folder / f"{spec.method}.iterations.csv"),
            train_metrics=read_csv_columns(metrics) if spec.train_metrics else None,
            result=json.loads((folder / DONE_FILE).read_text()),
        )

    def cached_json(self, name: str, identity: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A small computed result (e.g. an LR range test) cached under ``runs/NAME-HASH/result.json``."""
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        path = self.root / "runs" / f"{name}-{digest}" / "result.json"
        if path.is_file():
            self.reused += 1
            return json.loads(path.read_text())["result"]
        result = compute()
        write_json(path, {"identity": identity, "result": result})
        self.trained += 1
        return result


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

    def get_all(self, specs: Sequence[RunSpec], what: str) -> list[RunLog]:
        """Fetch (train or reuse) ``specs``, with a progress bar over the runs.

        With ``jobs > 1`` the missing runs train in that many worker processes, one torch
        thread each (runs are independent; each writes only its own folder)."""
        from tqdm.auto import tqdm

        unique = list(dict.fromkeys(specs))
        missing = [spec for spec in unique if not self.cache.is_done(spec)]
        bar = tqdm(total=len(unique), desc=what, unit="run", leave=False, disable=not sys.stderr.isatty())
        bar.update(len(unique) - len(missing))
        if self.jobs > 1 and len(missing) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            worker_cache = dataclasses.replace(self.cache, show_progress=False)
            with ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=torch.set_num_threads, initargs=(1,)) as pool:
                for future in as_completed([pool.submit(worker_cache.train, spec) for spec in missing]):
                    future.result()
                    self.cache.trained += 1
                    bar.update()
        else:
            for spec in missing:
                bar.set_postfix_str(spec.key()[:40])
                self.cache.train(spec)
                self.cache.trained += 1
                bar.update()
        bar.close()
        self.cache.reused += len(specs) - len(missing)
        return [self.cache.read(spec) for spec in specs]


@dataclass(frozen=True)
class StudyOutput:
    """A study's files and its Markdown section of ``summary.md``."""

    files: list[Path]
    summary: str


def _study_table() -> dict[str, Callable[[SuiteContext], StudyOutput]]:
    from experiments.studies import comparison, convergence, lr_finder, lr_sweep, peers, sensitivity, surfaces

    return {
        "comparison": comparison.run,
        "sensitivity": sensitivity.run,
        "convergence": convergence.run,
        "surfaces": surfaces.run,
        "lr_sweep": lr_sweep.run,
        "lr_finder": lr_finder.run,
        "peers": peers.run,
    }


STUDY_NAMES = ("comparison", "sensitivity", "convergence", "surfaces", "lr_sweep", "lr_finder", "peers")
"""``--only`` names, in the order the suite runs them (``comparison`` writes logreg/mlp/cnn.png)."""


def parse_only(text: str | None) -> list[str]:
    """``--only a,b`` -> the named studies in suite order (all when ``text`` is None)."""
    if text is None:
        return list(STUDY_NAMES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STUDY_NAMES]
    if unknown or not names:
        raise ValueError(f"--only must name studies from {', '.join(STUDY_NAMES)}; got {text!r}")
    return [name for name in STUDY_NAMES if name in names]


def _write_summary(out_dir: Path, budget: SuiteBudget, command: str) -> Path:
    """``summary.md``: every study section present under ``summary/``, in suite order."""
    sections = [(out_dir / "summary" / f"{name}.md") for name in STUDY_NAMES]
    body = "\n\n".join(path.read_text().strip() for path in sections if path.is_file())
    text = (
        "# hypergrad: reproduction summary\n\n"
        f"Regenerate with `{command}` (finished runs are reused from `{out_dir}/runs/`).\n"
        f"Budget: `--{budget.name}`; every number below is read from the run CSVs under `runs/`.\n"
        "Training loss = mean minibatch cross-entropy of the last epoch (the paper's definition); "
        "validation = the 10,000 test images.\n\n" + body + "\n"
    )
    path = out_dir / "summary.md"
    write_text(path, text)
    return path


def reproduce(
    out_dir: str | Path = "results",
    *,
    mode: str = "quick",
    only: Sequence[str] | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    command: str | None = None,
    show_progress: bool | None = None,
    progress: Callable[[str], None] = print,
    jobs: int = 1,
) -> list[Path]:
    """Run the selected studies (all by default) and return the files written.

    Args:
        out_dir: output folder; its ``runs/`` is the cache of finished runs.
        mode: ``"quick"`` or ``"full"`` (the budgets in :data:`BUDGETS`).
        only: study names from :data:`STUDY_NAMES`; None = all.
        data_dir: a folder to look in first for the datasets.
        device: ``auto``, ``cpu``, ``cuda``...
        command: the command line recorded in ``summary.md``.
        jobs: runs trained in parallel worker processes (one torch thread each).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    if mode not in BUDGETS:
        raise ValueError(f"mode must be one of {sorted(BUDGETS)}, got {mode!r}")
    names = list(STUDY_NAMES) if only is None else parse_only(",".join(only))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = command or f"python -m experiments reproduce --{mode} --out {out_dir}"
    context = SuiteContext(
        cache=RunCache(out_dir, data_dir=data_dir, device=device, show_progress=show_progress),
        budget=BUDGETS[mode], out_dir=out_dir, command=command, progress=progress, jobs=jobs,
    )
    studies = _study_table()
    for name in names:
        started = time.perf_counter()
        trained_before, reused_before = context.cache.trained, context.cache.reused
        progress(f"[{name}] ...")
        output = studies[name](context)
        section = out_dir / "summary" / f"{name}.md"
        write_text(section, output.summary.strip() + "\n")
        context.written += output.files
        progress(f"[{name}] done in {time.perf_counter() - started:.0f} s "
                 f"({context.cache.trained - trained_before} trained, {context.cache.reused - reused_before} reused)")
    context.written.append(_write_summary(out_dir, context.budget, command))
    return context.written


def add_arguments(parser) -> None:
    """The ``reproduce`` options (shared by ``python -m experiments reproduce``)."""
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", dest="mode", action="store_const", const="quick",
                       help="reduced epochs, data and grids, stated on each figure (the default)")
    modes.add_argument("--full", dest="mode", action="store_const", const="full",
                       help="the paper's budgets (a GPU or a long night)")
    parser.set_defaults(mode="quick")
    parser.add_argument("--out", default="results", help="output folder (its runs/ is the cache)")
    parser.add_argument("--only", default=None, help=f"comma-separated studies from: {', '.join(STUDY_NAMES)}")
    parser.add_argument("--data-dir", default=None, help="folder to look in first for the datasets")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many runs at once in worker processes (one torch thread each)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's own choice); 1 is much faster on a busy machine")


def run_from_args(args, parser) -> int:
    """Run ``reproduce`` from parsed arguments; bad input exits with status 2 and a message."""
    from experiments.data import DatasetFileError, DatasetNotFoundError
    from experiments.methods import MethodUnavailableError

    started = time.perf_counter()
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        only = parse_only(args.only)
        # summary.md holds every study's section, so it names the command for the whole suite (no --only).
        argv = ["python", "-m", "experiments", "reproduce", f"--{args.mode}", "--out", args.out]
        if args.data_dir:
            argv += ["--data-dir", args.data_dir]
        if args.threads:
            argv += ["--threads", str(args.threads)]
        if args.jobs != 1:
            argv += ["--jobs", str(args.jobs)]
        files = reproduce(args.out, mode=args.mode, only=only, data_dir=args.data_dir, device=args.device,
                          command=shlex.join(argv), jobs=args.jobs)
    except (ValueError, MethodUnavailableError, DatasetNotFoundError, DatasetFileError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"\nwrote {len(files)} files in {time.perf_counter() - started:.0f} s:")
    for path in files:
        print(f"  {path}")
    return 0
