"""Data-parallel runs under ``torchrun``: ``python -m experiments run ... --distributed ddp|fsdp``.

``torchrun --nproc_per_node=N -m experiments run TASK --distributed ddp`` starts N processes
(ranks). Every rank builds the same model from the same seed and walks the same data order; each
global batch of ``--batch-size`` rows is split across the ranks (rank r takes the r-th of N nearly
equal parts) and each rank's loss is scaled so that, after DDP's or FSDP's gradient averaging,
every rank holds the gradient of the whole batch's mean loss: the run is the single-process run,
up to floating-point rounding. The hypergrad optimizers give every rank the same learning rate
(FSDP2: one all-reduce of the statistics per step, see ``hypergrad/distributed.py``). Only rank 0
writes files and prints. The process group uses NCCL on CUDA devices and gloo on the CPU.

Batch-norm statistics are per rank (no SyncBatchNorm) and dropout draws differ from a single
process, so the CNN/VGG tasks are not bit-for-bit a single-process run; logreg and MLP are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.optim import Optimizer

__all__ = ["MODES", "NOT_SHARDABLE", "DataParallel", "data_parallel"]

MODES = ("ddp", "fsdp")
NOT_SHARDABLE = ("prodigy", "dadapt_adam", "dog")
"""Peers whose step takes norms or dot products over all parameters without reducing them
across ranks: with FSDP each rank would see only its shard and the ranks would drift apart."""
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run."""

    mode: str
    rank: int
    world_size: int
    device: torch.device

    @property
    def writes_files(self) -> bool:
        return self.rank == 0

    def local_rows(self, count: int) -> slice:
        """This rank's part of a global batch of ``count`` rows (``tensor_split``'s parts)."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around the model, or FSDP2 sharding of every layer that holds parameters."""
        if self.mode == "ddp":
            device_ids = [self.device] if self.device.type == "cuda" else None
            return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        from torch.distributed.fsdp import fully_shard

        for module in list(model.modules())[1:]:
            if any(True for _ in module.parameters(recurse=False)):
                fully_shard(module)
        fully_shard(model)
        return model

    def backward(self, output: torch.Tensor, target: torch.Tensor, global_count: int) -> torch.Tensor:
        """Backpropagate this rank's share of the global batch's mean cross-entropy; return that
        mean (every rank gets the same value: the loss sums are all-reduced)."""
        loss_sum = nn.functional.cross_entropy(output, target, reduction="sum")
        # DDP and FSDP average the gradients over the ranks: scale by world_size / global_count.
        (loss_sum * (self.world_size / global_count)).backward()
        total = loss_sum.detach().clone()
        dist.all_reduce(total)
        return total / global_count

    def state_dicts(self, model: nn.Module, optimizer: Optimizer) -> tuple[dict, dict]:
        """Full (unsharded, unwrapped) model and optimizer state dicts on rank 0; every rank must
        call this (it gathers shards), the others get empty dicts."""
        return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_state_dicts(self, model: nn.Module, optimizer: Optimizer, model_state: dict, optimizer_state: dict) -> None:
        """Load full state dicts (as :meth:`state_dicts` gives them) on every rank; each keeps its shard."""
        set_state_dict(
            model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
            options=StateDictOptions(full_state_dict=True),
        )


def data_parallel(mode: str, device: torch.device) -> DataParallel:
    """Join the run that ``torchrun`` launched (the process group is created once per process).

    ``device`` is the device the run asked for; on CUDA each rank takes ``cuda:LOCAL_RANK``.
    """
    if mode not in MODES:
        raise ValueError(f"distributed must be one of {MODES}, got {mode!r}")
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(
            f"--distributed {mode} needs to be launched by torchrun (missing environment variables "
            f"{', '.join(missing)}): torchrun --nproc_per_node=N -m experiments run ... --distributed {mode}"
        )
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DataParallel(mode, dist.get_rank(), dist.get_world_size(), device)
