"""``torch.distributed.optim.ZeroRedundancyOptimizer(optimizer_class=AdamHD)`` on two ranks (gloo,
CPU) is refused with a clear error at its first step, before any parameter moves: without the
check it runs, and the ranks end with different learning rates (each rank's local optimizer sees
only its shard of the parameters)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer

import hypergrad
from cases import TinyNet, make_batches
from test_distributed import WORLD_SIZE, run_two_ranks


def _train(optimizer_class: type, model: TinyNet | None = None, **settings: Any) -> float:
    model = model or TinyNet(torch.float32)
    optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=optimizer_class, **settings)
    for x, y in make_batches(4, torch.float32):  # every rank the same batches: the same gradients
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return float(optimizer.optim.param_groups[0]["lr"])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60))
    try:
        torch.set_num_threads(1)
        results: dict[str, Any] = {"torch.optim.Adam": _train(torch.optim.Adam, lr=0.01)}
        refused = TinyNet(torch.float32)
        before = [p.detach().clone() for p in refused.parameters()]
        try:
            _train(hypergrad.AdamHD, refused, lr=0.01, hypergrad_lr=1e-3)
        except ValueError as error:
            results["error"] = str(error)
        results["moved"] = any(not torch.equal(p, q) for p, q in zip(refused.parameters(), before))
        check = hypergrad.distributed.check_not_zero_sharded
        hypergrad.distributed.check_not_zero_sharded = lambda zero: None
        try:
            results["unchecked rate"] = _train(hypergrad.AdamHD, lr=0.01, hypergrad_lr=1e-3)
        finally:
            hypergrad.distributed.check_not_zero_sharded = check
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, Any]]:
    return run_two_ranks(tmp_path_factory.mktemp("zero"), _worker)


def test_zero_redundancy_optimizer_is_refused(ranks):
    for results in ranks:
        assert "ZeroRedundancyOptimizer on 2 ranks" in results["error"]
        assert "AdamHD" in results["error"] and "different rates" in results["error"]
        assert not results["moved"]  # refused at the first step, before anything moved
    assert ranks[0]["torch.optim.Adam"] == ranks[1]["torch.optim.Adam"] == 0.01  # ZeRO itself runs here


def test_without_the_check_the_ranks_drift_apart(ranks):
    first, second = (results["unchecked rate"] for results in ranks)
    assert first != second and 0.01 not in (first, second)


def test_single_process_construction_is_untouched():
    model = TinyNet(torch.float32)
    assert hypergrad.AdamHD(model.parameters()).param_groups[0]["lr"] == 1e-3
