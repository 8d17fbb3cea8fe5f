"""The hypergradient variants on every HD optimizer: multiplicative rule, lr_bounds, the
convergence-ensuring blend (lr_limit), per-tensor and per-weight rates (granularity), and the
guarantees each optimizer of the family owes: param groups, state_dict round trip, bad input,
non-finite hypergradients."""

from __future__ import annotations

import copy

import pytest
import torch

from cases import TinyNet, batch_loss, make_batches, pick, quadratic_descent, train
from hypergrad import AdagradHD, AdamHD, AdamWHD, RMSpropHD, SGDHD

# Settings with an additive hypergrad_lr that moves the rate visibly in 20 steps.
OPTIMIZERS = pick("sgd", "nesterov", "adam", "adamw-decay", "adagrad-decay", "rmsprop-centered", "rmsprop-half-momentum",
                  "schedulefree-adamw", "schedulefree-sgd")
GRANULARITIES = ["group", "tensor", "element"]
ADAM_TYPE = ["adam", "adamw-decay", "adagrad-decay", "rmsprop-centered", "rmsprop-half-momentum"]


def all_rates(optimizer, model) -> torch.Tensor:
    """Every rate the optimizer stepped with, flattened into one float64 vector."""
    rates = optimizer.learning_rates(model.named_parameters())
    return torch.cat([torch.as_tensor(r, dtype=torch.float64).reshape(-1) for r in rates.values()])


def make(name: str, model: torch.nn.Module, **overrides):
    return OPTIMIZERS[name].make(model.parameters(), **overrides)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_multiplicative_rule_keeps_the_lr_positive(name, granularity):
    """hypergrad_lr just below 1 and a far too large lr: the cosine is near -1 again and again, so
    each step nearly wipes the rate out, yet it stays > 0 (the additive rule goes negative)."""
    batches = make_batches(30)
    for rule, beta in (("multiplicative", 0.999), ("additive", 1e3)):
        model = TinyNet()
        optimizer = make(name, model, lr=3.0, hypergrad_lr=beta, hypergrad_rule=rule, granularity=granularity)
        smallest = []
        for batch in batches:
            optimizer.zero_grad()
            batch_loss(model, batch).backward()
            optimizer.step()
            smallest.append(all_rates(optimizer, model).min().item())
        if rule == "multiplicative":
            assert min(smallest) > 0, smallest
            assert min(smallest) < 3.0 / 2  # the rate did shrink hard
        else:
            assert min(smallest) < 0  # the contrast: additive HD with a huge beta goes negative


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", ADAM_TYPE)
def test_multiplicative_rule_ignores_the_scale_of_the_loss(name, granularity):
    """Adam-type directions do not change when the loss is multiplied by a constant (eps made
    negligible, no coupled decay), and the normalised rule reads only the cosine: the lr
    trajectory is the same. The additive rule's is not (the check can fail)."""
    batches = make_batches(15)
    tiny_eps = dict(eps=1e-30)
    trajectories = {}
    for rule, beta in (("multiplicative", 0.05), ("additive", OPTIMIZERS[name].settings["hypergrad_lr"])):
        for scale in (1.0, 1000.0):
            model = TinyNet()
            optimizer = make(name, model, hypergrad_lr=beta, hypergrad_rule=rule, granularity=granularity, **tiny_eps)
            trajectory = []
            for batch in batches:
                optimizer.zero_grad()
                (scale * batch_loss(model, batch)).backward()
                optimizer.step()
                trajectory.append(all_rates(optimizer, model))
            trajectories[rule, scale] = torch.stack(trajectory)
    torch.testing.assert_close(
        trajectories["multiplicative", 1000.0], trajectories["multiplicative", 1.0], rtol=1e-9, atol=0.0
    )
    assert not torch.allclose(trajectories["additive", 1000.0], trajectories["additive", 1.0], rtol=1e-3)


@pytest.mark.parametrize("rule", ["additive", "multiplicative"])
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_lr_bounds_hold_under_a_huge_hypergrad_lr(name, granularity, rule):
    low, high = 5e-3, 1.5e-2
    model = TinyNet()
    beta = 1e6 if rule == "additive" else 0.99
    optimizer = make(name, model, lr=1e-2, hypergrad_lr=beta, hypergrad_rule=rule, granularity=granularity,
                     lr_bounds=(low, high))
    touched = set()
    for batch in make_batches(20):
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        optimizer.step()
        rates = all_rates(optimizer, model)
        assert rates.min() >= low * (1 - 1e-12) and rates.max() <= high * (1 + 1e-12), (rates.min(), rates.max())
        touched |= {bound for bound in (low, high) if torch.isclose(rates, torch.tensor(bound, dtype=rates.dtype)).any()}
    assert touched  # the huge updates did push against the bounds


def _quadratic_run(lr_limit: float | None, steps: int = 400) -> tuple[list[float], list[float]]:
    """Full-batch gradient descent with SGD-HD on f(x) = x^T A x / 2, A = diag(1..10) (L = 10)."""
    eigenvalues = torch.linspace(1.0, 10.0, 10, dtype=torch.float64)
    x = torch.nn.Parameter(torch.full((10,), 0.1, dtype=torch.float64))
    optimizer = SGDHD([x], lr=0.01, hypergrad_lr=0.1, hypergrad_rule="additive", lr_limit=lr_limit)
    lrs: list[float] = []
    losses = quadratic_descent(optimizer, x, eigenvalues, steps,
                               record=lambda optimizer: lrs.append(optimizer.param_groups[0]["lr"]))
    return losses, lrs


def test_blend_converges_where_plain_hd_with_a_too_large_hypergrad_lr_oscillates():
    """Paper, Sec. 5: with lr_limit < 1/L the blended SGD-HD converges on a convex quadratic."""
    plain_losses, plain_lrs = _quadratic_run(None)
    blended_losses, blended_lrs = _quadratic_run(0.05)
    # Plain HD: the rate overshoots 2/L, the iterate swings across the minimum with growing
    # amplitude and the loss leaves its starting value behind.
    increments = torch.diff(torch.tensor(plain_lrs[:40]))
    assert (increments[1:] * increments[:-1] < 0).any()  # the rate itself swings back and forth
    assert max(plain_losses[:40]) > 10 * plain_losses[0]
    assert not plain_losses[-1] < 1e-12
    # Blended: converges, and the rate it steps with tends to lr_limit.
    assert blended_losses[-1] < 1e-12
    assert abs(blended_lrs[-1] - 0.05) < 1e-4


def test_blend_keeps_its_own_hypergradient_chain():
    """The HD rate group["lr"] * factor follows the plain additive rule; group["lr"] is its blend at
    delta(t) = t^-2."""
    model = TinyNet()
    blended = SGDHD(model.parameters(), lr=0.05, hypergrad_lr=1e-2, hypergrad_rule="additive", lr_limit=0.03)
    plain_model = TinyNet()
    plain = SGDHD(plain_model.parameters(), lr=0.05, hypergrad_lr=1e-2, hypergrad_rule="additive")
    for t, batch in enumerate(make_batches(6), start=1):
        for m, o in ((model, blended), (plain_model, plain)):
            o.zero_grad()
            batch_loss(m, batch).backward()
            # The plain run steps with the blended run's rate, so both see the same u and g.
            if o is plain:
                o.param_groups[0]["lr"] = _hd_rate(blended.param_groups[0]) if t > 1 else 0.05
            o.step()
        group = blended.param_groups[0]
        assert group["hypergrad_state"]["step"] == t
        assert group["lr"] == pytest.approx(_hd_rate(group) / t**2 + (1 - 1 / t**2) * 0.03, rel=1e-12)


def _hd_rate(group):
    """The unblended HD rate of a group at one rate per group without a scheduler."""
    return group["lr"] * group["hypergrad_state"].get("factor", 1.0)


@pytest.mark.parametrize("granularity", ["tensor", "element"])
def test_per_tensor_and_per_weight_rates_are_read_by_name_and_follow_a_scheduler(granularity):
    model = TinyNet()
    optimizer = SGDHD(model.parameters(), lr=0.05, hypergrad_lr=1e-2, granularity=granularity)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    names = [name for name, _ in model.named_parameters()]
    for step, batch in enumerate(make_batches(5)):
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        optimizer.step()
        if step < 4:
            scheduler.step()
    before = optimizer.learning_rates(model.named_parameters())
    assert list(before) == names
    scheduler.step()  # the 5th: the group's base rate halves
    assert optimizer.param_groups[0]["lr"] == 0.025
    # The rates the last step used, whatever the scheduler wrote since.
    unchanged = optimizer.learning_rates(model.named_parameters())
    for name in names:
        torch.testing.assert_close(torch.as_tensor(unchanged[name]), torch.as_tensor(before[name]), rtol=0, atol=0)
    optimizer.zero_grad()
    batch_loss(model, make_batches(6)[5]).backward()
    optimizer.step()
    after = optimizer.learning_rates(model.named_parameters())
    for name, p in model.named_parameters():
        scale = optimizer.state[p]["hypergrad_state"]["factor"]
        if granularity == "tensor":
            assert isinstance(before[name], float) and scale.shape == ()
        else:
            assert before[name].shape == p.shape == scale.shape
        # rate = group lr * factor, and HD moved the scales apart from 1
        torch.testing.assert_close(torch.as_tensor(after[name], dtype=torch.float64), 0.025 * scale.double())
    assert len({after[n] for n in names} if granularity == "tensor" else {float(after[n][0].reshape(-1)[0]) for n in names}) > 1


def test_learning_rates_at_group_granularity_and_unknown_parameters():
    model = TinyNet()
    optimizer = AdamHD(model.parameters(), lr=0.01, hypergrad_lr=1e-4)
    train(model, optimizer, make_batches(3))
    rates = optimizer.learning_rates(model.named_parameters())
    assert set(rates.values()) == {optimizer.param_groups[0]["lr"]}
    with pytest.raises(ValueError, match="stranger"):
        optimizer.learning_rates([("stranger", torch.nn.Parameter(torch.zeros(1)))])


@pytest.mark.parametrize(
    "variant",
    [dict(), dict(granularity="tensor"), dict(granularity="element", hypergrad_rule="multiplicative"),
     dict(lr_limit=0.02), dict(granularity="tensor", lr_limit=0.02, lr_bounds=(0.0, 0.1))],
    ids=lambda v: "-".join(f"{k}={v[k]}" for k in v) or "plain",
)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trip(name, variant):
    """Train, save, load into a fresh optimizer, train on: identical to an uninterrupted run."""
    if variant.get("hypergrad_rule") == "multiplicative":
        variant = dict(variant, hypergrad_lr=0.05)
    batches = make_batches(10)
    model = TinyNet()
    optimizer = make(name, model, **variant)
    train(model, optimizer, batches[:5])
    saved_model = copy.deepcopy(model.state_dict())
    saved = copy.deepcopy(optimizer.state_dict())
    train(model, optimizer, batches[5:])

    resumed_model = TinyNet()
    resumed_model.load_state_dict(saved_model)
    resumed = make(name, resumed_model, **variant)
    resumed.load_state_dict(saved)
    train(resumed_model, resumed, batches[5:])
    for ours, theirs in zip(resumed_model.parameters(), model.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert resumed.learning_rates(resumed_model.named_parameters()).keys() == optimizer.learning_rates(model.named_parameters()).keys()
    for a, b in zip(all_rates(resumed, resumed_model), all_rates(optimizer, model)):
        assert a == b


@pytest.mark.parametrize("name", ["adamw-decay", "adagrad-decay", "rmsprop-centered"])
def test_param_groups_adapt_their_own_lr(name):
    """Two groups, different lr and hypergrad_lr: each group's rate follows its own dot product."""
    case = OPTIMIZERS[name]
    models = [TinyNet(), TinyNet()]
    optimizers = [
        c([{"params": m.hidden.parameters(), "lr": 0.02, "hypergrad_lr": 1e-4},
           {"params": m.out.parameters(), "lr": 0.005, "hypergrad_lr": 3e-4}], **case.base_settings())
        for c, m in zip((case.fast, case.reference), models)
    ]
    for batch in make_batches(15):
        for m, o in zip(models, optimizers):
            o.zero_grad()
            batch_loss(m, batch).backward()
            o.step()
    fast_lrs = [g["lr"] for g in optimizers[0].param_groups]
    slow_lrs = [g["lr"] for g in optimizers[1].param_groups]
    assert fast_lrs == pytest.approx(slow_lrs, rel=1e-9)
    assert fast_lrs[0] != pytest.approx(0.02) and fast_lrs[1] != pytest.approx(0.005)


BAD_ARGUMENTS = [
    (AdamWHD, dict(weight_decay=-1.0), "weight_decay"),
    (AdamWHD, dict(betas=(0.9, 1.0)), "betas"),
    (AdamWHD, dict(eps=-1e-8), "eps"),
    (AdagradHD, dict(lr_decay=-0.1), "lr_decay"),
    (AdagradHD, dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (AdagradHD, dict(eps=-1.0), "eps"),
    (AdagradHD, dict(weight_decay=-1.0), "weight_decay"),
    (RMSpropHD, dict(alpha=1.5), "alpha"),
    (RMSpropHD, dict(momentum=-0.5), "momentum"),
    (RMSpropHD, dict(eps=-1.0), "eps"),
    (RMSpropHD, dict(weight_decay=-1.0), "weight_decay"),
    (RMSpropHD, dict(lr=-1.0), "lr"),
    (AdagradHD, dict(hypergrad_lr=-1.0), "hypergrad_lr"),
    (AdamWHD, dict(hypergrad_rule="multiplicative", hypergrad_lr=1.0), "hypergrad_lr"),
    (RMSpropHD, dict(lr_bounds=(1.0, 0.1)), "lr_bounds"),
    (SGDHD, dict(granularity="layer"), "granularity"),
    (AdamHD, dict(lr_limit=-0.1), "lr_limit"),
    (AdagradHD, dict(lr_limit=float("nan")), "lr_limit"),
    (SGDHD, dict(lr_limit=0.5, lr_bounds=(0.0, 0.1)), "lr_limit"),
    (RMSpropHD, dict(lr_limit=0.01, lr_limit_power=1.0), "lr_limit_power"),
]


@pytest.mark.parametrize(("cls", "arguments", "named"), BAD_ARGUMENTS, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_bad_input_raises_value_error_naming_the_argument(cls, arguments, named):
    with pytest.raises(ValueError, match=named):
        cls(TinyNet().parameters(), **arguments)


def test_bad_group_setting_raises_value_error():
    model = TinyNet()
    with pytest.raises(ValueError, match="granularity"):
        RMSpropHD([{"params": model.hidden.parameters(), "granularity": "row"}, {"params": model.out.parameters()}])


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_non_finite_hypergradient_leaves_the_lr_unchanged(name, granularity):
    """An inf in one gradient entry: the rate it feeds into keeps its value (the group's, that
    tensor's, or that weight's); the others still adapt."""
    model = TinyNet()
    optimizer = make(name, model, granularity=granularity)
    train(model, optimizer, make_batches(3))
    before = {n: copy.deepcopy(r) for n, r in optimizer.learning_rates(model.named_parameters()).items()}
    optimizer.zero_grad()
    batch_loss(model, make_batches(4)[3]).backward()
    model.hidden.weight.grad[0, 0] = float("inf")
    optimizer.step()
    after = optimizer.learning_rates(model.named_parameters())
    if granularity == "group":
        assert after == before
    elif granularity == "tensor":
        assert after["hidden.weight"] == before["hidden.weight"]
        assert after["out.weight"] != before["out.weight"]
    else:
        assert after["hidden.weight"][0, 0] == before["hidden.weight"][0, 0]
        assert not torch.equal(after["out.weight"], before["out.weight"])


@pytest.mark.parametrize("variant", [dict(), dict(granularity="tensor"), dict(granularity="element", lr_limit=0.02),
                                     dict(lr_limit=0.02)], ids=lambda v: "-".join(f"{k}={v[k]}" for k in v) or "plain")
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_tensor_lr_steps_like_float_lr(name, variant):
    """A 0-dim tensor lr (the form an accelerator keeps it in, no host reads) takes the same steps."""
    batches = make_batches(10)
    runs = []
    for lr in (0.01, torch.tensor(0.01, dtype=torch.float64)):
        model = TinyNet()
        optimizer = make(name, model, lr=lr, **variant)
        train(model, optimizer, batches)
        runs.append((model, optimizer))
    (float_model, float_optimizer), (tensor_model, tensor_optimizer) = runs
    assert isinstance(tensor_optimizer.param_groups[0]["lr"], torch.Tensor)
    for ours, theirs in zip(tensor_model.parameters(), float_model.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(all_rates(tensor_optimizer, tensor_model), all_rates(float_optimizer, float_model),
                               rtol=1e-12, atol=0.0)
