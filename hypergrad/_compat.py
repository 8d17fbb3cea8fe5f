"""Every private part of torch that hypergrad uses, in one place.

The optimizers take torch.optim's own steps (its fused kernels, its choice of the foreach path, its
capture check), so they reach into names torch does not promise to keep. They are reached only
through this module: when a torch release moves one, this is the file to change, and
``tests/test_compat.py`` checks that no other module of the package uses them.

Tested on torch :data:`TESTED_TORCH` (``pyproject.toml`` requires ``torch>=2.13``: the oldest
release the suite has run on; a newer one is tested when it is added here).

=====================================  =====================================================
here                                   torch's (2.13)
=====================================  =====================================================
:func:`default_foreach`                ``torch.optim.optimizer._default_to_fused_or_foreach``
:func:`step_value`                     ``torch.optim.optimizer._get_value``
:func:`check_fused_param`              ``torch.optim.optimizer._device_dtype_check_for_fused``
:func:`group_by_device_and_dtype`      ``Optimizer._group_tensors_by_device_and_dtype``
:func:`capture_health_check`           ``Optimizer._accelerator_graph_capture_health_check``
:data:`fused_sgd` ... ``fused_adagrad``  ``torch._fused_sgd_``, ``_fused_adam_``, ``_fused_adamw_``,
                                       ``_fused_adagrad_``
:func:`version`                        ``Tensor._version`` (the in-place write counter)
:func:`set_last_lr`                    ``LRScheduler._last_lr`` (what ``get_last_lr()`` returns)
:func:`is_fsdp1_flat_param`            ``FlatParameter``'s ``_fsdp_flattened`` mark (FSDP1)
:func:`flat_copy`                      ``torch._utils._flatten_dense_tensors``
=====================================  =====================================================

Used directly, not wrapped: the ``torch._foreach_*`` multi-tensor kernels (``_foreach_add_``,
``_foreach_mul_``, ...), which torch.optim's foreach implementations are written in, whose
signatures mirror the public elementwise ops and have not changed since torch 1.x; wrapping each
would hide nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import _default_to_fused_or_foreach, _device_dtype_check_for_fused, _get_value

__all__ = [
    "TESTED_TORCH", "capture_health_check", "check_fused_param", "default_foreach", "fused_adagrad", "fused_adam",
    "fused_adamw", "fused_sgd", "group_by_device_and_dtype", "is_fsdp1_flat_param", "set_last_lr", "step_value",
    "version",
]

#: The torch releases the test suite has passed on.
TESTED_TORCH: tuple[str, ...] = ("2.13.0",)

#: torch.optim's fused update kernels (CPU and CUDA), called as torch.optim calls them.
fused_sgd = torch._fused_sgd_
fused_adam = torch._fused_adam_
fused_adamw = torch._fused_adamw_
fused_adagrad = torch._fused_adagrad_


def default_foreach(params: list[Tensor]) -> bool:
    """torch.optim's default for ``foreach=None``: multi-tensor kernels where every parameter
    is on a device that has them (not the CPU), never under ``differentiable``."""
    return _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)[1]


def step_value(step: Tensor) -> float | Tensor:
    """A step count as torch.optim reads it: a float on the host, the tensor itself under
    ``torch.compile`` (a host read would break the graph)."""
    return _get_value(step)


def check_fused_param(param: Tensor) -> None:
    """torch.optim's check of a parameter stepped by a fused kernel (a floating-point tensor on a
    device with the kernels); ``RuntimeError`` as torch raises it."""
    _device_dtype_check_for_fused(param)


def group_by_device_and_dtype(tensorlists: list[list[Tensor]]) -> dict[Any, tuple[list[list[Tensor]], list[int]]]:
    """torch.optim's grouping of parallel tensor lists by (device, dtype), with each group's
    indices into the lists."""
    return torch.optim.Optimizer._group_tensors_by_device_and_dtype(tensorlists, with_indices=True)  # type: ignore[return-value]


def capture_health_check(optimizer: torch.optim.Optimizer) -> None:
    """torch.optim's refusal to capture a step of a group without ``capturable`` in a CUDA graph."""
    optimizer._accelerator_graph_capture_health_check()


def version(tensor: Tensor) -> int:
    """How many in-place writes ``tensor``'s memory has had (autograd's version counter)."""
    return tensor._version


def flat_copy(tensors: Sequence[Tensor]) -> Tensor:
    """The tensors' elements in one new 1-dim tensor, in one call (one tensor's flattening is a
    dispatch of its own with ``torch.cat``)."""
    return torch._utils._flatten_dense_tensors(tensors)


def is_fsdp1_flat_param(param: Tensor) -> bool:
    """Whether ``param`` is (a view into) FSDP1's flat parameter, which holds one rank's shard of
    many parameters as a plain tensor."""
    return bool(getattr(param, "_fsdp_flattened", False))


def set_last_lr(scheduler: Any, rates: Sequence[float]) -> None:
    """Make ``scheduler.get_last_lr()`` return ``rates`` (torch's schedulers return the list they
    keep in ``_last_lr``)."""
    scheduler._last_lr = list(rates)
