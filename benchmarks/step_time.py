"""Time of one optimizer step and optimizer memory: hypergrad's HD optimizers against torch.optim.

For each variant (SGD-HD, heavy-ball HD, SGDN-HD, Adam-HD) and each parameter set (the paper's
784-1000-1000-10 MLP, 1.8 M parameters, and a 25 M parameter transformer encoder) this prints

* our step time, with the for-loop, the foreach (multi-tensor) and, where the base rule has one,
  the fused path (``fused=True``: torch's fused kernel takes the update);
* torch.optim's fastest step (``fused=True`` where it has a fused kernel: SGD, Adam, AdamW,
  Adagrad; ``foreach=True`` otherwise) and the ratio of our fastest path to it; also torch.optim's
  foreach step and our foreach path's ratio to it;
* the step time of a reference-style HD optimizer written here (the paper's code's approach: every
  step concatenates all gradients into one flat vector, dots it with the stored flat previous
  direction, updates the lr, then takes torch.optim's step and stores the new flat direction);
* optimizer state in bytes per parameter byte (what each keeps between steps) and the peak of the
  memory allocated during one step() on top of that (torch.profiler's allocation events), both
  relative to the parameters' bytes.

Times are medians over interleaved rounds (each round times every implementation once, in a
rotating order, so that drifts of the machine hit all alike), after warm-up steps, with a fixed
number of threads. Gradients are fixed random tensors; the cost of a step does not depend on them.

    python benchmarks/step_time.py                       # CPU, 2 threads
    python benchmarks/step_time.py --device cuda         # on a GPU
    python benchmarks/step_time.py --models mlp --rounds 51
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import hypergrad  # noqa: E402

# HD optimizer, torch.optim base, base settings. "SGD-HD wd" has the paper's weight decay
# (its effective gradient is a fresh tensor, which SGD-HD keeps instead of copying). The
# hypergradient learning rates are small so that
# the lr stays near 1e-3 under the constant fake gradients; the work per step does not depend on it.
VARIANTS: dict[str, tuple[type, type, dict[str, Any], float]] = {
    "SGD-HD": (hypergrad.SGDHD, torch.optim.SGD, dict(lr=1e-3), 1e-9),
    "SGD-HD wd": (hypergrad.SGDHD, torch.optim.SGD, dict(lr=1e-3, weight_decay=1e-4), 1e-9),
    "heavy-ball-HD": (hypergrad.SGDHD, torch.optim.SGD, dict(lr=1e-3, momentum=0.9), 1e-10),
    "SGDN-HD": (hypergrad.SGDHD, torch.optim.SGD, dict(lr=1e-3, momentum=0.9, nesterov=True), 1e-10),
    "Adam-HD": (hypergrad.AdamHD, torch.optim.Adam, dict(lr=1e-3), 1e-12),
    "AdamW-HD": (hypergrad.AdamWHD, torch.optim.AdamW, dict(lr=1e-3), 1e-12),
    "Adagrad-HD": (hypergrad.AdagradHD, torch.optim.Adagrad, dict(lr=1e-3), 1e-12),
    "RMSprop-HD": (hypergrad.RMSpropHD, torch.optim.RMSprop, dict(lr=1e-3), 1e-12),
}
# The memory table of docs/hypergradient.md: extra state per parameter element beyond the base.
# AdamW-HD recomputes theta_{t-2} at one rate per group (the default granularity).
DOCUMENTED_EXTRA_STATE = {
    "SGD-HD": 1.0, "SGD-HD wd": 1.0, "heavy-ball-HD": 0.0, "SGDN-HD": 1.0, "Adam-HD": 0.0, "AdamW-HD": 0.0,
    "Adagrad-HD": 1.0, "RMSprop-HD": 1.0,
}


def mlp_parameters(device: torch.device) -> list[Tensor]:
    """The paper's MNIST MLP, 784-1000-1000-10 (1.8 M parameters)."""
    sizes = (784, 1000, 1000, 10)
    model = torch.nn.Sequential(*(torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])))
    return [p.detach().to(device) for p in model.parameters()]


def transformer_parameters(device: torch.device) -> list[Tensor]:
    """A transformer encoder (8 layers, width 512, 2048 hidden): 25.2 M parameters in 96 tensors
    of very different sizes, the shape of a real model's parameter set."""
    layer = torch.nn.TransformerEncoderLayer(d_model=512, nhead=8, dim_feedforward=2048)
    encoder = torch.nn.TransformerEncoder(layer, num_layers=8, enable_nested_tensor=False)
    return [p.detach().to(device) for p in encoder.parameters()]


MODELS: dict[str, Callable[[torch.device], list[Tensor]]] = {
    "mlp": mlp_parameters,
    "transformer-25M": transformer_parameters,
}


class FlatVectorHD:
    """The reference code's way of doing HD, minimal: one flat gradient and one flat previous
    direction per step, around a torch.optim optimizer (``foreach=True``) that takes the step.

    ``flat_direction(base, before)`` gives the flat direction ``u_t`` after the base step, from
    the base's state and ``before``: the flat gradient (plain SGD's ``u_t`` itself), or for
    ``parameter_change`` the flat parameters before the step.
    """

    def __init__(self, base: torch.optim.Optimizer, hypergrad_lr: float,
                 flat_direction: Callable[[torch.optim.Optimizer, Tensor], Tensor]) -> None:
        self.base, self.hypergrad_lr, self.flat_direction = base, hypergrad_lr, flat_direction
        self.previous: Tensor | None = None

    def step(self) -> None:
        group = self.base.param_groups[0]
        flat_grad = torch.cat([p.grad.reshape(-1) for p in group["params"]])
        if self.previous is not None:
            group["lr"] += self.hypergrad_lr * torch.dot(flat_grad, self.previous).item()
        before = flat_grad
        if self.flat_direction is parameter_change:
            before = torch.cat([p.reshape(-1) for p in group["params"]])
        self.base.step()
        self.previous = self.flat_direction(self.base, before)

    def state_tensors(self) -> list[Tensor]:
        return [self.previous] if self.previous is not None else []


def _flat_state(optimizer: torch.optim.Optimizer, key: str) -> Tensor:
    return torch.cat([optimizer.state[p][key].reshape(-1) for p in optimizer.param_groups[0]["params"]])


def sgd_flat_direction(optimizer: torch.optim.Optimizer, flat_grad: Tensor) -> Tensor:
    group = optimizer.param_groups[0]
    if group["momentum"] == 0:
        return flat_grad
    velocity = _flat_state(optimizer, "momentum_buffer")
    return flat_grad.add_(velocity, alpha=group["momentum"]) if group["nesterov"] else velocity


def adam_flat_direction(optimizer: torch.optim.Optimizer, flat_grad: Tensor) -> Tensor:
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    t = float(optimizer.state[group["params"][0]]["step"])
    m_hat = _flat_state(optimizer, "exp_avg").div_(1 - beta1**t)
    v_hat = _flat_state(optimizer, "exp_avg_sq").div_(1 - beta2**t)
    return m_hat.div_(v_hat.sqrt_().add_(group["eps"]))


def parameter_change(optimizer: torch.optim.Optimizer, flat_params_before: Tensor) -> Tensor:
    """Any base rule's direction: ``u_t = (theta_{t-1} - theta_t) / lr`` (AdamW, Adagrad, RMSprop)."""
    group = optimizer.param_groups[0]
    flat_params = torch.cat([p.reshape(-1) for p in group["params"]])
    return flat_params_before.sub_(flat_params).div_(group["lr"])


def with_gradients(params: list[Tensor], gradients: list[Tensor]) -> list[Tensor]:
    """Fresh leaf parameters equal to ``params`` holding copies of ``gradients``."""
    leaves = [torch.nn.Parameter(p.clone()) for p in params]
    for leaf, grad in zip(leaves, gradients):
        leaf.grad = grad.clone()
    return leaves


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def state_bytes(optimizer: Any) -> int:
    if isinstance(optimizer, FlatVectorHD):
        return state_bytes(optimizer.base) + sum(t.nbytes for t in optimizer.state_tensors())
    return sum(v.nbytes for s in optimizer.state.values() for v in s.values() if isinstance(v, Tensor))


FLAT_DIRECTIONS = {torch.optim.SGD: sgd_flat_direction, torch.optim.Adam: adam_flat_direction}


def has_fused(optimizer_cls: type) -> bool:
    """Whether the class takes ``fused`` (torch.optim: SGD, Adam, AdamW, Adagrad; ours: the same)."""
    return "fused" in inspect.signature(optimizer_cls).parameters


def fastest_path(optimizer_cls: type) -> dict[str, bool]:
    """The keyword of the class's fastest step on this machine: its fused kernel where it has one."""
    return dict(fused=True) if has_fused(optimizer_cls) else dict(foreach=True)


@contextlib.contextmanager
def native_output_silenced():
    """Send what native code writes to stdout and stderr (the profiler's ``USDT: ...
    profiler_start`` lines, the allocator's warnings) to /dev/null while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def peak_step_allocation(step: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated on top of what existed before, during one step."""
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with native_output_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def clock(device: torch.device) -> Callable[[], float]:
    """CPU seconds of this process on the CPU (time spent descheduled on a shared machine does
    not count; with several threads their times add up), wall-clock seconds on a GPU."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def timing_header(device: torch.device, setup: str, schedule: str) -> str:
    """A timing table's first line: torch, the device, the threads, ``setup`` (what is timed), the
    clock (:func:`clock`), ``schedule`` (how the medians are taken) and the machine's load."""
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    clock_name = "wall-clock" if device.type == "cuda" else "process CPU"
    return (f"torch {torch.__version__}, device {device} ({device_name}), {torch.get_num_threads()} threads; "
            f"{setup}; {clock_name} time, {schedule}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def time_steps(steps: dict[str, Callable[[], None]], device: torch.device, rounds: int,
               steps_per_round: int) -> dict[str, float]:
    """Median seconds per step of each callable, over interleaved rounds in rotating order."""
    now = clock(device)
    names = list(steps)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = now()
            for _ in range(steps_per_round):
                steps[name]()
            synchronize(device)
            samples[name].append((now() - start) / steps_per_round)
    return {name: statistics.median(times) for name, times in samples.items()}


def benchmark_variant(variant: str, params: list[Tensor], device: torch.device, rounds: int,
                      warmup: int, round_seconds: float, compile_step: bool, rule: str) -> dict[str, Any]:
    hd_cls, base_cls, settings, hypergrad_lr = VARIANTS[variant]
    generator = torch.Generator().manual_seed(0)
    gradients = [(1e-3 * torch.randn(p.shape, generator=generator)).to(device) for p in params]
    def ours(**path: Any) -> Any:
        return hd_cls(with_gradients(params, gradients), hypergrad_lr=hypergrad_lr, hypergrad_rule=rule, **path, **settings)

    optimizers: dict[str, Any] = {
        "ours (for-loop)": ours(foreach=False),
        "ours (foreach)": ours(foreach=True),
        "torch fastest": base_cls(with_gradients(params, gradients), **fastest_path(base_cls), **settings),
        "torch foreach": base_cls(with_gradients(params, gradients), foreach=True, **settings),
        "flat-vector HD": FlatVectorHD(
            base_cls(with_gradients(params, gradients), foreach=True, **settings), hypergrad_lr,
            FLAT_DIRECTIONS.get(base_cls, parameter_change),
        ),
    }
    if has_fused(hd_cls):
        optimizers["ours (fused)"] = ours(fused=True)
    steps = {name: optimizer.step for name, optimizer in optimizers.items()}
    if compile_step:
        # A tensor lr from the start: the first compiled step need not turn a float into one.
        optimizers["ours (compiled)"] = hd_cls(
            with_gradients(params, gradients), hypergrad_lr=hypergrad_lr, hypergrad_rule=rule,
            **dict(settings, lr=torch.tensor(settings["lr"], device=device)),
        )
        steps["ours (compiled)"] = torch.compile(optimizers["ours (compiled)"].step)
    for step in steps.values():
        for _ in range(warmup):
            step()
    synchronize(device)
    start = time.perf_counter()
    steps["torch fastest"]()
    synchronize(device)
    steps_per_round = max(1, math.ceil(round_seconds / (time.perf_counter() - start)))
    times = time_steps(steps, device, rounds, steps_per_round)
    param_bytes = sum(p.nbytes for p in params)
    return dict(
        times=times,
        state=({name: state_bytes(o) / param_bytes for name, o in optimizers.items()}),
        peak=({name: peak_step_allocation(steps[name], device) / param_bytes for name in steps}),
        steps_per_round=steps_per_round,
        torch_path=next(iter(fastest_path(base_cls))),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine a descheduled OpenMP thread stalls the others)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {list(MODELS)}")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=31, help="interleaved timing rounds (default 31)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per optimizer first (default 5)")
    parser.add_argument("--round-seconds", type=float, default=0.05,
                        help="about this long per implementation per round (default 0.05)")
    parser.add_argument("--rule", default="scalefree", choices=("scalefree", "additive", "multiplicative"),
                        help="the hypergradient rule of our optimizers (default: the library's, scalefree; its three "
                        "statistics cost more than the additive rule's one dot product). The tiny betas keep the rate "
                        "steady; the cost does not depend on them")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile(optimizer.step) (inductor; compiling takes minutes)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    models = args.models.split(",")
    variants = args.variants.split(",")
    for name, known in (("--models", MODELS), ("--variants", VARIANTS)):
        unknown = [v for v in (models if name == "--models" else variants) if v not in known]
        if unknown:
            parser.error(f"{name}: unknown {unknown}, choose from {list(known)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(timing_header(device, f"float32, hypergrad_rule={args.rule}",
                        f"medians of {args.rounds} interleaved rounds of ~{args.round_seconds * 1e3:.0f} ms per "
                        f"implementation after {args.warmup} warm-up steps"))
    for model in models:
        params = MODELS[model](device)
        numel = sum(p.numel() for p in params)
        print(f"\n## {model}: {numel / 1e6:.1f} M parameters in {len(params)} tensors")
        print(f"{'variant':<14} {'ours loop':>10} {'foreach':>9} {'fused':>9} {'torch fastest':>18} {'ratio':>6} "
              f"{'torch foreach':>13} {'ratio':>6} {'flat-vector':>11} | {'state/param: ours':>17} {'base':>5} "
              f"{'extra':>5} {'doc':>4} | {'peak temp/param: ours':>21} {'base':>5}")
        for variant in variants:
            result = benchmark_variant(variant, params, device, args.rounds, args.warmup, args.round_seconds,
                                       args.compile, args.rule)
            print(result_row(variant, result, args.compile), flush=True)
    print("\nratio after 'torch fastest': our fastest path / torch.optim's fastest (fused where torch has a "
          "fused kernel, else foreach); after 'torch foreach': our foreach path / torch.optim's foreach. "
          "flat-vector: its step / torch's foreach step. state: bytes of optimizer state / bytes of parameters "
          "(extra: ours - base; doc: the extra the memory table allows). peak temp: the largest peak of our "
          "paths' allocations during one step, same units; base: torch's fastest path.")


def result_row(variant: str, result: dict[str, Any], compiled: bool) -> str:
    t, state, peak = result["times"], result["state"], result["peak"]
    ours_paths = [name for name in t if name.startswith("ours (") and name != "ours (compiled)"]
    ours = min(t[name] for name in ours_paths)
    fused = f"{t['ours (fused)'] * 1e3:7.2f}ms" if "ours (fused)" in t else f"{'-':>9}"
    compiled_text = (f" | compiled {t['ours (compiled)'] * 1e3:.2f}ms {t['ours (compiled)'] / t['torch fastest']:.2f}x"
                     if compiled else "")
    ours_state = state["ours (foreach)"]
    return (f"{variant:<14} {t['ours (for-loop)'] * 1e3:8.2f}ms {t['ours (foreach)'] * 1e3:7.2f}ms {fused} "
            f"{t['torch fastest'] * 1e3:7.2f}ms ({result['torch_path']:>7}) {ours / t['torch fastest']:5.2f}x "
            f"{t['torch foreach'] * 1e3:11.2f}ms {t['ours (foreach)'] / t['torch foreach']:5.2f}x "
            f"{t['flat-vector HD'] / t['torch foreach']:10.2f}x | "
            f"{ours_state:17.2f} {state['torch fastest']:5.2f} {ours_state - state['torch fastest']:5.2f} "
            f"{DOCUMENTED_EXTRA_STATE[variant]:4.1f} | "
            f"{max(peak[name] for name in ours_paths):21.2f} {peak['torch fastest']:5.2f}{compiled_text}")


if __name__ == "__main__":
    main()
