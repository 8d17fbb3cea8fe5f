"""``python -m experiments reproduce``: the paper's comparison figures and the learning-rate pictures.

The command only: which studies run (:data:`STUDIES`, each a module of :mod:`experiments.paper`),
in which order, and ``summary.md`` assembled from their sections. The budgets, the runs as cache
keys and the cache live in :mod:`experiments.core.runs`. Every study plans its runs, asks the cache
for them, and draws its figure and its section of ``summary.md`` from the cached results alone, so
a figure can be restyled without retraining.

Layout of the output folder (default ``results/``)::

    runs/                    the cache of finished runs (see experiments.core.runs)
    summary/STUDY.md         each study's section of summary.md
    *.png, *.pdf, summary.md the figures and the tables of the numbers behind them
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from experiments.core.config import resolve_device
from experiments.core.datasets import DatasetFileError, DatasetNotFoundError
from experiments.core.files import write_text
from experiments.core.methods import MethodUnavailableError
from experiments.paper import (
    alpha_sensitivity,
    comparison,
    convergence,
    hdm_fullbatch,
    lr_range_test,
    lr_sweep,
    onecycle,
    peers,
    surfaces,
    transfer,
)
from experiments.core.runs import BUDGETS, RunCache, StudyOutput, SuiteBudget, SuiteContext

__all__ = ["DEFAULT_STUDIES", "STUDIES", "STUDY_NAMES", "parse_only", "reproduce"]

STUDIES: dict[str, Callable[[SuiteContext], StudyOutput]] = {
    "comparison": comparison.run,
    "sensitivity": alpha_sensitivity.run,
    "convergence": convergence.run,
    "surfaces": surfaces.run,
    "lr_sweep": lr_sweep.run,
    "lr_finder": lr_range_test.run,
    "peers": peers.run,
    "schedules": onecycle.run,
    "transfer": transfer.run,
    "fullbatch": hdm_fullbatch.run,
}

STUDY_NAMES = tuple(STUDIES)
"""``--only`` names, in the order the suite runs them (``comparison`` writes logreg/mlp/cnn.png)."""
OPTIONAL_STUDIES = ("schedules", "transfer", "fullbatch")
"""Run only when named in ``--only``: the schedules comparison, the transfer example and HDM's
full-batch benchmark."""
DEFAULT_STUDIES = tuple(name for name in STUDY_NAMES if name not in OPTIONAL_STUDIES)
"""The studies run without ``--only``."""


def parse_only(text: str | None) -> list[str]:
    """``--only a,b`` -> the named studies in suite order (:data:`DEFAULT_STUDIES` when ``text`` is None)."""
    if text is None:
        return list(DEFAULT_STUDIES)
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
    """Run the selected studies (:data:`DEFAULT_STUDIES` by default) and return the files written.

    Args:
        out_dir: output folder; its ``runs/`` is the cache of finished runs.
        mode: ``"quick"`` or ``"full"`` (the budgets in :data:`BUDGETS`).
        only: study names from :data:`STUDY_NAMES`; None = :data:`DEFAULT_STUDIES`.
        data_dir: a folder to look in first for the datasets.
        device: ``auto``, ``cpu``, ``cuda``...
        command: the command line recorded in ``summary.md``.
        jobs: runs trained in parallel worker processes (one torch thread each).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    if mode not in BUDGETS:
        raise ValueError(f"mode must be one of {sorted(BUDGETS)}, got {mode!r}")
    names = parse_only(None if only is None else ",".join(only))
    resolve_device(device)  # a bad device fails before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = command or f"python -m experiments reproduce --{mode} --out {out_dir}"
    context = SuiteContext(
        cache=RunCache(out_dir, data_dir=data_dir, device=device, show_progress=show_progress),
        budget=BUDGETS[mode], out_dir=out_dir, command=command, progress=progress, jobs=jobs,
    )
    for name in names:
        started = time.perf_counter()
        trained_before, reused_before = context.cache.trained, context.cache.reused
        progress(f"[{name}] ...")
        output = STUDIES[name](context)
        section = out_dir / "summary" / f"{name}.md"
        write_text(section, output.summary.strip() + "\n")
        context.written += output.files
        progress(f"[{name}] done in {time.perf_counter() - started:.0f} s "
                 f"({context.cache.trained - trained_before} trained, {context.cache.reused - reused_before} reused)")
    context.written.append(_write_summary(out_dir, context.budget, command))
    return context.written


def output_folder(text: str) -> str:
    """The ``--out`` argument (of ``run`` and ``reproduce``): a folder, or a path where one can be made."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    return text


def add_arguments(parser) -> None:
    """The ``reproduce`` options (shared by ``python -m experiments reproduce``)."""
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", dest="mode", action="store_const", const="quick",
                       help="reduced epochs, data and grids, stated on each figure (the default)")
    modes.add_argument("--full", dest="mode", action="store_const", const="full",
                       help="the paper's budgets (a GPU or a long night)")
    parser.set_defaults(mode="quick")
    parser.add_argument("--out", type=output_folder, default="results", help="output folder (its runs/ is the cache)")
    others = ", ".join(name for name in STUDY_NAMES if name not in DEFAULT_STUDIES)
    parser.add_argument("--only", default=None,
                        help=f"comma-separated studies from: {', '.join(STUDY_NAMES)}; None runs all but {others}")
    parser.add_argument("--data-dir", default=None, help="folder to look in first for the datasets")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many runs at once in worker processes (one torch thread each)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's own choice); 1 is much faster on a busy machine")


def run_from_args(args, parser) -> int:
    """Run ``reproduce`` from parsed arguments; bad input exits with status 2 and a message."""
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
    except (ValueError, OSError, MethodUnavailableError, DatasetNotFoundError, DatasetFileError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"\nwrote {len(files)} files in {time.perf_counter() - started:.0f} s:")
    for path in files:
        print(f"  {path}")
    return 0
