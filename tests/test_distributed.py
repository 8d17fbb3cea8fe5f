"""Two processes (gloo on 127.0.0.1) train with DDP, FSDP2 and 1-D tensor parallelism; every rank
must end every step with the same learning rates, equal to those of one process trained on the
concatenated batches (DDP, FSDP2: each rank takes half of every batch) or on the same batches
(tensor parallel: each rank holds half of the weights).

All cases run in one spawn of two workers (starting processes costs seconds); each worker writes
its observations to a file and the tests below check them against a single-process run computed
here. ``python tests/test_distributed.py`` prints the table of learning rates.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

import hypergrad
from cases import TinyNet, batch_loss, make_batches

WORLD_SIZE = 2
STEPS = 6
BATCH = 8  # global batch: each rank takes BATCH // WORLD_SIZE rows of it
SPAWN_TIMEOUT_S = 150

OPTIMIZERS: dict[str, tuple[type, dict[str, Any]]] = {
    "SGDHD-nesterov": (hypergrad.SGDHD, dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-2, hypergrad_lr=1e-2, hypergrad_rule="additive")),
    "SGDHD-plain": (hypergrad.SGDHD, dict(lr=0.02, hypergrad_lr=1e-2, hypergrad_rule="additive")),
    "SGDHD-nesterov-mult": (hypergrad.SGDHD, dict(lr=0.02, momentum=0.9, nesterov=True, hypergrad_lr=0.3, hypergrad_rule="multiplicative")),
    "AdamHD": (hypergrad.AdamHD, dict(lr=0.01, weight_decay=1e-2, hypergrad_lr=1e-3, hypergrad_rule="additive")),
    "AdamHD-mult": (hypergrad.AdamHD, dict(lr=0.01, hypergrad_lr=0.3, hypergrad_rule="multiplicative")),
    "AdamWHD": (hypergrad.AdamWHD, dict(lr=0.01, weight_decay=0.1, hypergrad_lr=1e-3, hypergrad_rule="additive")),
    "AdagradHD": (hypergrad.AdagradHD, dict(lr=0.05, hypergrad_lr=1e-3, hypergrad_rule="additive")),
    "RMSpropHD": (hypergrad.RMSpropHD, dict(lr=0.005, hypergrad_lr=1e-4, hypergrad_rule="additive", centered=True)),
    "RMSpropHD-momentum": (hypergrad.RMSpropHD, dict(lr=0.005, momentum=0.5, hypergrad_lr=1e-4, hypergrad_rule="additive")),
    "SGDHD-nesterov-tensor": (hypergrad.SGDHD, dict(lr=0.02, momentum=0.9, nesterov=True, hypergrad_lr=1e-2, hypergrad_rule="additive", granularity="tensor")),
    "AdamHD-mult-tensor": (hypergrad.AdamHD, dict(lr=0.01, hypergrad_lr=0.3, hypergrad_rule="multiplicative", granularity="tensor")),
    "SGDHD-nesterov-element": (hypergrad.SGDHD, dict(lr=0.02, momentum=0.9, nesterov=True, hypergrad_lr=1e-1, hypergrad_rule="additive", granularity="element")),
    "AdamHD-element": (hypergrad.AdamHD, dict(lr=0.01, hypergrad_lr=1e-2, hypergrad_rule="additive", granularity="element")),
    # From a rate far too large: first_step_bound binds at the first step and, while the rule
    # climbs, at the later ones (|theta|^2 summed over the ranks with the statistics).
    "AdamHD-bracket": (hypergrad.AdamHD, dict(lr=0.5, hypergrad_rule="bracket")),
    "AdaptiveGainSGD": (hypergrad.AdaptiveGainSGD, dict(lr=0.02, momentum=0.5)),
}
HYPERGRADIENT = [name for name, (cls, _) in OPTIMIZERS.items() if issubclass(cls, hypergrad.HypergradOptimizer)]
# Names whose statistics are sums over many weights, reduced across ranks (per-weight ones are not).
REDUCED = [name for name in HYPERGRADIENT if OPTIMIZERS[name][1].get("granularity") != "element"]
# Rule and granularity variants run under FSDP2 only; the other modes run each base optimizer.
BASES = [name for name, (_, settings) in OPTIMIZERS.items()
         if settings.get("hypergrad_rule", "additive") == "additive" and "granularity" not in settings]
# foreach=None is torch.optim's default (the for-loop on CPU); FSDP2 runs both kernels on DTensors,
# and with the lr kept as a 0-dim tensor, as it is for parameters on an accelerator.
CASES = (
    [("fsdp", name, foreach) for name in HYPERGRADIENT for foreach in (False, True)]
    + [("fsdp", "AdaptiveGainSGD", None)]
    + [("fsdp-tensor-lr", name, True) for name in BASES if name in HYPERGRADIENT]
    + [(mode, name, None) for mode in ("ddp", "tp") for name in BASES]
)
CHECKPOINTED = ["SGDHD-nesterov", "AdamHD", "AdamWHD", "AdamHD-mult-tensor", "SGDHD-nesterov-element"]
# 5 hidden units shard unevenly over two ranks; tensor parallelism needs an even width.
MODEL_WIDTH = {"ddp": 5, "fsdp": 5, "fsdp-tensor-lr": 5, "tp": 4}


def make_optimizer(
    name: str, model: torch.nn.Module, foreach: bool | None = None, tensor_lr: bool = False
) -> torch.optim.Optimizer:
    """Two param groups with their own learning rates, so that their statistics share one reduction."""
    cls, settings = OPTIMIZERS[name]
    lrs = [settings["lr"], settings["lr"] / 2]
    if tensor_lr:
        lrs = [torch.tensor(lr, dtype=torch.float64) for lr in lrs]
    groups = [
        {"params": list(model.hidden.parameters()), "lr": lrs[0]},
        {"params": list(model.out.parameters()), "lr": lrs[1]},
    ]
    if name not in HYPERGRADIENT:  # AdaptiveGainSGD: a for-loop only
        return cls(groups, **settings)
    return cls(groups, foreach=foreach, **settings)


def learning_rates(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> torch.Tensor:
    """Every parameter's rate after the last step (its group's, its tensor's or each weight's;
    AdaptiveGainSGD's lr times each weight's gain), flattened in parameter order; per-weight rates
    of sharded parameters gathered in full."""
    from torch.distributed.tensor import DTensor

    if isinstance(optimizer, hypergrad.AdaptiveGainSGD):
        lr_of = {p: group["lr"] for group in optimizer.param_groups for p in group["params"]}
        rates = [lr_of[p] * optimizer.state[p]["gain"] for p in model.parameters()]
    else:
        rates = optimizer.learning_rates(model.named_parameters()).values()
    return torch.cat([
        torch.as_tensor(rate.full_tensor() if isinstance(rate, DTensor) else rate, dtype=torch.float64).reshape(-1)
        for rate in rates
    ])


def train_steps(model, optimizer, batches, rows: slice = slice(None)) -> tuple[torch.Tensor, list[int]]:
    """One step per batch on ``rows`` of it; the rates after each step (a row per step) and the
    collectives each ``optimizer.step()`` issued (DTensor's CommDebugMode counts c10d and
    functional ones)."""
    from torch.distributed.tensor.debug import CommDebugMode

    lrs, collectives = [], []
    for x, y in batches:
        optimizer.zero_grad()
        batch_loss(model, (x[rows], y[rows])).backward()
        with CommDebugMode() as comm:
            optimizer.step()
        lrs.append(learning_rates(optimizer, model.module if hasattr(model, "module") else model))
        collectives.append(comm.get_total_counts())
    return torch.stack(lrs), collectives


def full_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {
        name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
        for name, p in model.named_parameters()
    }


def sharded_model(mesh) -> TinyNet:
    from torch.distributed.fsdp import fully_shard

    model = TinyNet(width=MODEL_WIDTH["fsdp"])
    fully_shard(model.hidden, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def tensor_parallel_model(mesh) -> TinyNet:
    """Megatron-style: hidden layer split by output rows (Shard(0)), output layer by input columns
    (Shard(1)), its bias replicated."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    model = TinyNet(width=MODEL_WIDTH["tp"])
    return parallelize_module(model, mesh, {"hidden": ColwiseParallel(), "out": RowwiseParallel()})


def _run_case(mode: str, name: str, foreach: bool | None, rank_rows: slice, mesh) -> dict[str, Any]:
    batches = make_batches(STEPS, batch=BATCH)
    rows = rank_rows
    if mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(TinyNet(width=MODEL_WIDTH[mode]))
        optimizer = make_optimizer(name, model.module, foreach)
    elif mode.startswith("fsdp"):
        model = sharded_model(mesh)
        optimizer = make_optimizer(name, model, foreach, tensor_lr=mode == "fsdp-tensor-lr")
    else:
        model = tensor_parallel_model(mesh)
        optimizer = make_optimizer(name, model, foreach)
        rows = slice(None)  # every rank sees the whole batch, and holds part of each layer
    lrs, collectives = train_steps(model, optimizer, batches, rows)
    params = full_parameters(model.module if mode == "ddp" else model)
    return dict(lrs=lrs, collectives=collectives, params=params)


def _unsupported_setups(mesh) -> dict[str, str]:
    """The error each unsupported setup raises at the first step ("" if none was raised)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    def parameter(placements, on_mesh) -> torch.nn.Parameter:
        values = torch.ones(4, 3, dtype=torch.float64)
        p = torch.nn.Parameter(distribute_tensor(values, on_mesh, placements))
        p.grad = distribute_tensor(values, on_mesh, placements)
        return p

    mesh_2d = init_device_mesh("cpu", (1, WORLD_SIZE), mesh_dim_names=("replicate", "shard"))
    partial = torch.nn.Parameter(DTensor.from_local(torch.ones(4, 3, dtype=torch.float64), mesh, [Partial()]))
    partial.grad = DTensor.from_local(torch.ones(4, 3, dtype=torch.float64), mesh, [Partial()])
    plain = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    plain.grad = torch.ones(3, dtype=torch.float64)
    # FSDP1 gives each rank a plain tensor holding a flat shard of the parameters: nothing tells
    # the optimizer its sums are partial but the mark FSDP1 leaves on them.
    fsdp1 = FullyShardedDataParallel(TinyNet(), device_id=torch.device("cpu"))
    batch_loss(fsdp1, make_batches(1, batch=BATCH)[0]).backward()
    setups = {
        "FSDP1 (FullyShardedDataParallel)": list(fsdp1.parameters()),
        "2-D mesh (HSDP)": [parameter([Replicate(), Shard(0)], mesh_2d)],
        "Partial placement": [partial],
        "DTensor and plain tensor in one group": [parameter([Shard(0)], mesh), plain],
    }
    errors = {}
    for label, params in setups.items():
        try:
            hypergrad.SGDHD(params, lr=0.1, hypergrad_lr=0.1).step()
            errors[label] = ""
        except ValueError as error:
            errors[label] = str(error)
    return errors


def _checkpoint_round_trip(name: str, mesh, directory: str) -> dict[str, Any]:
    """Save the sharded optimizer after 3 steps with torch.distributed.checkpoint, train on; load it
    into a fresh sharded model and optimizer and train the same steps."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    batches = make_batches(STEPS, batch=BATCH)
    rows = slice(dist.get_rank() * (BATCH // WORLD_SIZE), (dist.get_rank() + 1) * (BATCH // WORLD_SIZE))
    model = sharded_model(mesh)
    optimizer = make_optimizer(name, model)
    train_steps(model, optimizer, batches[:3], rows)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=directory)
    uninterrupted, _ = train_steps(model, optimizer, batches[3:], rows)

    resumed_model = sharded_model(mesh)
    resumed_optimizer = make_optimizer(name, resumed_model)
    model_state, optimizer_state = get_state_dict(resumed_model, resumed_optimizer)
    checkpoint = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(checkpoint, checkpoint_id=directory)
    set_state_dict(
        resumed_model, resumed_optimizer,
        model_state_dict=checkpoint["model"], optim_state_dict=checkpoint["optimizer"],
    )
    resumed, _ = train_steps(resumed_model, resumed_optimizer, batches[3:], rows)
    return dict(
        uninterrupted=uninterrupted, resumed=resumed,
        uninterrupted_params=full_parameters(model), resumed_params=full_parameters(resumed_model),
    )


def _bucket_view_run(rows: slice) -> dict[str, Any]:
    """Plain SGD-HD under DDP with ``gradient_as_bucket_view=True``: the gradients are views into
    DDP's buckets, whose memory every backward writes again. Records each step's rates and the
    gradients the step used (per group, flattened), and whether gradients were still kept."""
    model = TinyNet(width=MODEL_WIDTH["ddp"])
    ddp = torch.nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=True)
    optimizer = make_optimizer("SGDHD-plain", model)
    lrs, grads = [], []
    for x, y in make_batches(STEPS, batch=BATCH):
        optimizer.zero_grad()
        batch_loss(ddp, (x[rows], y[rows])).backward()
        grads.append([torch.cat([p.grad.reshape(-1) for p in group["params"]]).clone() for group in optimizer.param_groups])
        optimizer.step()
        lrs.append([group["lr"] for group in optimizer.param_groups])
    kept = [optimizer.state[p]["hypergrad_direction"] is p.grad for p in model.parameters()]
    return dict(lrs=lrs, grads=grads, adopting=optimizer._adopt_gradients, kept=kept)


def _worker(rank: int, port: int, out_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60))
    try:
        torch.set_num_threads(1)
        mesh = init_device_mesh("cpu", (WORLD_SIZE,))
        local = BATCH // WORLD_SIZE
        rows = slice(rank * local, (rank + 1) * local)
        results: dict[str, Any] = {"runs": {}}
        for mode, name, foreach in CASES:
            results["runs"][mode, name, foreach] = _run_case(mode, name, foreach, rows, mesh)

        # The same sharded run with the reduction taken out: each rank's statistics cover only its
        # shard. Shows that the equality checked above can fail.
        # (Both users of the reduction: the statistics, and first_step_bound's two norms.)
        users = (hypergrad.optimizer, hypergrad._step_bound)
        unreduced = hypergrad.optimizer.all_reduce_statistics
        for user in users:
            user.all_reduce_statistics = lambda params, statistics: list(statistics)
        try:
            results["unreduced"] = {name: _run_case("fsdp", name, False, rows, mesh) for name in REDUCED}
        finally:
            for user in users:
                user.all_reduce_statistics = unreduced

        results["bucket_view"] = _bucket_view_run(rows)
        results["unsupported"] = _unsupported_setups(mesh)
        results["checkpoint"] = {
            name: _checkpoint_round_trip(name, mesh, os.path.join(out_dir, f"checkpoint-{name}"))
            for name in CHECKPOINTED
        }
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(out_dir: Path, worker: Any = None) -> list[dict[str, Any]]:
    """Spawn two workers (``worker(rank, port, out_dir)``, this module's by default; each saves
    ``rank{rank}.pt`` in ``out_dir``), bounded by ``SPAWN_TIMEOUT_S``; return each rank's results."""
    context = torch.multiprocessing.start_processes(
        worker or _worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not context.join(timeout=max(deadline - time.monotonic(), 0)):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"the two distributed workers did not finish in {SPAWN_TIMEOUT_S} s")
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


def single_process(name: str, width: int) -> dict[str, Any]:
    """The reference: one process, plain tensors, the concatenated batches."""
    model = TinyNet(width=width)
    optimizer = make_optimizer(name, model)
    lrs, _ = train_steps(model, optimizer, make_batches(STEPS, batch=BATCH))
    return dict(lrs=lrs, params={n: p.detach().clone() for n, p in model.named_parameters()})


def relative_difference(observed: torch.Tensor | float, expected: torch.Tensor | float) -> float:
    observed, expected = torch.as_tensor(observed), torch.as_tensor(expected)
    return float((observed - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, Any]]:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    return run_two_ranks(tmp_path_factory.mktemp("distributed"))


def single_process_references() -> dict[tuple[str, int], dict[str, Any]]:
    return {(name, width): single_process(name, width) for name in OPTIMIZERS for width in set(MODEL_WIDTH.values())}


@pytest.fixture(scope="module")
def references() -> dict[tuple[str, int], dict[str, Any]]:
    return single_process_references()


@pytest.mark.parametrize("mode, name, foreach", CASES)
def test_ranks_agree_with_one_process_on_the_whole_batch(ranks, references, mode, name, foreach):
    runs = [r["runs"][mode, name, foreach] for r in ranks]
    reference = references[name, MODEL_WIDTH[mode]]
    assert torch.equal(runs[0]["lrs"], runs[1]["lrs"])  # identical on every rank, bit for bit
    initial = reference["lrs"][0]
    assert relative_difference(reference["lrs"][-1], initial) > 0.05  # the lr did move
    assert relative_difference(runs[0]["lrs"], reference["lrs"]) < 1e-5
    for param_name, expected in reference["params"].items():
        for run in runs:
            assert relative_difference(run["params"][param_name], expected) < 1e-5, param_name


@pytest.mark.parametrize("mode, name, foreach", CASES)
def test_one_all_reduce_per_step_when_sharded_none_with_ddp(ranks, mode, name, foreach):
    # Per-weight rates need no reduction: each weight's statistics are its own.
    per_step = 0 if mode == "ddp" or name not in REDUCED else 1
    for rank in ranks:
        first, *later = rank["runs"][mode, name, foreach]["collectives"]
        # Step 1 may have no previous direction, hence no statistics to reduce; a sharded group's
        # first step sums the two norms of first_step_bound over the ranks in one more.
        bound = 0 if mode == "ddp" or name not in HYPERGRADIENT else 1
        # (A climbing rule's |theta|^2 is summed with the statistics: AdamHD-bracket.)
        assert first in (bound, per_step + bound) and later == [per_step] * (STEPS - 1)


@pytest.mark.parametrize("name", REDUCED)
def test_without_the_reduction_ranks_drift_apart(ranks, references, name):
    rank_lrs = [r["unreduced"][name]["lrs"] for r in ranks]
    assert relative_difference(rank_lrs[0][-1], rank_lrs[1][-1]) > 1e-3
    for lrs in rank_lrs:
        assert relative_difference(lrs, references[name, MODEL_WIDTH["fsdp"]]["lrs"]) > 1e-3
    assert all(count == 0 for r in ranks for count in r["unreduced"][name]["collectives"])


def test_a_kept_gradient_in_a_ddp_bucket_is_caught(ranks):
    """Plain SGD-HD keeps ``p.grad`` as ``u_{t-1}``; DDP's bucket views write every backward into
    the same memory. At every step the rate moves by exactly ``beta * g_t . g_{t-1}`` (the
    additive rule on the gradients the steps used) or, at the one step where the kept gradient is
    found overwritten, stays; never by the overwritten ``beta * |g_t|^2``. From then on gradients
    are copied."""
    beta = OPTIMIZERS["SGDHD-plain"][1]["hypergrad_lr"]
    runs = [rank["bucket_view"] for rank in ranks]
    assert runs[0]["lrs"] == runs[1]["lrs"]
    run = runs[0]
    kept_steps = 0
    for t in range(1, STEPS):
        for group in range(2):
            previous, lr = run["lrs"][t - 1][group], run["lrs"][t][group]
            g, u = run["grads"][t][group].double(), run["grads"][t - 1][group].double()
            exact = previous + beta * float(g @ u)
            assert lr == pytest.approx(exact, rel=1e-6) or lr == previous, (t, group)
            assert lr != pytest.approx(previous + beta * float(g @ g), rel=1e-6), (t, group)
        kept_steps += run["lrs"][t] == run["lrs"][t - 1]
    assert kept_steps == 1 and not run["adopting"] and not any(run["kept"])


def test_unsupported_placements_raise_a_clear_error(ranks):
    for rank in ranks:
        errors = rank["unsupported"]
        assert "2-D device mesh" in errors["2-D mesh (HSDP)"]
        assert "Partial" in errors["Partial placement"]
        assert "mixes DTensor" in errors["DTensor and plain tensor in one group"]
        assert "FullyShardedDataParallel" in errors["FSDP1 (FullyShardedDataParallel)"]


@pytest.mark.parametrize("name", CHECKPOINTED)
def test_sharded_state_dict_round_trips_through_distributed_checkpoint(ranks, name):
    for rank in ranks:
        run = rank["checkpoint"][name]
        assert torch.equal(run["resumed"], run["uninterrupted"])
        for param_name, expected in run["uninterrupted_params"].items():
            torch.testing.assert_close(run["resumed_params"][param_name], expected, rtol=0, atol=0)


def print_table(ranks: list[dict[str, Any]]) -> None:
    """mode x optimizer x foreach -> each rank's final lrs, the single-process lrs, differences."""
    references = single_process_references()
    print(f"{STEPS} steps, global batch {BATCH} (DDP, FSDP2: split over {WORLD_SIZE} ranks); lrs of groups 0 and 1 after the last step")
    print("| mode | optimizer | foreach | rank 0 lr | rank 1 lr | single-process lr | max rel. diff lr (all steps) | max rel. diff params | all-reduces per step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, name, foreach in CASES:
        runs = [r["runs"][mode, name, foreach] for r in ranks]
        reference = references[name, MODEL_WIDTH[mode]]
        lr_difference = max(relative_difference(run["lrs"], reference["lrs"]) for run in runs)
        param_difference = max(
            relative_difference(run["params"][n], p) for run in runs for n, p in reference["params"].items()
        )
        # the first weight's rate and the last one's: group 0's and group 1's lr at granularity "group"
        cells = [f"{lrs[-1, 0]:.9g}, {lrs[-1, -1]:.9g}" for lrs in (runs[0]["lrs"], runs[1]["lrs"], reference["lrs"])]
        print(f"| {mode} | {name} | {foreach} | {cells[0]} | {cells[1]} | {cells[2]} | {lr_difference:.1e} | "
              f"{param_difference:.1e} | {runs[0]['collectives']} |")
    print("\nWithout the reduction (FSDP2, each rank's statistics over its shard only):")
    for name in REDUCED:
        lrs = [r["unreduced"][name]["lrs"][-1] for r in ranks] + [references[name, MODEL_WIDTH["fsdp"]]["lrs"][-1]]
        print(f"  {name}: " + ", ".join(f"{who} {rates[0]:.9g}, {rates[-1]:.9g}" for who, rates in zip(("rank 0", "rank 1", "single process"), lrs)))


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        print_table(run_two_ranks(Path(directory)))
