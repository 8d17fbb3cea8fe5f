"""Slow, obviously correct twins of the hypergradient optimizers.

Written straight from the equations in ``docs/hypergradient.md``: the effective gradient, the
previous update direction kept explicitly, one dot product over the group, the learning-rate rule,
the base step. No foreach, no recomputation, no device tricks. Each twin writes out its own
signature and defaults (its fast optimizer's, less the switches that choose how to compute:
``foreach``, ``capturable``, ``fused``) and imports nothing from the fast optimizers, so that the
tests compare two independent statements of each optimizer. One module per base rule; the shared
loop is ``_base.py``, the rules on plain floats ``_rules.py``.
"""

from __future__ import annotations

from .adagrad import AdagradHDReference
from .adam import AdamHDReference, AdamWHDReference
from .muon import MuonHDReference
from .rmsprop import RMSpropHDReference
from .schedule_free import ScheduleFreeAdamWHDReference, ScheduleFreeSGDHDReference
from .sgd import SGDHDReference

__all__ = [
    "SGDHDReference",
    "AdamHDReference",
    "AdamWHDReference",
    "AdagradHDReference",
    "RMSpropHDReference",
    "ScheduleFreeAdamWHDReference",
    "ScheduleFreeSGDHDReference",
    "MuonHDReference",
]
