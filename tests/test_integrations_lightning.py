"""Lightning drives the HD optimizers unchanged: ``LearningRateMonitor`` logs the adapted rate,
a checkpoint resumes it exactly, gradient accumulation, clipping and bf16-mixed run as a plain
loop would run them; ``HypergradRateMonitor`` logs each group's and each tensor's rate as floats.
Each case is checked against the same training written out by hand."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

import hypergrad
from cases import TinyNet, make_batches

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pl = pytest.importorskip("lightning.pytorch", reason="lightning is not installed (pip install torch-hypergrad[integrations])")
from hypergrad.integrations.lightning import HypergradRateMonitor  # noqa: E402

BATCHES = 8


class Module(pl.LightningModule):
    def __init__(self, make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer]) -> None:
        super().__init__()
        self.net = TinyNet(torch.float32)
        self.make_optimizer = make_optimizer

    def training_step(self, batch: Any, index: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.net)


def loader() -> torch.utils.data.DataLoader:
    batches = make_batches(BATCHES, torch.float32)
    data = torch.utils.data.TensorDataset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
    return torch.utils.data.DataLoader(data, batch_size=8, shuffle=False)


def fit(module: Module, tmp_path: Any, callbacks: list, ckpt_path: str | None = None, **trainer: Any) -> pl.Trainer:
    settings = dict(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    runner = pl.Trainer(callbacks=callbacks, **{**settings, **trainer})
    runner.fit(module, loader(), ckpt_path=ckpt_path)
    return runner


def by_hand(make_optimizer: Callable, *, accumulate: int = 1, clip: float | None = None,
            autocast: bool = False) -> tuple[TinyNet, torch.optim.Optimizer, list[dict[str, float]]]:
    """The same training as a plain loop; the rates after every step."""
    net = TinyNet(torch.float32)
    optimizer = make_optimizer(net)
    history = []
    for index, (x, y) in enumerate(loader()):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.mse_loss(net(x), y)
        (loss / accumulate).backward()
        if (index + 1) % accumulate:
            continue
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad()
        history.append({"lr": float(optimizer.param_groups[0]["lr"]), **hypergrad.logged_rates(
            optimizer, [("net." + n, p) for n, p in net.named_parameters()], key="lr")})
    return net, optimizer, history


def sgd(net: torch.nn.Module) -> hypergrad.SGDHD:
    return hypergrad.SGDHD(net.parameters(), lr=0.05, momentum=0.5, hypergrad_lr=0.05)


def test_learning_rate_monitor_logs_the_adapted_rate(tmp_path):
    monitor = pl.callbacks.LearningRateMonitor(logging_interval="step")
    ours = HypergradRateMonitor()
    fit(Module(sgd), tmp_path, [monitor, ours], logger=pl.loggers.CSVLogger(tmp_path), log_every_n_steps=1)
    _, _, expected = by_hand(sgd)
    rates = [step["lr"] for step in expected]
    assert len(set(rates)) == len(rates) and rates[-1] != 0.05  # the rate moves at every step but the first
    # The monitor reads the rate before each step: the initial one, then the one each step used.
    assert monitor.lrs["lr-SGDHD"] == [0.05] + rates[:-1]
    assert [step["lr-SGDHD"] for step in ours.history] == rates


def test_rate_monitor_logs_floats_per_group_and_per_tensor(tmp_path):
    """A tensor rate (the layout on an accelerator, updated in place) and a group at
    granularity="tensor": every logged value is a float of its own step."""

    def make(net: torch.nn.Module) -> hypergrad.SGDHD:
        return hypergrad.SGDHD(
            [{"params": net.hidden.parameters(), "lr": torch.tensor(0.05)},
             {"params": net.out.parameters(), "granularity": "tensor"}],
            lr=0.05, hypergrad_lr=0.05,
        )

    ours = HypergradRateMonitor()
    runner = fit(Module(make), tmp_path, [ours])
    _, _, expected = by_hand(make)
    keys = {"lr-SGDHD", "lr-SGDHD/pg1", "lr-SGDHD/net.out.weight", "lr-SGDHD/net.out.bias"}
    assert [set(step) for step in ours.history] == [keys] * BATCHES
    for logged, step in zip(ours.history, expected):
        assert all(type(value) is float for value in logged.values())
        assert logged == {f"lr-SGDHD{name[2:]}": value for name, value in step.items() if name != "lr"} | {"lr-SGDHD": step["lr"]}
    assert ours.history[0]["lr-SGDHD"] != ours.history[-1]["lr-SGDHD"]
    assert ours.history[-1]["lr-SGDHD/net.out.weight"] != ours.history[-1]["lr-SGDHD/net.out.bias"]
    assert float(runner.callback_metrics["lr-SGDHD"]) == pytest.approx(ours.history[-1]["lr-SGDHD"])


def test_with_a_scheduler_the_monitors_log_the_schedule_and_the_rate_used(tmp_path):
    """A scheduler owns ``group["lr"]`` (what LearningRateMonitor logs: the schedule's profile);
    HypergradRateMonitor logs the rate each step used, the schedule's value times HD's factor."""

    def make(net: torch.nn.Module) -> dict[str, Any]:
        optimizer = sgd(net)
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: (t + 1) / BATCHES)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    monitor = pl.callbacks.LearningRateMonitor(logging_interval="step")
    ours = HypergradRateMonitor()
    fit(Module(make), tmp_path, [monitor, ours], logger=pl.loggers.CSVLogger(tmp_path), log_every_n_steps=1)
    schedule = [0.05 * (t + 1) / BATCHES for t in range(BATCHES)]
    assert monitor.lrs["lr-SGDHD"] == pytest.approx(schedule, rel=1e-15)
    net = TinyNet(torch.float32)
    configured = make(net)
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    used = []
    for x, y in loader():
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        used.append(float(optimizer.param_groups[0]["lr"] * optimizer.param_groups[0]["hypergrad_state"]["factor"]))
        scheduler.step()
    assert [step["lr-SGDHD"] for step in ours.history] == used
    assert used[1:] != pytest.approx(schedule[1:], rel=1e-6)  # HD's factor moved the rates


def adamw(net: torch.nn.Module) -> hypergrad.AdamWHD:
    return hypergrad.AdamWHD(net.parameters(), lr=0.01, hypergrad_lr=1e-3)


def test_checkpoint_resume_restores_the_rate_exactly(tmp_path):
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = fit(Module(adamw), tmp_path, [checkpoint], enable_checkpointing=True)
    saved = float(first.optimizers[0].param_groups[0]["lr"])
    resumed_module = Module(adamw)
    resumed = fit(resumed_module, tmp_path, [], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), max_epochs=2)
    whole_module = Module(adamw)
    whole = fit(whole_module, tmp_path, [], max_epochs=2)
    assert saved != 0.01
    assert resumed.global_step == whole.global_step == 2 * BATCHES
    assert resumed.optimizers[0].param_groups[0]["lr"] == whole.optimizers[0].param_groups[0]["lr"] != saved
    for a, b in zip(resumed_module.parameters(), whole_module.parameters()):
        assert torch.equal(a, b)


def test_accumulation_clipping_and_bf16_mixed(tmp_path):
    ours = HypergradRateMonitor()
    module = Module(adamw)
    runner = fit(module, tmp_path, [ours], accumulate_grad_batches=2, gradient_clip_val=0.5, precision="bf16-mixed")
    net, _, expected = by_hand(adamw, accumulate=2, clip=0.5, autocast=True)
    assert runner.global_step == BATCHES // 2
    # One rate per optimizer step (the rate moves on those only), as the plain loop's.
    assert [step["lr-AdamWHD"] for step in ours.history] == pytest.approx([step["lr"] for step in expected], rel=1e-6)
    assert ours.history[-1]["lr-AdamWHD"] != 0.01
    for a, b in zip(module.net.parameters(), net.parameters()):
        torch.testing.assert_close(a, b)


def test_learning_rates_through_lightning_optimizer(tmp_path):
    runner = fit(Module(sgd), tmp_path, [], max_steps=2)
    wrapped = runner.lightning_module.optimizers()  # a LightningOptimizer
    assert type(wrapped) is not hypergrad.SGDHD
    named = list(runner.lightning_module.named_parameters())
    assert hypergrad.learning_rates(wrapped, named) == runner.optimizers[0].learning_rates(named)


def test_rate_monitor_argument():
    with pytest.raises(TypeError, match="per_tensor"):
        HypergradRateMonitor(per_tensor="yes")
