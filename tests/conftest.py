"""Shared fixtures: a small deterministic problem with several parameter tensors."""

from __future__ import annotations

import pytest
import torch


class TinyNet(torch.nn.Module):
    """Two layers and a tanh: non-convex, several tensors of different shapes."""

    def __init__(self, dtype: torch.dtype = torch.float64, width: int = 5) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.hidden = torch.nn.Linear(6, width, dtype=dtype)
        self.out = torch.nn.Linear(width, 2, dtype=dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=dtype) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def make_batches(count: int, dtype: torch.dtype = torch.float64, batch: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(batch, 6, generator=generator, dtype=dtype), torch.randn(batch, 2, generator=generator, dtype=dtype))
        for _ in range(count)
    ]


def batch_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches) -> list[float]:
    """Run one step per batch; return the learning rate of group 0 after each step."""
    lrs = []
    for batch in batches:
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs


@pytest.fixture
def batches():
    return make_batches(20)
