"""Discriminative (layer-wise) learning rates for fine-tuning (ULMFiT; fastai's ``slice(low, high)``).

Lower layers learn general features and need small changes; a newly attached head starts from
random weights and needs large ones. `layerwise_param_groups` turns a model into optimizer param
groups with that shape. Pass the groups to any optimizer; a hypergradient optimizer then adapts
each group's rate separately, starting from these values.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ._validation import check_number, check_pair

__all__ = ["layerwise_param_groups"]


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module | None, list[nn.Parameter]]]:
    """The model's layer blocks, bottom to top, as (name, module, parameters it owns directly).

    A block is a child module that holds parameters, in registration order (the order of
    ``named_children``, which for ``nn.Sequential`` is the order of the forward pass). A
    wrapper with a single such child is looked through. Parameters registered on the model
    itself form a first block named ``"<root>"`` (they are usually embeddings or similar).
    """
    prefix = ""
    while True:
        children = [
            (name, child)
            for name, child in model.named_children()
            if any(True for _ in child.parameters())
        ]
        own = list(model.parameters(recurse=False))
        if len(children) == 1 and not own:
            name, model = children[0]
            prefix = f"{prefix}{name}."
            continue
        blocks: list[tuple[str, nn.Module | None, list[nn.Parameter]]] = []
        if own:
            blocks.append((prefix + "<root>" if prefix else "<root>", None, own))
        blocks += [(prefix + name, child, list(child.parameters())) for name, child in children]
        return blocks


def layerwise_param_groups(
    model: nn.Module,
    lr: float | None = None,
    *,
    decay: float | None = None,
    lr_range: tuple[float, float] | None = None,
    head: nn.Module | str | None = None,
    head_lr_mult: float = 10.0,
) -> list[dict[str, Any]]:
    """Optimizer param groups with learning rates that grow from the bottom layers to the head.

    The body (the model without ``head``) is split into layer blocks: its top-level children
    that hold parameters, in registration order (a wrapper with a single such child is looked
    through; parameters owned by the model itself come first as ``"<root>"``). With ``n``
    blocks, bottom block 0 to top block ``n - 1``, block ``k`` gets

    - ``lr * decay ** (n - 1 - k)`` with ``lr`` and ``decay`` (ULMFiT uses ``decay = 1/2.6``),
    - ``low * (high / low) ** (k / (n - 1))`` with ``lr_range=(low, high)`` (fastai's
      ``slice(low, high)``: geometric spacing, the top block at ``high``),
    - ``lr`` for every block with ``lr`` alone.

    The head's parameters form the last group, at ``head_lr_mult`` times the top block's rate
    (a freshly initialised head is commonly trained at about 10x the body's rate).

    Only parameters with ``requires_grad`` are included; blocks with none are left out.
    Each group has ``"params"``, ``"lr"`` and ``"name"`` (the block's attribute path, or
    ``"head"``); optimizers keep the extra ``"name"`` key, which is handy for logging rates.

    Args:
        model: the model to split.
        lr: the top body block's rate; give either ``lr`` or ``lr_range``.
        decay: factor per block going down, in (0, 1]; only with ``lr``.
        lr_range: ``(low, high)``, ``0 < low <= high``: the bottom and top blocks' rates.
        head: the newly attached head, as a submodule of ``model`` or its name
            (``model.get_submodule(head)``); ``None`` for no separate head.
        head_lr_mult: the head's rate over the top body block's rate, > 0.

    Returns:
        Param groups, bottom block first and the head (if any) last.

    Raises:
        ValueError: bad rates, both or neither of ``lr`` / ``lr_range``, a head that is not
            part of the model or has no trainable parameter, or nothing trainable.
    """
    _check_rates(lr, decay, lr_range, head_lr_mult)
    head_params = _head_params(model, head)
    seen = {id(p) for p in head_params}
    body: list[tuple[str, list[nn.Parameter]]] = []
    for name, _, params in _blocks(model):
        trainable = [p for p in params if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in trainable)
        if trainable:
            body.append((name, trainable))
    if not body and not head_params:
        raise ValueError("model has no trainable parameter")

    n = len(body)
    if lr_range is not None:
        low, high = lr_range
        rates = [low * (high / low) ** (k / (n - 1)) if n > 1 else high for k in range(n)]
        top = high
    else:
        assert lr is not None
        factor = 1.0 if decay is None else decay
        rates = [lr * factor ** (n - 1 - k) for k in range(n)]
        top = lr
    groups: list[dict[str, Any]] = [
        {"params": params, "lr": rate, "name": name}
        for (name, params), rate in zip(body, rates, strict=True)
    ]
    if head_params:
        groups.append({"params": head_params, "lr": top * head_lr_mult, "name": "head"})
    return groups


def _check_rates(
    lr: float | None, decay: float | None, lr_range: tuple[float, float] | None, head_lr_mult: float
) -> None:
    """`layerwise_param_groups`' checks of the rates it is given (numbers: ``TypeError`` naming
    the argument otherwise)."""
    if (lr is None) == (lr_range is None):
        raise ValueError("give exactly one of lr and lr_range")
    for name, value in (("lr", lr), ("decay", decay)):
        if value is not None:
            check_number(name, value)
    check_number("head_lr_mult", head_lr_mult)
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if decay is not None:
        if lr_range is not None:
            raise ValueError("decay goes with lr; lr_range already fixes every block's rate")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
    if lr_range is not None:
        low, high = check_pair("lr_range", lr_range)
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"lr_range must satisfy 0 < low <= high (finite), got {lr_range!r}")
    if not (math.isfinite(head_lr_mult) and head_lr_mult > 0):
        raise ValueError(f"head_lr_mult must be a finite number > 0, got {head_lr_mult}")


def _head_params(model: nn.Module, head: nn.Module | str | None) -> list[nn.Parameter]:
    """The head's trainable parameters (none without a head); ValueError if it is not part of
    ``model`` or has none."""
    if head is None:
        return []
    if isinstance(head, str):
        try:
            head = model.get_submodule(head)
        except AttributeError as err:
            raise ValueError(f"head {head!r} is not a submodule of the model") from err
    elif not any(m is head for m in model.modules()):
        raise ValueError("head must be a submodule of model (or its name)")
    head_params = [p for p in head.parameters() if p.requires_grad]
    if not head_params:
        raise ValueError("head has no trainable parameter")
    return head_params
