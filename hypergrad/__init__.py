"""hypergrad: PyTorch optimizers that adapt their learning rate online by hypergradient descent.

Drop-in replacements for torch.optim: ``SGDHD`` (plain, heavy-ball and Nesterov momentum),
``AdamHD``, ``AdamWHD``, ``AdagradHD`` and ``RMSpropHD``. Each param group's ``"lr"`` is the
current, adapted learning rate; ``"hypergrad_lr"`` is the learning rate of the learning rate.
``AdaptiveGainSGD`` is the classic per-weight gain rule (Jacobs 1988) for comparison.
"""

from .adagrad import AdagradHD
from .adam import AdamHD, AdamWHD
from .adaptive_gain import AdaptiveGainSGD
from .optimizer import HypergradOptimizer
from .rmsprop import RMSpropHD
from .sgd import SGDHD

__all__ = ["AdagradHD", "AdamHD", "AdamWHD", "AdaptiveGainSGD", "HypergradOptimizer", "RMSpropHD", "SGDHD"]
__version__ = "0.1.0"
