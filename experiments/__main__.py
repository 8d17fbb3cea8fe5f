"""Command line: ``python -m experiments run TASK [options]``, ``python -m experiments reproduce [options]``,
``python -m experiments benchmark [options]``, ``python -m experiments sensitivity [options]`` and
``python -m experiments compose [options]``."""

from __future__ import annotations

import argparse
import gc
import sys

import torch

from experiments.benchmark import beta_sensitivity, compose, selftuning
from experiments.core.datasets import DatasetFileError, DatasetNotFoundError
from experiments.core.methods import METHODS, PAPER_METHODS, MethodUnavailableError
from experiments.core.workloads import WORKLOADS, suite
from experiments.paper.reproduce import add_arguments, output_folder, run_from_args
from experiments.core.runner import RunConfig, run_suite


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="train a task with several methods and write per-epoch and per-iteration CSVs",
        description="Train TASK with each method; write DIR/METHOD.epochs.csv, DIR/METHOD.iterations.csv, "
        "DIR/run.json and per-method checkpoints (for --resume).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument("task", choices=sorted(suite("paper")),
                     help="; ".join(f"{name}: {WORKLOADS[name].description}" for name in suite("paper")))
    run.add_argument("--methods", default=",".join(PAPER_METHODS),
                     help=f"comma-separated, from: {', '.join(METHODS)}")
    run.add_argument("--epochs", type=int, default=10)
    run.add_argument("--lr", type=_positive_float, default=1e-3, help="alpha_0, the initial learning rate")
    run.add_argument("--hypergrad-lr", type=float, default=None,
                     help="beta for the HD methods (default, the 'paper' settings: 1e-3 for SGD-type HD with "
                     "the additive rule (*_hd); for the adaptive bases 1e-7 on logreg/mlp, 1e-8 on cnn/vgg; "
                     "the library's default for the scale-free rule (*_hd_sf), 0.003 for the multiplicative one)")
    run.add_argument("--weight-decay", type=float, default=1e-4)
    run.add_argument("--batch-size", type=int, default=128)
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    run.add_argument("--data-dir", default=None, help="folder to look in first for the dataset")
    run.add_argument("--download", action="store_true", help="download the dataset into --data-dir if not found")
    run.add_argument("--max-iterations", type=int, default=None, help="stop after this many iterations in total")
    run.add_argument("--train-fraction", type=float, default=1.0, help="train on a seeded subset this large")
    run.add_argument("--out", type=output_folder, default=None, help="output folder (default: runs/TASK)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    run.add_argument("--threads", type=int, default=None,
                     help="CPU threads for torch (default: torch's own choice); 1 is much faster on a busy machine")
    run.add_argument("--distributed", choices=("ddp", "fsdp"), default=None,
                     help="data-parallel over the processes torchrun starts (torchrun --nproc_per_node=N "
                     "-m experiments run ...): each --batch-size batch is split across them; gloo on CPU, "
                     "NCCL on CUDA; rank 0 writes the files")
    run.add_argument("--amp", action="store_true",
                     help="mixed precision: forward passes under bfloat16 autocast (recorded in run.json)")
    for name, summary, description, add in (
        ("reproduce", "the main job: run the paper's studies and write figures and summary.md (cached runs are reused)",
         "Run the studies (comparison, sensitivity, convergence, surfaces, lr_sweep, lr_finder, peers) and write "
         "their PNG/PDF figures and summary.md into --out; finished runs under OUT/runs/ are reused.", add_arguments),
        ("benchmark", "the self-tuning benchmark: every entry untuned on the benchmark suite's workloads, scored as AlgoPerf scores",
         "Target-setting AdamW runs, then every entry at its one configuration on every workload; write "
         "benchmark.json, benchmark.md, performance_profile.png and curves.png into --out (finished runs under "
         "OUT/runs/ are reused).", selftuning.add_arguments),
        ("sensitivity", "the sensitivity study: HD from every alpha_0 and beta on the benchmark's workloads, vs the "
         "base's best",
         "SGD-Nesterov and Adam from every alpha_0 of a grid, their HD methods (additive and scale-free rule) from "
         "every alpha_0 and beta; write sensitivity.json, sensitivity.md and sensitivity_heatmap.png into --out "
         "(finished runs under OUT/runs/ are reused).", beta_sensitivity.add_arguments),
        ("compose", "warmup + cosine with HD on top against the same schedule without it (AdamW), over the "
         "benchmark's target-setting learning rates",
         "AdamW, AdamW-HD (scale-free) and AdamW-HD (additive) under the benchmark's warmup + cosine schedule at "
         "each of its target-setting learning rates; write compose.json, compose.md and compose.png into --out "
         "(finished runs under OUT/runs/ are reused, the benchmark's AdamW runs included).", compose.add_arguments),
    ):
        add(commands.add_parser(name, help=summary, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        return run_from_args(args, parser)
    if args.command == "benchmark":
        return selftuning.run_from_args(args, parser)
    if args.command == "sensitivity":
        return beta_sensitivity.run_from_args(args, parser)
    if args.command == "compose":
        return compose.run_from_args(args, parser)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    try:
        config = RunConfig(
            task=args.task, epochs=args.epochs, lr=args.lr, hypergrad_lr=args.hypergrad_lr,
            weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed, device=args.device,
            data_dir=args.data_dir, download=args.download, max_iterations=args.max_iterations,
            train_fraction=args.train_fraction, distributed=args.distributed, amp=args.amp,
        )
        run_suite(config, methods, args.out or f"runs/{args.task}", resume=args.resume)
        if args.distributed and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank done with its collectives before any tears down
    except (ValueError, TypeError, OSError, MethodUnavailableError, DatasetNotFoundError, DatasetFileError) as error:
        parser.exit(2, f"error: {error}\n")
    finally:
        if args.distributed and torch.distributed.is_initialized():
            # The wrapped models (DDP's reducer, FSDP) hold the process group in reference cycles:
            # collected at interpreter exit, gloo's work objects then abort the rank ("terminate
            # called without an active exception", SIGABRT). Collect them while Python is alive.
            gc.collect()
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
