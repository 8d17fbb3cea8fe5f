"""Schedule-Free HD: at hypergrad_lr=0 it is schedulefree's AdamWScheduleFree / SGDScheduleFree
step for step (train()/eval() included); the rate's change is the hypergradient through the
Schedule-Free update (central finite differences in float64, the averaging weight's dependence on
the rate included); the batch-norm recipe; checkpoints; the slow twins in hypergrad.reference."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import schedulefree
import torch

import hypergrad
from cases import TinyNet, batch_loss, flag_id, hd_variants, make_batches, same
from hypergrad import ScheduleFreeAdamWHD, ScheduleFreeSGDHD
from hypergrad.reference import ScheduleFreeAdamWHDReference, ScheduleFreeSGDHDReference

# family: (ours, schedulefree's, the twin, a test lr, an additive hypergrad_lr that moves it)
FAMILIES = {
    "adamw": (ScheduleFreeAdamWHD, schedulefree.AdamWScheduleFree, ScheduleFreeAdamWHDReference, 0.01, 1e-4),
    "sgd": (ScheduleFreeSGDHD, schedulefree.SGDScheduleFree, ScheduleFreeSGDHDReference, 0.05, 1e-2),
}
SWITCH_EVERY = 4  # eval() and back to train() after every 4th step


def _parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _run(model, optimizer, batches, idle_at: int | None = None) -> list[list[torch.Tensor]]:
    """train(), one step per batch (at step ``idle_at`` the hidden bias has no gradient), eval()
    and train() again after every 4th; the parameters after every step and in every eval mode."""
    optimizer.train()
    seen = []
    for index, batch in enumerate(batches):
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        if index == idle_at:
            model.hidden.bias.grad = None
        optimizer.step()
        seen.append(_parameters(model))
        if index % SWITCH_EVERY == SWITCH_EVERY - 1:
            optimizer.eval()
            seen.append(_parameters(model))
            optimizer.train()
    return seen


# -- schedulefree at hypergrad_lr=0 --------------------------------------------------------------
SCHEDULEFREE_SETTINGS = {
    "defaults": {},
    "warmup-decay-r": dict(lr=0.02, warmup_steps=5, weight_decay=0.1, r=1.0),
    "no-lr-weighting": dict(warmup_steps=3, weight_lr_power=0.0, weight_decay=0.01),
    "adamw-betas-eps": dict(betas=(0.8, 0.99), eps=1e-6, warmup_steps=4, weight_lr_power=1.0),
    "sgd-momentum": dict(lr=0.1, momentum=0.7, warmup_steps=4, weight_decay=0.05),
}
SCHEDULEFREE_CASES = [(family, name) for family in FAMILIES for name in SCHEDULEFREE_SETTINGS
                      if not name.startswith(("adamw-", "sgd-")) or name.startswith(family)]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("family, settings", SCHEDULEFREE_CASES)
def test_hypergrad_lr_zero_is_schedulefree_step_for_step(family, settings, foreach):
    ours_cls, theirs_cls = FAMILIES[family][:2]
    kwargs = SCHEDULEFREE_SETTINGS[settings]
    batches = make_batches(14)
    models = [TinyNet(), TinyNet()]
    ours = ours_cls(models[0].parameters(), hypergrad_lr=0.0, foreach=foreach, **kwargs)
    theirs = theirs_cls(models[1].parameters(), foreach=foreach, **kwargs)
    for mine, reference in zip(_run(models[0], ours, batches), _run(models[1], theirs, batches)):
        for p, q in zip(mine, reference):
            assert torch.isfinite(q).all() and torch.equal(p, q)
    for key in ("k", "lr_max", "weight_sum", "scheduled_lr", "train_mode"):
        assert ours.param_groups[0][key] == theirs.param_groups[0][key], key


@pytest.mark.parametrize("family", list(FAMILIES))
def test_arguments_and_defaults_are_schedulefrees(family):
    ours_cls, theirs_cls = FAMILIES[family][:2]
    ours, theirs = inspect.signature(ours_cls).parameters, inspect.signature(theirs_cls).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].default == parameter.default, name
    params = [torch.nn.Parameter(torch.zeros(2))]
    ours_defaults, theirs_defaults = ours_cls(params).defaults, theirs_cls(params).defaults
    assert {key: ours_defaults[key] for key in theirs_defaults} == theirs_defaults


def test_a_schedulefree_checkpoint_continues_like_schedulefree():
    """schedulefree's state_dict (saved in eval mode, as it asks) loads into ours, which continues
    at hypergrad_lr=0 exactly as schedulefree does, and adapts the rate otherwise."""
    batches = make_batches(10)
    theirs_model = TinyNet()
    theirs = schedulefree.AdamWScheduleFree(theirs_model.parameters(), lr=0.01, warmup_steps=3)
    _run(theirs_model, theirs, batches[:5])
    theirs.eval()
    saved = copy.deepcopy((theirs_model.state_dict(), theirs.state_dict()))
    continued = []
    for beta in (0.0, None):
        model = TinyNet()
        model.load_state_dict(saved[0])
        ours = ScheduleFreeAdamWHD(model.parameters(), hypergrad_lr=beta)
        ours.load_state_dict(copy.deepcopy(saved[1]))
        assert ours.param_groups[0]["lr"] == 0.01 and ours.param_groups[0]["k"] == 5
        continued.append((_run(model, ours, batches[5:]), float(ours.param_groups[0]["lr"])))
    expected = _run(theirs_model, theirs, batches[5:])
    for mine, reference in zip(continued[0][0], expected):
        assert all(torch.equal(p, q) for p, q in zip(mine, reference))
    assert continued[0][1] == 0.01 and continued[1][1] != 0.01


# -- the hypergradient, by finite differences ----------------------------------------------------
def _objective(model: torch.nn.Module, batch, family: str, decay: float) -> torch.Tensor:
    """The loss HD descends: with Schedule-Free SGD the decay is an L2 term of it."""
    penalty = 0.5 * decay * sum(p.pow(2).sum() for p in model.parameters()) if family == "sgd" else 0.0
    return batch_loss(model, batch) + penalty


def _step(model, optimizer, batch) -> None:
    optimizer.zero_grad()
    batch_loss(model, batch).backward()
    optimizer.step()


# (family, settings, steps before t, factor on the rate before step t): a factor 1.5 makes the
# rate of step t a new maximum (the averaging weight depends on it), 0.5 does not.
FINITE_DIFFERENCE_CASES = {
    "adamw-warmup-new-maximum": ("adamw", dict(warmup_steps=10), 5, 1.0),
    "adamw-decay-new-maximum": ("adamw", dict(weight_decay=0.1), 12, 1.5),
    "adamw-below-maximum": ("adamw", dict(weight_decay=0.1, warmup_steps=4), 12, 0.5),
    "adamw-no-lr-weighting": ("adamw", dict(warmup_steps=10, weight_lr_power=0.0, r=1.0), 5, 1.0),
    "sgd-warmup-new-maximum": ("sgd", dict(warmup_steps=10), 5, 1.0),
    "sgd-decay-new-maximum": ("sgd", dict(weight_decay=0.1, momentum=0.8, r=1.0), 12, 1.5),
    "sgd-below-maximum": ("sgd", dict(weight_decay=0.1), 12, 0.5),
}


@pytest.mark.parametrize("name", list(FINITE_DIFFERENCE_CASES))
def test_lr_change_is_the_hypergradient_through_the_schedule_free_step(name):
    """alpha_{t+1} - alpha_t = -beta * d f_{t+1}(y_t(alpha)) / d alpha at alpha_t (additive rule),
    where y_t(alpha) re-runs step t from its start with the rate alpha: every dependence on the
    rate (z, the interpolation, the averaging weight) is in the difference."""
    family, settings, before, factor = FINITE_DIFFERENCE_CASES[name]
    cls, _, _, lr, beta = FAMILIES[family]
    batches = make_batches(before + 2)
    model = TinyNet()
    optimizer = cls(model.parameters(), lr=lr, hypergrad_rule="additive", hypergrad_lr=beta, **settings)
    optimizer.train()
    for batch in batches[:before]:
        _step(model, optimizer, batch)
    optimizer.param_groups[0]["lr"] *= factor
    snapshot = copy.deepcopy((model, optimizer))
    _step(model, optimizer, batches[before])
    lr_t = optimizer.param_groups[0]["lr"]
    weight_term = optimizer.param_groups[0]["hypergrad_state"]["settings"]["average_scale"]
    assert (weight_term != 0) == (factor >= 1.0 and settings.get("weight_lr_power", 2.0) != 0)
    _step(model, optimizer, batches[before + 1])
    change = optimizer.param_groups[0]["lr"] - lr_t

    h = 1e-5 * lr_t
    losses = []
    for sign in (1, -1):
        replica, replica_optimizer = copy.deepcopy(snapshot)
        replica_optimizer.param_groups[0].update(hypergrad_lr=0.0, lr=lr_t + sign * h)
        _step(replica, replica_optimizer, batches[before])
        with torch.no_grad():
            losses.append(_objective(replica, batches[before + 1], family, settings.get("weight_decay", 0.0)).item())
    hypergradient = (losses[0] - losses[1]) / (2 * h)
    assert change == pytest.approx(-beta * hypergradient, rel=1e-6)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_tensors_rate_change_is_its_own_hypergradient(family):
    """granularity="tensor": each tensor's rate moves by -beta times the derivative of the next
    loss with respect to that tensor's rate alone (the averaging weight is the group's, so the
    weight term is not part of it, even while the group's rate sets new maxima in the warmup).
    The difference runs through the twin, whose rates are plain numbers in its state."""
    cls, _, twin_cls, lr, beta = FAMILIES[family]
    settings = dict(lr=lr, warmup_steps=10, hypergrad_rule="additive", hypergrad_lr=beta, granularity="tensor")
    batches = make_batches(8)
    model, twin_model = TinyNet(), TinyNet()
    optimizer, twin = cls(model.parameters(), **settings), twin_cls(twin_model.parameters(), **settings)
    optimizer.train()
    twin.train()
    for batch in batches[:6]:
        _step(model, optimizer, batch)
        _step(twin_model, twin, batch)
    snapshot = copy.deepcopy((twin_model, twin))
    _step(model, optimizer, batches[6])
    before = optimizer.learning_rates(model.named_parameters())
    _step(model, optimizer, batches[7])
    after = optimizer.learning_rates(model.named_parameters())
    for name in ("hidden.weight", "out.bias"):
        h = 1e-5 * before[name]
        losses = []
        for sign in (1, -1):
            replica, replica_twin = copy.deepcopy(snapshot)
            replica_twin.param_groups[0]["hypergrad_lr"] = 0.0
            for other, param in replica.named_parameters():  # every tensor at its rate of step t
                replica_twin.state[param]["rate"] = before[other] + (sign * h if other == name else 0.0)
            _step(replica, replica_twin, batches[6])
            with torch.no_grad():
                losses.append(_objective(replica, batches[7], family, 0.0).item())
        hypergradient = (losses[0] - losses[1]) / (2 * h)
        assert after[name] - before[name] == pytest.approx(-beta * hypergradient, rel=1e-6), name


# -- train() and eval() --------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_step_needs_train_mode_and_switches_are_idempotent(family):
    cls = FAMILIES[family][0]
    model = TinyNet()
    optimizer = cls(model.parameters())
    batch = make_batches(1)[0]
    batch_loss(model, batch).backward()
    with pytest.raises(RuntimeError, match=r"not in train mode.*optimizer\.train\(\)"):
        optimizer.step()
    initial = _parameters(model)
    optimizer.eval()  # before any step: nothing to average yet
    optimizer.train()
    optimizer.train()
    assert all(torch.equal(p, q) for p, q in zip(initial, model.parameters()))
    optimizer.step()
    optimizer.eval()
    x = _parameters(model)
    optimizer.eval()
    assert all(torch.equal(p, q) for p, q in zip(x, model.parameters()))
    with pytest.raises(RuntimeError, match="not in train mode"):
        optimizer.step()


class BatchNormNet(torch.nn.Module):
    """TinyNet with a batch norm (cumulative running statistics) after the hidden layer, which
    has no bias (the norm removes it: its gradient would be rounding noise)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(6, 5, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.hidden.weight.copy_(TinyNet().hidden.weight)
        self.norm = torch.nn.BatchNorm1d(5, momentum=None, dtype=torch.float64)
        self.out = TinyNet().out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.norm(self.hidden(x))))


def _recompute_batch_norm_statistics(model, optimizer, batches) -> None:
    """The recipe (docs): at x, the running statistics recomputed from training batches."""
    model.train()
    optimizer.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    with torch.no_grad():
        for inputs, _ in batches:
            model(inputs)
    model.eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batch_norm_recipe_gives_the_statistics_at_the_average(family):
    """After the recipe the parameters are x (the twin's explicit average) and the running
    statistics are those of the pre-norm activations there; at hypergrad_lr=0 the statistics are
    schedulefree's."""
    cls, theirs_cls, twin_cls, lr, _ = FAMILIES[family]
    batches = make_batches(12)
    models = [BatchNormNet() for _ in range(4)]
    optimizers = [cls(models[0].parameters(), lr=lr, warmup_steps=3),
                  twin_cls(models[1].parameters(), lr=lr, warmup_steps=3),
                  cls(models[2].parameters(), lr=lr, warmup_steps=3, hypergrad_lr=0.0),
                  theirs_cls(models[3].parameters(), lr=lr, warmup_steps=3)]
    for model, optimizer in zip(models, optimizers):
        _run(model, optimizer, batches[:10])
        _recompute_batch_norm_statistics(model, optimizer, batches[10:])
    assert float(optimizers[0].param_groups[0]["lr"]) != lr  # HD moved the rate

    for p, twin in zip(models[0].parameters(), models[1].parameters()):  # both in eval mode: x
        torch.testing.assert_close(p, optimizers[1].state[twin]["x"], rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        activations = [models[0].hidden(inputs) for inputs, _ in batches[10:]]
    mean = torch.stack([a.mean(0) for a in activations]).mean(0)
    var = torch.stack([a.var(0) for a in activations]).mean(0)
    torch.testing.assert_close(models[0].norm.running_mean, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(models[0].norm.running_var, var, rtol=1e-10, atol=1e-12)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(models[2].norm, name), getattr(models[3].norm, name), rtol=1e-13, atol=0)


# -- checkpoints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("save_in_eval_mode", [False, True])
@pytest.mark.parametrize("granularity", ["group", "element"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_state_dict_round_trip_continues_bit_for_bit(family, granularity, save_in_eval_mode, tmp_path):
    """Saved (in train or eval mode) to a file and loaded into a fresh model and optimizer, the
    run continues exactly as the uninterrupted one (which switched modes at the same point)."""
    cls, _, _, lr, _ = FAMILIES[family]
    batches = make_batches(12)
    settings = dict(lr=lr, warmup_steps=4, weight_decay=0.05, granularity=granularity)

    def switch(optimizer):
        if save_in_eval_mode:
            optimizer.eval()
            optimizer.train()

    model = TinyNet()
    optimizer = cls(model.parameters(), **settings)
    _run(model, optimizer, batches[:6])
    uninterrupted = copy.deepcopy((model, optimizer))
    switch(uninterrupted[1])
    expected = _run(*uninterrupted, batches[6:])

    if save_in_eval_mode:
        optimizer.eval()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "checkpoint.pt")
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    resumed_model = TinyNet()
    resumed_model.load_state_dict(checkpoint["model"])
    resumed = cls(resumed_model.parameters(), **settings)
    resumed.load_state_dict(checkpoint["optimizer"])
    assert same(resumed.state_dict()["param_groups"], optimizer.state_dict()["param_groups"])
    resumed_run = _run(resumed_model, resumed, batches[6:])
    for mine, reference in zip(resumed_run, expected):
        assert all(torch.equal(p, q) for p, q in zip(mine, reference))
    assert same(resumed.param_groups[0]["lr"], uninterrupted[1].param_groups[0]["lr"])


# -- the twins -----------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", hd_variants(lr_bounds=(0.005, 0.06)), ids=flag_id)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_fast_optimizer_follows_its_twin(family, variant):
    """With a warmup, decay, a step in which one parameter has no gradient and train()/eval()
    switches, in eval mode too (the twin keeps x explicitly), for every rule and granularity."""
    cls, _, twin_cls, lr, additive_beta = FAMILIES[family]
    beta = additive_beta if variant["hypergrad_rule"] == "additive" else 0.05
    settings = dict(lr=lr, warmup_steps=5, weight_decay=0.05, hypergrad_lr=beta, **variant)
    batches = make_batches(15)
    models = [TinyNet(), TinyNet()]
    fast = cls(models[0].parameters(), foreach=variant["granularity"] != "tensor", **settings)
    runs = [_run(models[0], fast, batches, idle_at=6),
            _run(models[1], twin_cls(models[1].parameters(), **settings), batches, idle_at=6)]
    for mine, reference in zip(*runs):
        for p, q in zip(mine, reference):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    rates = [torch.as_tensor(rate) for rate in fast.learning_rates(models[0].named_parameters()).values()]
    assert any(not torch.allclose(rate, torch.full_like(rate, lr)) for rate in rates)  # HD moved them


@pytest.mark.parametrize("family", list(FAMILIES))
def test_twin_takes_the_fast_optimizers_arguments(family):
    cls, _, twin_cls = FAMILIES[family][:3]
    fast = inspect.signature(cls).parameters
    twin = inspect.signature(twin_cls).parameters
    assert [name for name in fast if name != "foreach"] == list(twin)
    for name, parameter in twin.items():
        assert parameter.default == fast[name].default, name


# -- arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "family, settings, error, message",
    [
        ("adamw", dict(betas=(0.0, 0.999)), ValueError, r"index 0 of betas: 0\.0 \(must be in \(0, 1\)"),
        ("adamw", dict(betas=(0.9, 1.0)), ValueError, "index 1 of betas"),
        ("sgd", dict(momentum=0.0), ValueError, r"Invalid momentum: 0\.0 .*\(0, 1\)"),
        ("sgd", dict(momentum=1.0), ValueError, "Invalid momentum"),
        ("adamw", dict(warmup_steps=-1), ValueError, "Invalid warmup_steps"),
        ("sgd", dict(warmup_steps=2.5), TypeError, "warmup_steps must be an int"),
        ("adamw", dict(r=-1.0), ValueError, "Invalid r"),
        ("sgd", dict(weight_lr_power=math.nan), ValueError, "Invalid weight_lr_power"),
        ("sgd", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    ],
)
def test_bad_arguments_are_refused_naming_them(family, settings, error, message):
    with pytest.raises(error, match=message):
        FAMILIES[family][0]([torch.nn.Parameter(torch.zeros(2))], **settings)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_tensor_lr_steps_as_the_float(family):
    cls, _, _, lr, _ = FAMILIES[family]
    batches = make_batches(8)
    runs = []
    for rate in (lr, torch.tensor(lr, dtype=torch.float64)):
        model = TinyNet()
        optimizer = cls(model.parameters(), lr=rate, warmup_steps=3)
        runs.append((_run(model, optimizer, batches), float(optimizer.param_groups[0]["lr"])))
    assert runs[0][1] == pytest.approx(runs[1][1], rel=1e-14) and runs[0][1] != lr
    for mine, reference in zip(runs[0][0], runs[1][0]):
        for p, q in zip(mine, reference):
            torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)


def test_exported():
    assert {"ScheduleFreeAdamWHD", "ScheduleFreeSGDHD"} <= set(hypergrad.__all__)
