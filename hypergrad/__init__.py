"""hypergrad: PyTorch optimizers that adapt their learning rate online by hypergradient descent.

Drop-in replacements for torch.optim: ``SGDHD`` for ``torch.optim.SGD`` (plain, heavy-ball and
Nesterov momentum) and ``AdamHD`` for ``torch.optim.Adam``. Each param group's ``"lr"`` is the
current, adapted learning rate; ``"hypergrad_lr"`` is the learning rate of the learning rate.
"""

from .adam import AdamHD
from .optimizer import HypergradOptimizer
from .sgd import SGDHD

__all__ = ["AdamHD", "HypergradOptimizer", "SGDHD"]
__version__ = "0.1.0"
