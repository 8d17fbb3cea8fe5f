"""The options every command over the benchmark's workloads shares (``benchmark``, ``sensitivity``,
``compose``), and how a command runs from them: the command line that reproduces it, bad input as a
one-line message and exit status 2."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from experiments.core.workloads import suite

__all__ = ["add_common_arguments", "parse_names", "run_command"]


def parse_names(text: str | None, known: Sequence[str], option: str, default: Sequence[str]) -> list[str]:
    """``--only``/``--entries`` text -> distinct names from ``known`` (``default`` when None); a
    ValueError naming ``option`` otherwise."""
    if text is None:
        return list(default)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"{option} must name distinct values from {', '.join(known)}; got {text!r}")
    return names


def add_common_arguments(parser, *, quick_help: str, full_help: str, out: str, only_help: str | None = None) -> None:
    """The options every command over the benchmark's workloads takes: ``--quick``/``--full``,
    ``--out``, ``--only``, ``--data-dir`` and ``--jobs``."""
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", dest="mode", action="store_const", const="quick", help=quick_help)
    modes.add_argument("--full", dest="mode", action="store_const", const="full", help=full_help)
    parser.set_defaults(mode="quick")
    parser.add_argument("--out", default=out, help="output folder (its runs/ is the cache)")
    parser.add_argument("--only", default=None,
                        help=only_help or f"comma-separated workloads from: {', '.join(suite('benchmark'))}")
    parser.add_argument("--data-dir", default=None, help="folder to look in first for the data files")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many runs at once in worker processes (one torch thread each)")


def run_command(name: str, args, parser, run: Callable[[str], object], extra: Sequence[str] = ()) -> int:
    """``run(command)`` with the command line that reproduces ``args`` (``extra``: the command's own
    options after ``--only``); bad input exits with status 2 and a one-line message."""
    from experiments.core.datasets import DatasetFileError, DatasetNotFoundError
    from experiments.core.methods import MethodUnavailableError

    argv = ["python", "-m", "experiments", name, f"--{args.mode}", "--out", args.out]
    if args.only:
        argv += ["--only", args.only]
    argv += list(extra)
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.jobs != 1:
        argv += ["--jobs", str(args.jobs)]
    try:
        run(" ".join(argv))
    except (ValueError, MethodUnavailableError, DatasetNotFoundError, DatasetFileError) as error:
        parser.exit(2, f"error: {error}\n")
    return 0
