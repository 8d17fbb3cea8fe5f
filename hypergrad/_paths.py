"""Which path a param group's step takes by default, decided from its parameters once per group
(``HypergradOptimizer._layout``): fused or not, the passes around the kernel compiled or eager,
and whether its statistics could ever be reduced over ranks."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._compat import is_fsdp1_flat_param
from .distributed import PLAIN_TYPES

__all__ = ["COMPILED_BY_DEFAULT", "FUSED_BY_DEFAULT_DTYPES", "GroupLayout", "fused_by_default"]


class GroupLayout(NamedTuple):
    """``fused``: the group's default path is fused (:func:`fused_by_default`); ``compiled``: it
    is large enough to compile the passes around the kernel (:data:`COMPILED_BY_DEFAULT`);
    ``plain``: its parameters are plain tensors, none sharded (no DTensor, no FSDP1 flat
    parameter), so that its statistics are never reduced over ranks."""

    fused: bool
    compiled: bool
    plain: bool

    @classmethod
    def of(cls, params: list[Tensor]) -> GroupLayout:
        large = sum(p.numel() for p in params if isinstance(p, Tensor)) >= COMPILED_BY_DEFAULT
        plain = all(type(p) in PLAIN_TYPES and not is_fsdp1_flat_param(p) for p in params)
        return cls(fused_by_default(params), large, plain)


#: Parameter dtypes whose default path on the CPU is the fused one.
FUSED_BY_DEFAULT_DTYPES = (torch.float32, torch.float64)
#: The default path compiles the passes around the fused kernel for groups of this many elements
#: or more. Compiling costs seconds at the first step (``benchmarks/overhead.py --first-steps``,
#: fused AdamHD on this loaded 2-core machine: 3.2 s of process time and 23 s of wall time with
#: inductor's cache cold, 1.6 s and 5 s warm) and needs a C++ compiler. The compiled passes save
#: 0.4-0.9 ms a step per million Adam parameters, so a cold compile is repaid after some 3-6k steps
#: at 10M parameters but 25-60k at 1M: smaller groups' default steps stay eager (they start at
#: once, need no compiler, and a short run is not charged seconds). ``fused=True`` compiles at
#: every size.
COMPILED_BY_DEFAULT = 10_000_000


def fused_by_default(params: list[Tensor]) -> bool:
    """Whether ``fused=None, foreach=None`` takes the fused path (for a base rule with a fused
    kernel): plain float32/float64 tensors on the CPU. There torch's fused kernel is the fastest
    HD step at every size measured, 1k to 10M parameters, with the passes around it eager or
    compiled (docs/performance.md, ``benchmarks/overhead.py --paths``): compiled only for groups
    of :data:`COMPILED_BY_DEFAULT` elements or more (compiling takes seconds). A ``capturable``
    group, and elsewhere every group, takes torch.optim's default (foreach on accelerators; no GPU
    figure exists yet to choose otherwise)."""
    return all(
        type(p) in PLAIN_TYPES and p.device.type == "cpu" and p.dtype in FUSED_BY_DEFAULT_DTYPES
        for p in params
    )
