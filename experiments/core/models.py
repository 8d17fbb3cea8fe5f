"""The paper's models and the benchmark's Transformer (the registry of workloads,
:mod:`experiments.core.workloads`, pairs each with its data).

* ``logreg``: logistic regression on MNIST, 784 -> 10 (trained with cross-entropy).
* ``mlp``: 784-1000-1000-10 with ReLU on MNIST.
* ``cnn``: a small VGG-style network with batch norm for 28x28 inputs, on Fashion-MNIST: our
  CPU-sized stand-in for the paper's VGG-16 on CIFAR-10.
* ``vgg``: VGG-16 with batch norm for 32x32 CIFAR-10 images (the reference code's ``vgg.py``
  layout: 13 conv layers, a 512-512-10 classifier with dropout, He-normal conv init).

Layers are created in forward order so that ``torch.manual_seed(s)`` before building gives the
same initial weights as the reference code's modules of the same shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MODELS", "ByteTransformer", "build_model", "has_batch_norm"]

MODELS = ("logreg", "mlp", "cnn", "vgg")
"""The names :func:`build_model` builds."""

CNN_LAYERS = (32, "M", 64, "M", 128, 128, "M")
"""Conv widths and max-pools of the small CNN: 28 -> 14 -> 7 -> 3 pixels."""
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _conv_bn_stack(layers: Sequence[int | str], in_channels: int) -> nn.Sequential:
    """3x3 conv + batch norm + ReLU per width, 2x2 max-pool per ``"M"`` (VGG's ``make_layers``)."""
    modules: list[nn.Module] = []
    for layer in layers:
        if layer == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            modules += [nn.Conv2d(in_channels, layer, kernel_size=3, padding=1), nn.BatchNorm2d(layer), nn.ReLU(inplace=True)]
            in_channels = layer
    return nn.Sequential(*modules)


def _he_init_convs(model: nn.Module) -> None:
    """The reference VGG's conv init: weights N(0, 2 / (k*k*out_channels)), biases zero."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(module.bias)


class VGGStyle(nn.Module):
    """Conv/BN/ReLU stack, then a dropout MLP classifier (VGG for small images)."""

    def __init__(self, layers: Sequence[int | str], in_channels: int, spatial: int, hidden: int, num_classes: int):
        super().__init__()
        self.features = _conv_bn_stack(layers, in_channels)
        channels = [layer for layer in layers if layer != "M"][-1]
        side = spatial // 2 ** sum(layer == "M" for layer in layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        _he_init_convs(self)

    def forward(self, x):
        return self.classifier(self.features(x))


class ByteTransformer(nn.Module):
    """A decoder-only Transformer language model over bytes (vocabulary 256): learned token and
    position embeddings, ``layers`` pre-norm blocks of causal self-attention and a 4x GELU MLP
    (no dropout), a final layer norm and a linear read-out to next-byte logits."""

    def __init__(self, context: int, width: int = 128, layers: int = 2, heads: int = 4, vocabulary: int = 256):
        super().__init__()
        self.token = nn.Embedding(vocabulary, width)
        self.position = nn.Embedding(context, width)
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocabulary)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(batch, length)`` bytes -> ``(batch, length, 256)`` logits of each next byte."""
        length = tokens.shape[1]
        h = self.token(tokens) + self.position(torch.arange(length, device=tokens.device))
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        return self.head(self.norm(self.blocks(h, mask=mask, is_causal=True)))


def build_model(task: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialised model for ``task`` (seed the global RNG first for reproducibility)."""
    if task == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))
    if task == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, 1000),
            nn.ReLU(),
            nn.Linear(1000, 1000),
            nn.ReLU(),
            nn.Linear(1000, num_classes),
        )
    if task == "cnn":
        return VGGStyle(CNN_LAYERS, in_channels=1, spatial=28, hidden=256, num_classes=num_classes)
    if task == "vgg":
        return VGGStyle(VGG16_LAYERS, in_channels=3, spatial=32, hidden=512, num_classes=num_classes)
    raise ValueError(f"task must be one of {MODELS}, got {task!r}")


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` has batch-norm layers (their statistics need care in some methods)."""
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
