"""torch's lr schedulers with the hypergradient optimizers, and LambdaHypergradLR.

A scheduler owns ``group["lr"]`` (torch's schedulers record ``initial_lr`` in the group): it
holds the schedule's value, exactly as with the base optimizer, chainable or overwrite-style, and
HD learns a factor beside it, ``group["hypergrad_state"]["factor"]``, that the scheduler's writes
do not touch; the step uses ``group["lr"] * factor``. ReduceLROnPlateau records nothing and multiplies
the current (adapted) rate.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.optim import lr_scheduler

from cases import TinyNet, batch_loss, make_batches
from hypergrad import SGDHD, AdamHD
from hypergrad.reference import AdamHDReference, SGDHDReference
from hypergrad.schedulers import LambdaHypergradLR


def one_step(model, optimizer, batch) -> None:
    optimizer.zero_grad()
    batch_loss(model, batch).backward()
    optimizer.step()


def make(optimizer_cls, **kwargs):
    model = TinyNet()
    return model, optimizer_cls(model.parameters(), **kwargs)


def warmup_cosine(total: int, warmup: int):
    """Linear warmup from 0, then cosine decay to 0: the Hugging Face schedule's shape."""
    return lambda t: t / warmup if t < warmup else 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


SCHEDULERS = {
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
    "MultiStepLR": lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[4, 9], gamma=0.3),
    "ExponentialLR": lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.9),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=12),
    "LinearLR": lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.2, total_iters=6),
    "PolynomialLR": lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=16, power=2.0),
    "MultiplicativeLR": lambda opt: lr_scheduler.MultiplicativeLR(opt, lambda t: 0.95),
    "LambdaLR warmup+cosine": lambda opt: lr_scheduler.LambdaLR(opt, warmup_cosine(20, 4)),
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=20),
    "CyclicLR": lambda opt: lr_scheduler.CyclicLR(opt, base_lr=0.005, max_lr=0.05, step_size_up=4,
                                                  cycle_momentum=False),
    "CosineAnnealingWarmRestarts": lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=6),
    "SequentialLR": lambda opt: lr_scheduler.SequentialLR(opt, [
        lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5),
        lr_scheduler.CosineAnnealingLR(opt, T_max=15)], milestones=[5]),
    "ChainedScheduler": lambda opt: lr_scheduler.ChainedScheduler([
        lr_scheduler.ExponentialLR(opt, gamma=0.95), lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)]),
    "SWALR": lambda opt: torch.optim.swa_utils.SWALR(opt, swa_lr=0.002, anneal_epochs=5),
}
BASES = {  # (HD class, torch class, settings, beta)
    "SGD momentum": (SGDHD, torch.optim.SGD, {"lr": 0.02, "momentum": 0.9}, 1e-2),
    "Adam": (AdamHD, torch.optim.Adam, {"lr": 1e-2}, 1e-4),
}


def scheduled_run(optimizer_cls, settings, make_scheduler, steps=19, model=None):
    """Train ``steps`` steps with the scheduler stepped after each; the lr after each scheduler
    step, the model and optimizer."""
    model = model or TinyNet()
    optimizer = optimizer_cls(model.parameters(), **settings)
    scheduler = make_scheduler(optimizer)
    scheduled = []
    for batch in make_batches(steps):
        one_step(model, optimizer, batch)
        scheduler.step()
        scheduled.append(float(optimizer.param_groups[0]["lr"]))
    return scheduled, model, optimizer


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_without_adaptation_every_schedule_is_torchs(base, scheduler):
    """hypergrad_lr=0: the same rates and the same weights as torch.optim, bit for bit."""
    hd_cls, torch_cls, settings, _ = BASES[base]
    hd_lrs, hd_model, _ = scheduled_run(hd_cls, {**settings, "hypergrad_lr": 0.0}, SCHEDULERS[scheduler])
    # Our default path on the CPU is torch's fused kernel (tests/test_paths.py): compare with it.
    base_lrs, base_model, _ = scheduled_run(torch_cls, {**settings, "fused": True}, SCHEDULERS[scheduler])
    assert hd_lrs == base_lrs
    for ours, theirs in zip(hd_model.parameters(), base_model.parameters()):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_schedule_keeps_its_profile_and_hd_its_correction(base, scheduler):
    """group["lr"] follows the schedule exactly as with torch.optim, while the rate each step
    uses is the schedule's value times a factor that HD moves and the scheduler's writes keep."""
    hd_cls, torch_cls, settings, beta = BASES[base]
    base_lrs, _, _ = scheduled_run(torch_cls, settings, SCHEDULERS[scheduler])
    model = TinyNet()
    optimizer = hd_cls(model.parameters(), **settings, hypergrad_lr=beta)
    schedule = SCHEDULERS[scheduler](optimizer)
    scales = []
    for batch, scheduled in zip(make_batches(19), base_lrs):
        lr = optimizer.param_groups[0]["lr"]
        one_step(model, optimizer, batch)
        scale = optimizer.param_groups[0]["hypergrad_state"]["factor"]
        used = optimizer.learning_rates(model.named_parameters())
        assert set(used.values()) == {lr * scale}  # the rate the step used
        schedule.step()
        assert optimizer.learning_rates(model.named_parameters()) == used  # still the rate the step used
        assert optimizer.param_groups[0]["lr"] == scheduled  # the schedule's value, untouched
        assert optimizer.param_groups[0]["hypergrad_state"]["factor"] == scale  # the correction, kept
        scales.append(scale)
    assert len(set(scales)) > 10  # HD kept correcting


@pytest.mark.parametrize("rule, beta", [("additive", 1e-2), ("multiplicative", 0.05), ("scalefree", 0.05)])
@pytest.mark.parametrize("fast, reference", [(SGDHD, SGDHDReference), (AdamHD, AdamHDReference)])
@pytest.mark.parametrize("scheduler", ["LambdaLR warmup+cosine", "OneCycleLR", "StepLR"])
def test_composed_schedules_match_the_reference_twin(rule, beta, fast, reference, scheduler):
    settings = {"lr": 0.02, "hypergrad_lr": beta if fast is SGDHD or rule != "additive" else 1e-4,
                "hypergrad_rule": rule}
    if fast is SGDHD:
        settings["momentum"] = 0.9
    torch.manual_seed(0)
    start = TinyNet()
    runs = []
    for cls in (fast, reference):
        model = TinyNet()
        model.load_state_dict(start.state_dict())
        runs.append(scheduled_run(cls, settings, SCHEDULERS[scheduler], model=model))
    (fast_lrs, fast_model, fast_opt), (ref_lrs, ref_model, ref_opt) = runs
    assert fast_lrs == ref_lrs
    assert fast_opt.param_groups[0]["hypergrad_state"]["factor"] == pytest.approx(ref_opt.param_groups[0]["lr_scale"], rel=1e-10)
    for ours, theirs in zip(fast_model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", ["additive", "multiplicative", "scalefree"])
def test_a_constant_schedule_changes_nothing(rule):
    """LambdaLR(lambda t: 1) moves the factor exactly as HD moves the rate without it."""
    beta = {"additive": 1e-2, "multiplicative": 0.05, "scalefree": 0.05}[rule]
    settings = {"lr": 0.02, "momentum": 0.9, "hypergrad_lr": beta, "hypergrad_rule": rule}
    torch.manual_seed(0)
    start = TinyNet()
    plain, scheduled = TinyNet(), TinyNet()
    plain.load_state_dict(start.state_dict())
    _, _, with_schedule = scheduled_run(SGDHD, settings, lambda opt: lr_scheduler.LambdaLR(opt, lambda t: 1.0),
                                        model=scheduled)
    without = SGDHD(plain.parameters(), **settings)
    for batch in make_batches(19):
        one_step(plain, without, batch)
    assert with_schedule.param_groups[0]["lr"] == 0.02
    assert 0.02 * with_schedule.param_groups[0]["hypergrad_state"]["factor"] == pytest.approx(without.param_groups[0]["lr"], rel=1e-12)
    for ours, theirs in zip(scheduled.parameters(), plain.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_a_scheduler_attached_mid_run_starts_the_factor_at_one():
    model, optimizer = make(SGDHD, lr=0.02, momentum=0.9, hypergrad_lr=1e-2)
    for batch in make_batches(5):
        one_step(model, optimizer, batch)
    adapted = optimizer.param_groups[0]["lr"]
    assert adapted != 0.02
    scheduler = lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
    assert optimizer.param_groups[0]["initial_lr"] == adapted  # the schedule starts from the adapted rate
    scheduler.step()
    one_step(model, optimizer, make_batches(6)[5])
    assert optimizer.param_groups[0]["lr"] == 0.5 * adapted
    assert optimizer.param_groups[0]["hypergrad_state"]["factor"] != 1.0


def test_the_factor_resumes_exactly_from_a_checkpoint():
    schedule = SCHEDULERS["LambdaLR warmup+cosine"]
    settings = {"lr": 1e-2, "hypergrad_lr": 0.05, "hypergrad_rule": "scalefree"}
    batches = make_batches(20)
    torch.manual_seed(0)
    start = TinyNet()
    straight = TinyNet()
    straight.load_state_dict(start.state_dict())
    optimizer = AdamHD(straight.parameters(), **settings)
    scheduler = schedule(optimizer)
    for t, batch in enumerate(batches):
        one_step(straight, optimizer, batch)
        scheduler.step()
        if t == 9:
            saved = (copy.deepcopy(straight.state_dict()), copy.deepcopy(optimizer.state_dict()),
                     copy.deepcopy(scheduler.state_dict()))
    resumed = TinyNet()
    resumed.load_state_dict(saved[0])
    optimizer2 = AdamHD(resumed.parameters(), **settings)
    scheduler2 = schedule(optimizer2)
    optimizer2.load_state_dict(saved[1])
    scheduler2.load_state_dict(saved[2])
    for batch in batches[10:]:
        one_step(resumed, optimizer2, batch)
        scheduler2.step()
    assert optimizer2.param_groups[0]["hypergrad_state"]["factor"] == optimizer.param_groups[0]["hypergrad_state"]["factor"]
    for ours, theirs in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(ours, theirs)


def test_a_blend_applies_to_the_scheduled_rate():
    model, optimizer = make(SGDHD, lr=0.02, momentum=0.9, hypergrad_lr=1e-2, lr_limit=0.01)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for batch in make_batches(6):
        lr = optimizer.param_groups[0]["lr"]
        one_step(model, optimizer, batch)
        scheduler.step()
    group = optimizer.param_groups[0]
    delta = group["hypergrad_state"]["step"] ** -2.0
    expected = delta * lr * group["hypergrad_state"]["factor"] + (1 - delta) * 0.01
    assert set(optimizer.learning_rates(model.named_parameters()).values()) == {expected}


def test_reduce_on_plateau_scales_the_adapted_lr():
    model, optimizer = make(SGDHD, lr=0.05, hypergrad_lr=1e-2)
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    batches = make_batches(12)
    scheduler.step(1.0)  # the best so far
    for batch in batches:
        one_step(model, optimizer, batch)
        adapted = optimizer.param_groups[0]["lr"]
        scheduler.step(2.0)  # no improvement: reduce
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * adapted, rel=1e-12)


def cosine(total):
    return lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total))


def test_lambda_hypergrad_lr_follows_the_function_per_group():
    model = TinyNet()
    optimizer = SGDHD([{"params": model.hidden.parameters(), "hypergrad_lr": 1e-2},
                       {"params": model.out.parameters()}], lr=0.05, hypergrad_lr=1e-3)
    schedule = LambdaHypergradLR(optimizer, cosine(10))
    assert schedule.get_last_hypergrad_lr() == [1e-2, 1e-3]
    for t in range(1, 15):
        one_step(model, optimizer, make_batches(1)[0])
        schedule.step()
        expected = 0.5 * (1 + math.cos(math.pi * min(t, 10) / 10))
        assert schedule.get_last_hypergrad_lr() == pytest.approx([1e-2 * expected, 1e-3 * expected],
                                                                 rel=1e-12, abs=1e-18)
    assert [g["hypergrad_lr"] for g in optimizer.param_groups] == [0.0, 0.0]


def test_lr_freezes_once_the_hypergrad_lr_reaches_zero():
    model, optimizer = make(AdamHD, lr=1e-2, hypergrad_lr=1e-4)
    schedule = LambdaHypergradLR(optimizer, cosine(5))
    lrs = []
    for batch in make_batches(12):
        one_step(model, optimizer, batch)
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert len(set(lrs[:5])) == 5  # adapting while beta > 0
    assert len(set(lrs[5:])) == 1  # frozen afterwards


def test_per_group_functions_and_state_dict_round_trip():
    model = TinyNet()
    optimizer = AdamHD([{"params": model.hidden.parameters()},
                        {"params": model.out.parameters()}], hypergrad_lr=1e-6)
    schedule = LambdaHypergradLR(optimizer, [lambda t: 1.0, lambda t: 0.5**t])
    for _ in range(3):
        schedule.step()
    assert schedule.get_last_hypergrad_lr() == [1e-6, 1e-6 / 8]
    resumed = LambdaHypergradLR(optimizer, [lambda t: 1.0, lambda t: 0.5**t])
    resumed.load_state_dict(schedule.state_dict())
    resumed.step()
    assert resumed.last_step == 4
    assert resumed.get_last_hypergrad_lr() == [1e-6, 1e-6 / 16]


def test_lambda_hypergrad_lr_rejects_bad_input():
    model = TinyNet()
    with pytest.raises(ValueError, match="no 'hypergrad_lr'"):
        LambdaHypergradLR(torch.optim.SGD(model.parameters(), lr=0.1), cosine(5))
    optimizer = SGDHD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="one per param group"):
        LambdaHypergradLR(optimizer, [cosine(5), cosine(5)])
    with pytest.raises(ValueError, match="finite and >= 0"):
        LambdaHypergradLR(optimizer, lambda t: -1.0)
    multiplicative = SGDHD(model.parameters(), lr=0.1, hypergrad_lr=0.5,
                           hypergrad_rule="multiplicative")
    with pytest.raises(ValueError, match="< 1"):
        LambdaHypergradLR(multiplicative, lambda t: 3.0)


def test_a_tensor_lr_composes_as_a_float_one():
    """The accelerator layout (a 0-dim tensor lr, which torch's schedulers fill in place) keeps
    its factor as a 0-dim tensor beside it and steps exactly as the float layout does."""
    settings = {"momentum": 0.9, "hypergrad_lr": 0.05, "hypergrad_rule": "scalefree"}
    torch.manual_seed(0)
    start = TinyNet()
    runs = []
    for lr in (0.02, torch.tensor(0.02, dtype=torch.float64)):
        model = TinyNet()
        model.load_state_dict(start.state_dict())
        runs.append(scheduled_run(SGDHD, {**settings, "lr": lr}, SCHEDULERS["LambdaLR warmup+cosine"], model=model))
    (float_lrs, float_model, float_opt), (tensor_lrs, tensor_model, tensor_opt) = runs
    assert isinstance(tensor_opt.param_groups[0]["hypergrad_state"]["factor"], torch.Tensor)
    assert [float(lr) for lr in tensor_lrs] == pytest.approx(float_lrs, rel=1e-15)
    assert float(tensor_opt.param_groups[0]["hypergrad_state"]["factor"]) == pytest.approx(float_opt.param_groups[0]["hypergrad_state"]["factor"], rel=1e-12)
    for ours, theirs in zip(tensor_model.parameters(), float_model.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
