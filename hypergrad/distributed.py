"""Hypergradient statistics across processes: data-parallel (DDP) and sharded (FSDP2) training.

A group's learning rate is a function of sums over all of its parameters' elements:
``g_t . u_{t-1}`` (and ``|g_t|^2``, ``|u_{t-1}|^2`` for the multiplicative rule). Every rank must
end the step with the same learning rate, the one a single process would compute.

* Plain tensors (single process, ``DistributedDataParallel``): every rank holds every parameter
  and, after DDP's gradient all-reduce, the same gradient, so every rank computes the same sums.
  Nothing is exchanged.
* DTensor parameters on a one-dimensional device mesh (FSDP2's ``fully_shard``; a tensor-parallel
  plan on a 1-D mesh gives the same placements): each rank sums over the elements it *counts* --
  its local shard of a ``Shard(dim)`` tensor; all of a ``Replicate()`` tensor on the mesh's first
  rank and nothing on the others -- so that every element is counted exactly once; then one
  ``all_reduce`` of every group's sums, stacked into one small tensor, gives each rank the global
  sums. The sums are taken on local tensors (``to_local()``): no parameter is ever gathered.
* Everything else raises ``ValueError`` rather than let ranks drift apart: meshes of more than one
  dimension (HSDP, FSDP x tensor parallel), ``Partial`` or other placements, gradients placed
  unlike their parameters, one group mixing DTensor and plain tensors, groups on different meshes,
  and FSDP1 (``FullyShardedDataParallel``, whose flat shards are plain tensors).

* ``torch.distributed.optim.ZeroRedundancyOptimizer`` on more than one rank is refused at its
  first step, before anything moves (``ValueError``, from a global optimizer step pre-hook that
  the first hypergradient optimizer built after ZeRO's module was imported registers): each
  rank's local optimizer would step, and take the statistics of, its own shard of the parameters
  only.

``torch.distributed.tensor`` is looked up only once something else has imported it: no tensor can
be a DTensor before that, and importing it here would add seconds to ``import hypergrad``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from ._compat import is_fsdp1_flat_param

__all__ = ["PLAIN_TYPES", "all_reduce_statistics", "check_not_zero_sharded", "local_operands", "local_tensors",
           "watch_zero_redundancy"]

#: The types of a plain (not sharded, not a subclass) tensor or parameter, checked by ``type(t) in``.
PLAIN_TYPES = (Tensor, torch.nn.Parameter)

Statistics = Union[Tensor, list[Union[Tensor, None]], None]
"""A group's statistics: sums over the group or per-tensor rows (a tensor), per-weight (a list)."""


def _dtensor_module() -> Any | None:
    return sys.modules.get("torch.distributed.tensor")


def _is_dtensor(tensor: Tensor) -> bool:
    module = _dtensor_module()
    return module is not None and isinstance(tensor, module.DTensor)


def _check_placement(tensor: Tensor, what: str) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a DTensor on a 1-D mesh, sharded or replicated."""
    module = _dtensor_module()
    mesh = tensor.device_mesh
    if mesh.ndim != 1:
        raise ValueError(
            f"hypergrad optimizers do not support {what} on a {mesh.ndim}-D device mesh "
            f"(placements {tensor.placements}): the learning-rate statistics are reduced over one "
            "mesh dimension only. Supported: DDP, and DTensor parameters on a 1-D mesh (FSDP2's "
            "fully_shard, or tensor parallelism)."
        )
    (placement,) = tensor.placements
    if not isinstance(placement, (module.Shard, module.Replicate)):
        raise ValueError(
            f"hypergrad optimizers do not support {what} with placement {placement!r}: "
            "only Shard(dim) and Replicate() on a 1-D mesh are supported."
        )


def local_operands(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """The parts of ``a`` and ``b`` whose elements this rank counts in a sum over all ranks.

    Plain tensors come back as they are. For DTensors (which must be placed alike): the local
    shards of a ``Shard(dim)`` pair; the local copies of a ``Replicate()`` pair on the mesh's first
    rank and empty tensors on the others, so that the all-reduced sum counts every element once.
    """
    if type(a) is Tensor and type(b) is Tensor:  # the common case, without a module lookup
        return a, b
    a_distributed, b_distributed = _is_dtensor(a), _is_dtensor(b)
    if not (a_distributed or b_distributed):
        return a, b
    if not (a_distributed and b_distributed):
        raise ValueError("hypergradient statistics cannot mix a DTensor with a regular tensor")
    _check_placement(a, "a gradient")
    if a.placements != b.placements or a.device_mesh != b.device_mesh:
        raise ValueError(
            f"hypergradient statistics need a gradient and an update direction placed alike, got "
            f"{a.placements} and {b.placements}"
        )
    a_local, b_local = a.to_local(), b.to_local()
    if isinstance(a.placements[0], _dtensor_module().Replicate) and a.device_mesh.get_local_rank() != 0:
        return a_local.reshape(-1)[:0], b_local.reshape(-1)[:0]
    return a_local, b_local


def local_tensors(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Each DTensor's local tensor (same storage: writing to it writes the DTensor), others as
    they are. For elementwise kernels that DTensor has no sharding rule for, e.g.
    ``torch._foreach_copy_`` (torch 2.13); the arguments of one kernel must be placed alike."""
    if _dtensor_module() is None or all(type(t) in PLAIN_TYPES for t in tensors):
        return list(tensors)
    return [t.to_local() if _is_dtensor(t) else t for t in tensors]


def _group_mesh(params: Sequence[Tensor]) -> Any | None:
    """The device mesh of a group of DTensor parameters, or ``None`` for plain tensors."""
    distributed = [_is_dtensor(p) for p in params]
    if not any(distributed):
        # FSDP1 imports torch.distributed.tensor too, so its flat shards are always checked here.
        if any(is_fsdp1_flat_param(p) for p in params):
            raise ValueError(
                "hypergrad optimizers do not support FSDP1 (FullyShardedDataParallel): its parameters are "
                "plain tensors holding each rank's flat shard, so the learning-rate statistics cannot be "
                "summed across ranks. Use FSDP2 (torch.distributed.fsdp.fully_shard) or DDP."
            )
        return None
    if not all(distributed):
        raise ValueError(
            "a param group mixes DTensor (sharded) and regular tensor parameters: its learning-rate "
            "statistics would be counted once on some ranks and on every rank for others; put the "
            "regular tensors in a group of their own or shard them too"
        )
    mesh = params[0].device_mesh
    for p in params:
        _check_placement(p, "a parameter")
        if p.device_mesh is not mesh and p.device_mesh != mesh:
            raise ValueError("a param group holds DTensor parameters on different device meshes")
    return mesh


_ZERO_MODULE = "torch.distributed.optim.zero_redundancy_optimizer"
_zero_watch: RemovableHandle | None = None


def watch_zero_redundancy(hypergrad_class: type[Optimizer]) -> None:
    """Once ``ZeroRedundancyOptimizer``'s module has been imported (it is, before ZeRO can build a
    local optimizer of ``hypergrad_class``), register a global optimizer step pre-hook (torch's
    ``register_optimizer_step_pre_hook``, once per process) that refuses, at its first step and
    before anything moves, a ZeRO optimizer whose local optimizer is a ``hypergrad_class``
    (:func:`check_not_zero_sharded`)."""
    global _zero_watch
    if _zero_watch is None and _ZERO_MODULE in sys.modules:
        _zero_watch = register_optimizer_step_pre_hook(functools.partial(_before_step, hypergrad_class))


def _before_step(hypergrad_class: type[Optimizer], optimizer: Optimizer, args: Any, kwargs: Any) -> None:
    zero = sys.modules[_ZERO_MODULE].ZeroRedundancyOptimizer
    if isinstance(optimizer, zero) and isinstance(getattr(optimizer, "optim", None), hypergrad_class):
        check_not_zero_sharded(optimizer)


def check_not_zero_sharded(zero: Any) -> None:
    """``ValueError`` for a ``ZeroRedundancyOptimizer`` over more than one rank (``zero.optim``,
    its local optimizer, is a hypergradient optimizer)."""
    if zero.world_size > 1:
        raise ValueError(
            f"{type(zero.optim).__name__} cannot be the optimizer_class of ZeroRedundancyOptimizer on "
            f"{zero.world_size} ranks: each rank's local optimizer steps its own shard of the parameters, so its "
            "learning rate would follow the hypergradient of that shard alone and the ranks would end with "
            "different rates. Use DDP with the optimizer itself, or FSDP2 (fully_shard), whose statistics are "
            "all-reduced."
        )


def all_reduce_statistics(
    group_params: Sequence[Sequence[Tensor] | None], statistics: Sequence[Statistics]
) -> list[Statistics]:
    """Sum the statistics of the sharded groups over their mesh, all groups in one ``all_reduce``.

    ``group_params[i]`` are the parameters behind ``statistics[i]`` (``None`` where a group has no
    statistics this step, which every rank agrees on because their optimizer states match);
    ``group_params[i]`` is ``None`` for a group known to hold plain tensors only. Groups of plain
    tensors keep their local statistics. Returns the statistics to use.
    """
    if _dtensor_module() is None or all(params is None for params in group_params):
        return list(statistics)
    meshes = [None if params is None else _group_mesh(params) for params in group_params]
    # Sums over a group or one row per tensor are reduced; per-weight statistics (a list) need not
    # be: each weight's statistics come from that weight alone, on whichever rank holds it.
    sharded = [
        i for i, (mesh, s) in enumerate(zip(meshes, statistics)) if mesh is not None and isinstance(s, Tensor)
    ]
    if not sharded:
        return list(statistics)
    mesh = meshes[sharded[0]]
    if any(meshes[i] is not mesh and meshes[i] != mesh for i in sharded):
        raise ValueError("param groups on different device meshes cannot share one hypergrad optimizer")
    local = [statistics[i] for i in sharded]
    summed = torch.cat([s.reshape(-1) for s in local])
    # CPU-offloaded shards (FSDP2's CPUOffloadPolicy) have their statistics on the CPU while a
    # NCCL mesh reduces on its device: the copy there and back is of a few numbers.
    on_mesh_device = summed.to(mesh.device_type)
    torch.distributed.all_reduce(on_mesh_device, group=mesh.get_group())
    summed = on_mesh_device.to(summed.device)
    reduced = list(statistics)
    for i, s, part in zip(sharded, local, summed.split([s.numel() for s in local])):
        reduced[i] = part.view_as(s)
    return reduced
