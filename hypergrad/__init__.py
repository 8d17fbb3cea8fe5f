"""hypergrad: PyTorch optimizers that adapt their learning rate online by hypergradient descent.

Drop-in replacements for torch.optim: ``SGDHD`` (plain, heavy-ball and Nesterov momentum),
``AdamHD``, ``AdamWHD``, ``AdagradHD``, ``RMSpropHD`` and ``MuonHD``, adapting by the scale-free
rule unless told otherwise (``hypergrad_rule="additive"`` is the paper's). Each param group's
``"lr"`` is the current, adapted learning rate (with an lr scheduler attached, the schedule's
value, which HD scales by a learned factor); ``"hypergrad_lr"`` is the learning rate of
the learning rate. ``MuonWithAdamWHD`` with ``muon_param_groups`` is the usual Muon recipe (Muon
for the hidden matrices, AdamW for the rest) in one optimizer.
``HDM`` is hypergradient descent with heavy-ball momentum for full-batch problems.
``AdaptiveGainSGD`` is the classic per-weight gain rule (Jacobs 1988) for comparison. Around them:
the learning-rate range test ``find_lr``, ``layerwise_param_groups`` for discriminative rates and
``LambdaHypergradLR`` to schedule ``hypergrad_lr`` itself. ``learning_rates`` and
``logged_rates`` read the adapted rates through a framework's optimizer wrapper; the hooks into
Lightning, Hugging Face and timm are in ``hypergrad.integrations``.
"""

from .adagrad import AdagradHD
from .adam import AdamHD, AdamWHD
from .adaptive_gain import AdaptiveGainSGD
from .hdm import HDM
from .integrations import learning_rates, logged_rates
from .lr_finder import LRFinderResult, find_lr
from .muon import MuonHD, MuonWithAdamWHD, muon_param_groups
from .optimizer import HypergradOptimizer
from .param_groups import layerwise_param_groups
from ._rules import RULES, Rule
from .rmsprop import RMSpropHD
from .schedule_free import ScheduleFreeAdamWHD, ScheduleFreeSGDHD
from .schedulers import LambdaHypergradLR
from .sgd import SGDHD

__all__ = [
    "AdagradHD",
    "AdamHD",
    "AdamWHD",
    "AdaptiveGainSGD",
    "HDM",
    "HypergradOptimizer",
    "LRFinderResult",
    "LambdaHypergradLR",
    "MuonHD",
    "MuonWithAdamWHD",
    "RMSpropHD",
    "RULES",
    "Rule",
    "SGDHD",
    "ScheduleFreeAdamWHD",
    "ScheduleFreeSGDHD",
    "find_lr",
    "layerwise_param_groups",
    "learning_rates",
    "logged_rates",
    "muon_param_groups",
]
__version__ = "0.1.0"
