"""What hypergradient descent adds to a Muon step: MuonHD's step against torch.optim.Muon's.

A Muon step orthogonalises each matrix's momentum by ``ns_steps`` Newton-Schulz iterations, three
matrix products each (``~6 k m n min(m, n)`` flops for an ``m x n`` matrix). MuonHD adds per
matrix one write of its direction ``u_t = wd theta + rho O_t`` (two elementwise passes), the
dot products of the statistics (``g.u``, and ``|g|^2``, ``|u|^2`` for the scale-free and
multiplicative rules) and, per group, the rule on a few numbers: linear in the parameters, with a
fixed cost per step. For each parameter set this prints the median step time of torch.optim.Muon
and of MuonHD under the default (scale-free) and the paper's (additive) rule, wall-clock and
process (CPU) time, HD's extra CPU time and the ratios to Muon's step.

Parameter sets: the hidden matrices of the benchmark's models (the byte Transformer, width 128,
2 blocks: 8 matrices, 0.4 M weights; the paper's MLP 784-1000-1000-10: 2 matrices, 1.8 M) and
single square matrices. Gradients are fixed random tensors (a step's cost does not depend on
them). Times are medians over interleaved rounds (each round times every optimizer once, in a
rotating order, so that drifts of the machine hit all alike), after warm-up steps, with a fixed
number of threads.

    python benchmarks/muon_overhead.py                      # CPU, 2 threads
    python benchmarks/muon_overhead.py --sets square-1024 --device cuda --rounds 51
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import hypergrad  # noqa: E402

#: Parameter sets: the shapes of their matrices.
SETS: dict[str, list[tuple[int, int]]] = {
    "transformer": [(384, 128), (128, 128), (512, 128), (128, 512)] * 2,
    "mlp": [(1000, 784), (1000, 1000)],
    "square-256": [(256, 256)],
    "square-512": [(512, 512)],
    "square-1024": [(1024, 1024)],
}


def _optimizers(shapes: list[tuple[int, int]], device: str) -> dict[str, tuple[torch.optim.Optimizer, list]]:
    """Muon and MuonHD (two rules), each on its own copy of the matrices, with fixed gradients."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(shape, generator=generator) * shape[1] ** -0.5 for shape in shapes]
    grads = [torch.randn(shape, generator=generator) * 1e-2 for shape in shapes]
    made = {}
    for name, make in (
        ("torch Muon", lambda ps: torch.optim.Muon(ps, lr=0.02)),
        ("MuonHD scalefree", lambda ps: hypergrad.MuonHD(ps, lr=0.02)),
        ("MuonHD additive", lambda ps: hypergrad.MuonHD(ps, lr=0.02, hypergrad_rule="additive", hypergrad_lr=1e-9)),
    ):
        params = [torch.nn.Parameter(w.to(device)) for w in weights]
        for p, g in zip(params, grads):
            p.grad = g.to(device)
        made[name] = (make(params), params)
    return made


def _timed(step: Callable[[], object], device: str) -> tuple[float, float]:
    """The wall-clock and the process (CPU) time of one step."""
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(shapes: list[tuple[int, int]], device: str, rounds: int, warmup: int) -> dict[str, tuple[float, float]]:
    """Median wall-clock and process time in ms of each optimizer's step, over interleaved rounds."""
    optimizers = _optimizers(shapes, device)
    names = list(optimizers)
    for name in names:
        for _ in range(warmup):
            optimizers[name][0].step()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed(optimizers[name][0].step, device))
    return {name: (1e3 * statistics.median(w for w, _ in values), 1e3 * statistics.median(c for _, c in values))
            for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["transformer", "mlp", "square-256", "square-512"],
                        choices=list(SETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {args.device} ({device_name}), {args.threads} threads, "
          f"medians of {args.rounds} interleaved rounds")
    print("wall: wall-clock ms; cpu: the process's CPU ms (all threads), less sensitive to other jobs")
    print(f"{'set':<12} {'weights':>9} {'rule':<10} {'Muon wall':>10} {'HD wall':>9} {'ratio':>7} "
          f"{'Muon cpu':>9} {'HD cpu':>8} {'HD extra cpu':>13} {'ratio':>7}")
    for name in args.sets:
        shapes = SETS[name]
        medians = measure(shapes, args.device, args.rounds, args.warmup)
        base_wall, base_cpu = medians["torch Muon"]
        weights = sum(rows * columns for rows, columns in shapes)
        for rule in ("scalefree", "additive"):
            wall, cpu = medians[f"MuonHD {rule}"]
            print(f"{name:<12} {weights:>9} {rule:<10} {base_wall:>10.3f} {wall:>9.3f} {wall / base_wall:>6.3f}x "
                  f"{base_cpu:>9.3f} {cpu:>8.3f} {cpu - base_cpu:>13.3f} {cpu / base_cpu:>6.3f}x")


if __name__ == "__main__":
    main()
