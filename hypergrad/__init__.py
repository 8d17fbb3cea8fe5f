"""hypergrad: PyTorch optimizers that adapt their learning rate online by hypergradient descent."""

__version__ = "0.1.0"
