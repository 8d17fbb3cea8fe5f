"""timm: the HD optimizers in timm's optimizer registry.

After :func:`register`, ``timm.optim.create_optimizer_v2(model, opt="adamwhd", lr=1e-3,
weight_decay=0.05)`` builds an :class:`~hypergrad.AdamWHD` with timm's param groups (no weight
decay on biases and norm weights, layer decay where asked), and ``opt="lookahead_adamwhd"`` wraps
it in timm's ``Lookahead``. The names, each registered as timm registers its ``torch.optim``
twin (same defaults, e.g. Nesterov momentum 0.9 for ``sgdhd`` as for ``sgd``):

========== ================= ===================
name       class             timm's twin
========== ================= ===================
sgdhd      SGDHD             sgd
adamhd     AdamHD            adam
adamwhd    AdamWHD           adamw
adagradhd  AdagradHD         adagrad
rmsprophd  RMSpropHD         rmsprop
========== ================= ===================
"""

from __future__ import annotations

from typing import Any

from timm.optim import OptimInfo, OptimizerRegistry
from timm.optim import _optim_factory

from ..adagrad import AdagradHD
from ..adam import AdamHD, AdamWHD
from ..rmsprop import RMSpropHD
from ..sgd import SGDHD

__all__ = ["OPTIMIZERS", "register"]

OPTIMIZERS: tuple[OptimInfo, ...] = (
    OptimInfo(name="sgdhd", opt_class=SGDHD, description="SGD (Nesterov momentum) with hypergradient descent on the learning rate",
              has_eps=False, has_momentum=True, defaults={"nesterov": True}),
    OptimInfo(name="adamhd", opt_class=AdamHD, description="Adam with hypergradient descent on the learning rate",
              has_betas=True),
    OptimInfo(name="adamwhd", opt_class=AdamWHD, description="AdamW with hypergradient descent on the learning rate",
              has_betas=True),
    OptimInfo(name="adagradhd", opt_class=AdagradHD, description="Adagrad with hypergradient descent on the learning rate",
              defaults={"eps": 1e-8}),
    OptimInfo(name="rmsprophd", opt_class=RMSpropHD, description="RMSprop with hypergradient descent on the learning rate",
              has_momentum=True, defaults={"alpha": 0.9}),
)


def register(registry: Any = None) -> None:
    """Add :data:`OPTIMIZERS` to ``registry`` (timm's default registry, the one
    ``create_optimizer_v2`` uses, when None); calling it again changes nothing."""
    if registry is None:
        registry = _optim_factory.default_registry
    if not isinstance(registry, OptimizerRegistry):
        raise TypeError(f"registry must be a timm.optim.OptimizerRegistry or None, got {type(registry).__name__}")
    present = set(registry.list_optimizers())
    for info in OPTIMIZERS:
        if info.name not in present or registry.get_optimizer_info(info.name) is not info:
            registry.register(info)
