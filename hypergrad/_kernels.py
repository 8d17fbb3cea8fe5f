"""The small pieces the base rules' step kernels share: real views of complex tensors, the stored
direction buffer, the device/dtype grouping of the foreach paths and the final ``theta -= lr * u``
with a float or a device-resident tensor learning rate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Union

import torch
from torch import Tensor

from ._compat import group_by_device_and_dtype
from .distributed import PLAIN_TYPES, local_tensors

LearningRate = Union[float, Tensor]


def as_real(tensor: Tensor) -> Tensor:
    """A complex tensor viewed as real (a trailing dimension of 2); a real one as it is."""
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


#: The state key of a stored direction (a base rule that keeps something else names its own).
DIRECTION = "hypergrad_direction"


def direction_buffer(state: dict[str, Any], like: Tensor, key: str = DIRECTION) -> Tensor:
    """``state[key]`` (the stored direction), created empty like ``like`` on first use."""
    if key not in state:
        state[key] = torch.empty_like(like, memory_format=torch.preserve_format)
    return state[key]


def stored_copies(states: list[dict[str, Any]], tensors: list[Tensor], key: str = DIRECTION) -> list[Tensor]:
    """Copy ``tensors`` into the states' buffers ``key`` (one foreach copy); the buffers."""
    directions = [direction_buffer(s, t, key) for s, t in zip(states, tensors)]
    torch._foreach_copy_(local_tensors(directions), local_tensors(tensors))
    return directions


def adopt_directions(states: list[dict[str, Any]], directions: list[Tensor], key: str = DIRECTION) -> list[Tensor]:
    """Keep this step's freshly computed tensors as the stored ones, ``state[key]`` (no copy)."""
    for state, direction in zip(states, directions):
        state[key] = direction
    return directions


def by_device(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
) -> Iterator[tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]]:
    """The foreach paths' grouping: parameters, gradients and states per (device, dtype)."""
    if one_kind(params) and one_kind(grads) and params[0].dtype == grads[0].dtype:
        yield params, grads, states  # (torch's grouping costs more than these checks on a few tensors)
        return
    grouped = group_by_device_and_dtype([params, grads])
    for (device_params, device_grads), indices in grouped.values():
        yield device_params, device_grads, [states[i] for i in indices]


def one_kind(tensors: list[Tensor]) -> bool:
    """Whether ``tensors`` are plain tensors (or parameters) of one device and dtype."""
    first = tensors[0]
    device, dtype = first.device, first.dtype
    return all(type(t) in PLAIN_TYPES and t.dtype == dtype and t.device == device for t in tensors)


#: The CPU scalar 1 that :func:`increment_steps` adds (read only; made once, not at every step).
_ONE = torch.tensor(1.0)


def increment_steps(steps: list[Tensor]) -> None:
    """``step += 1`` for a list of step counts: on the CPU with one scalar tensor (torch's trick:
    the foreach fallback loop would wrap the number into a new tensor per count)."""
    if steps[0].is_cpu:
        torch._foreach_add_(steps, _ONE, alpha=1.0)
    else:
        torch._foreach_add_(steps, 1)


def descend(param: Tensor, direction: Tensor, lr: LearningRate) -> None:
    """``param -= lr * direction`` in place, without reading a tensor ``lr`` on the host."""
    if isinstance(lr, Tensor):
        param.addcmul_(direction, lr, value=-1)
    else:
        param.add_(direction, alpha=-lr)


def foreach_descend(params: list[Tensor], directions: list[Tensor], lr: LearningRate) -> None:
    """:func:`descend` over lists, in multi-tensor kernels."""
    if isinstance(lr, Tensor):
        torch._foreach_sub_(params, torch._foreach_mul(directions, lr))
    else:
        torch._foreach_add_(params, directions, alpha=-lr)
