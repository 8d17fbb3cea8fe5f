"""The Hugging Face Trainer with an HD optimizer: the pair built from the TrainingArguments, the
adapted rate in ``log_history`` (and in what the report integrations get), ``learning_rates``
through ``trainer.optimizer``, and an exact resume from a checkpoint. A one-layer GPT-2 built from
its config, on random tokens (no download)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

import hypergrad

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install torch-hypergrad[integrations])"
)
pytest.importorskip("accelerate", reason="accelerate is not installed (the Trainer needs it)")
from hypergrad.integrations.transformers import HypergradCallback, optimizer_cls_and_kwargs  # noqa: E402

LR = 1e-3


def model() -> Any:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config)


def dataset() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 64, (24, 12), generator=generator)
    return [{"input_ids": row, "labels": row} for row in tokens]


def arguments(tmp_path: Any, **overrides: Any) -> Any:
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=6, learning_rate=LR,
                    weight_decay=0.1, adam_beta1=0.8, lr_scheduler_type="constant", logging_steps=1,
                    save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    return transformers.TrainingArguments(**{**settings, **overrides})


class Recorder(transformers.TrainerCallback):
    """The rate of every group right after each optimizer step, and what ``on_log`` receives."""

    def __init__(self) -> None:
        self.rates: list[list[float]] = []
        self.scheduled: list[list[float]] = []
        self.logged: list[float] = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        # The rate the step used: the scheduler's value times HD's factor.
        self.rates.append([float(group["lr"]) * float(group.get("hypergrad_state", {}).get("factor", 1.0)) for group in optimizer.param_groups])
        self.scheduled.append([float(group["lr"]) for group in optimizer.param_groups])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "learning_rate" in logs:
            self.logged.append(logs["learning_rate"])


def train(args: Any, callbacks: list, **fit: Any) -> Any:
    trainer = transformers.Trainer(model(), args, train_dataset=dataset(), callbacks=callbacks,
                                   optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(args, hypergrad_lr=1e-4))
    trainer.train(**fit)
    return trainer


def logged(trainer: Any, key: str = "learning_rate") -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry and "loss" in entry]


def test_optimizer_from_training_arguments(tmp_path):
    args = arguments(tmp_path, max_steps=1)
    assert optimizer_cls_and_kwargs(args, hypergrad_lr=1e-6) == (
        hypergrad.AdamWHD, {"lr": LR, "betas": (0.8, 0.999), "eps": 1e-8, "hypergrad_lr": 1e-6})
    assert optimizer_cls_and_kwargs(args, hypergrad.SGDHD, momentum=0.9) == (hypergrad.SGDHD, {"lr": LR, "momentum": 0.9})
    trainer = train(args, [])
    inner = hypergrad.integrations.unwrap_optimizer(trainer.optimizer)
    assert type(trainer.optimizer) is not hypergrad.AdamWHD and type(inner) is hypergrad.AdamWHD
    assert [group["weight_decay"] for group in inner.param_groups] == [0.1, 0.0]
    assert inner.param_groups[0]["betas"] == (0.8, 0.999) and inner.param_groups[0]["hypergrad_lr"] == 1e-4
    # learning_rates through the Trainer's (accelerate's) wrapper.
    named = list(trainer.model.named_parameters())
    assert hypergrad.learning_rates(trainer.optimizer, named) == inner.learning_rates(named)
    with pytest.raises(TypeError, match="args"):
        optimizer_cls_and_kwargs({"learning_rate": LR})
    with pytest.raises(TypeError, match="optimizer_class"):
        optimizer_cls_and_kwargs(args, torch.optim.AdamW)


def test_log_history_holds_the_adapted_rate(tmp_path):
    plain = train(arguments(tmp_path), [Recorder()])
    # Without the callback the Trainer logs its scheduler's (constant) rate.
    assert logged(plain) == [LR] * 6

    first, second = Recorder(), Recorder()
    trainer = train(arguments(tmp_path), [first, HypergradCallback(), second])
    used = first.rates
    assert len(used) == 6 and all(rates[0] != LR for rates in used[1:])
    assert logged(trainer) == [rates[0] for rates in used]
    assert logged(trainer, "learning_rate/pg1") == [rates[1] for rates in used]
    # A callback before ours (as the report integrations are) gets the adapted rate too.
    assert first.logged == second.logged == logged(trainer)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_the_trainers_schedule_composes_with_hd(tmp_path, schedule):
    """``optimizers=(AdamWHD(...), None)`` and nothing else: the Trainer's schedule keeps its
    profile in ``param_groups[i]["lr"]`` (as with torch's AdamW) and the steps use it times HD's
    factor, which moves."""
    args = arguments(tmp_path, lr_scheduler_type=schedule, warmup_steps=2, max_steps=8)
    runs = []
    for optimizer_cls in (hypergrad.AdamWHD, torch.optim.AdamW):
        net, recorder = model(), Recorder()
        trainer = transformers.Trainer(net, args, train_dataset=dataset(), callbacks=[recorder],
                                       optimizers=(optimizer_cls(net.parameters(), lr=LR), None))
        trainer.train()
        runs.append(recorder)
    hd, base = runs
    assert hd.scheduled == base.scheduled  # the schedule's profile, untouched
    assert hd.scheduled[0][0] == (LR if schedule == "constant" else 0.0)  # a warmup from 0
    adapted = [used[0] / scheduled[0] for used, scheduled in zip(hd.rates, hd.scheduled) if scheduled[0]]
    assert len(set(adapted)) == len(adapted) and adapted[-1] != 1.0  # HD's factor moved at every step


def test_resume_from_checkpoint_is_exact(tmp_path):
    whole = train(arguments(tmp_path / "whole"), [HypergradCallback()])
    first = train(arguments(tmp_path / "run", save_strategy="steps", save_steps=3), [HypergradCallback()])
    resumed = train(arguments(tmp_path / "run"), [HypergradCallback()],
                    resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    assert logged(first)[:3] == logged(whole)[:3]
    assert logged(resumed) == logged(whole)
    assert len(set(logged(whole))) > 3
    for a, b in zip(resumed.model.parameters(), whole.model.parameters()):
        assert torch.equal(a, b)


def test_callback_argument():
    with pytest.raises(TypeError, match="per_tensor"):
        HypergradCallback(per_tensor=1)
