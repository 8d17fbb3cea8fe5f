"""The learning-rate change is exactly -hypergrad_lr times the hypergradient.

alpha_t - alpha_{t-1} must equal -beta * dJ_t(theta_{t-1}(alpha)) / d alpha at alpha = alpha_{t-1},
where theta_{t-1}(alpha) is the *torch.optim* base step from the state at t-2 taken with learning
rate alpha and J_t is the objective the base rule descends on batch t (the loss, negated with
maximize, plus weight_decay/2 |theta|^2). The derivative comes from a central finite difference in
float64, independent of the package's own arithmetic. With decoupled weight decay (AdamW) the decay
is part of the step, not of J.
"""

from __future__ import annotations

import copy

import pytest
import torch

from cases import TinyNet, batch_loss, make_batches, pick, train

GRANULARITY_CASES = ["sgd-wd-maximize", "momentum", "nesterov", "adam", "adamw", "adagrad-decay-init-wd", "rmsprop-centered-momentum", "rmsprop"]

STEPS_BEFORE = 4  # steps t-2 taken before the snapshot

CASES = pick(
    "sgd", "sgd-wd-maximize", "momentum", "momentum-dampening-wd", "nesterov", "nesterov-wd",
    "adam", "adam-wd-maximize", "amsgrad", "adamw", "adamw-amsgrad-maximize",
    "adagrad", "adagrad-decay-init-wd",
    "rmsprop", "rmsprop-centered-wd-maximize", "rmsprop-momentum", "rmsprop-centered-momentum",
)


def objective(
    model: torch.nn.Module, batch, settings: dict, base_cls: type = torch.optim.SGD, params: dict | None = None
) -> torch.Tensor:
    """J: the loss (negated with maximize) plus the coupled decay; ``params`` replaces the model's."""
    params = dict(model.named_parameters()) if params is None else params
    x, y = batch
    loss = torch.nn.functional.mse_loss(torch.func.functional_call(model, params, (x,)), y)
    if settings.get("maximize", False):
        loss = -loss
    decay = 0.0 if base_cls is torch.optim.AdamW else settings.get("weight_decay", 0.0)
    return loss + 0.5 * decay * sum(p.pow(2).sum() for p in params.values())


def relative_error(observed: float, expected: float) -> float:
    return abs(observed - expected) / abs(expected)


def _train_to_snapshot(case: str, **overrides):
    """Train to t-2 and snapshot the parameters and the optimizer state there."""
    batches = make_batches(STEPS_BEFORE + 2)
    model = TinyNet()
    optimizer = CASES[case].make(model.parameters(), **overrides)
    train(model, optimizer, batches[:STEPS_BEFORE])
    snapshot_params = copy.deepcopy(model.state_dict())
    snapshot_state = {name: copy.deepcopy(optimizer.state[p]) for name, p in model.named_parameters()}
    return model, optimizer, batches, snapshot_params, snapshot_state


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_lr_change_is_the_hypergradient(case, foreach):
    settings = CASES[case].settings
    model, optimizer, batches, snapshot_params, snapshot_state = _train_to_snapshot(case, foreach=foreach)

    lr_previous, lr_now = train(model, optimizer, batches[STEPS_BEFORE:])

    hypergradient = _group_hypergradient(CASES[case], lr_previous, snapshot_params, snapshot_state, batches)
    expected_change = -settings["hypergrad_lr"] * hypergradient
    assert relative_error(lr_now - lr_previous, expected_change) < 1e-6, (lr_now - lr_previous, expected_change)


IDLE = "hidden.bias"  # the parameter without a gradient at step t-1 (it had one before and has one after)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_lr_change_is_the_hypergradient_after_a_step_without_a_gradient(case, foreach):
    """A parameter that had no gradient at t-1 did not move: its stored direction from t-2 is not
    part of u_{t-1}, and the lr change is still -beta times the hypergradient through torch.optim,
    for the optimizer and for its reference twin."""
    settings = CASES[case].settings
    model, optimizer, batches, snapshot_params, snapshot_state = _train_to_snapshot(case, foreach=foreach)
    reference_model = TinyNet()
    reference = CASES[case].make_reference(reference_model.parameters())
    train(reference_model, reference, batches[:STEPS_BEFORE])
    changes = []
    for net, opt in ((model, optimizer), (reference_model, reference)):
        _step_without(net, opt, batches[STEPS_BEFORE], IDLE)
        lr_previous = float(opt.param_groups[0]["lr"])
        changes.append((train(net, opt, batches[STEPS_BEFORE + 1:])[-1] - lr_previous, lr_previous))

    for change, lr_previous in changes:
        hypergradient = _group_hypergradient(CASES[case], lr_previous, snapshot_params, snapshot_state, batches, IDLE)
        expected_change = -settings["hypergrad_lr"] * hypergradient
        assert relative_error(change, expected_change) < 1e-6, (change, expected_change)


@pytest.mark.parametrize("case", ["sgd", "nesterov", "adam"])
def test_first_step_keeps_the_initial_lr(case):
    hd_cls, _, _, settings = CASES[case]
    model = TinyNet()
    optimizer = hd_cls(model.parameters(), **settings)
    assert train(model, optimizer, make_batches(1)) == [settings["lr"]]


def _step_without(model, optimizer, batch, idle: str | None) -> None:
    """One step on ``batch`` in which the parameter named ``idle`` has no gradient (it does not move)."""
    optimizer.zero_grad()
    batch_loss(model, batch).backward()
    if idle is not None:
        model.get_parameter(idle).grad = None
    optimizer.step()


def _run_around_step(case: str, granularity: str, idle: str | None = None):
    """Train to t-2, snapshot, take steps t-1 (``idle`` without a gradient) and t; return what the
    checks need."""
    model, optimizer, batches, snapshot_params, snapshot_state = _train_to_snapshot(case, granularity=granularity)
    _step_without(model, optimizer, batches[STEPS_BEFORE], idle)
    rates_previous = optimizer.learning_rates(model.named_parameters())
    train(model, optimizer, batches[STEPS_BEFORE + 1:])
    rates_now = optimizer.learning_rates(model.named_parameters())
    return CASES[case], batches, snapshot_params, snapshot_state, rates_previous, rates_now


def _base_replica(case, param_groups_of, snapshot_params, snapshot_state, batch, idle=None):
    """A torch.optim base optimizer at the t-2 snapshot with the gradient of batch t-1 (none for the
    parameter named ``idle``)."""
    replica = TinyNet()
    replica.load_state_dict(snapshot_params)
    base = case.base(param_groups_of(replica), **case.base_settings())
    for name, p in replica.named_parameters():
        base.state[p] = copy.deepcopy(snapshot_state[name])
        base.state[p].pop("hypergrad_state", None)
    base.zero_grad()
    batch_loss(replica, batch).backward()
    if idle is not None:
        replica.get_parameter(idle).grad = None
    return replica, base


def _objective_after_base_step(case, param_groups_of, snapshot_params, snapshot_state, batches, idle=None) -> float:
    """J_t after a torch.optim base step from the t-2 snapshot with the gradient of batch t-1."""
    replica, base = _base_replica(case, param_groups_of, snapshot_params, snapshot_state, batches[STEPS_BEFORE], idle)
    base.step()
    with torch.no_grad():
        return objective(replica, batches[STEPS_BEFORE + 1], case.settings, case.base).item()


def _group_hypergradient(case, alpha, snapshot_params, snapshot_state, batches, idle=None) -> float:
    """dJ_t / d alpha at ``alpha`` by central differences, step t-1 taken by torch.optim's base with
    one param group from the t-2 snapshot."""

    def next_objective(rate: float) -> float:
        return _objective_after_base_step(
            case, lambda m: [{"params": list(m.parameters()), "lr": rate}], snapshot_params, snapshot_state, batches,
            idle,
        )

    h = 1e-5 * alpha
    return (next_objective(alpha + h) - next_objective(alpha - h)) / (2 * h)


@pytest.mark.parametrize("idle", [None, IDLE])
@pytest.mark.parametrize("case", GRANULARITY_CASES)
def test_per_tensor_lr_change_is_that_tensors_hypergradient(case, idle):
    """Each tensor's lr change is -beta * dJ_t / d(lr of that tensor at t-1), the step t-1 taken by
    torch.optim with one param group per tensor (and ``idle`` without a gradient at t-1: its
    hypergradient is exactly 0)."""
    case_, batches, snapshot_params, snapshot_state, rates_previous, rates_now = _run_around_step(case, "tensor", idle)
    assert len(set(rates_previous.values())) == len(rates_previous)  # the rates have separated

    def next_objective(rates: dict[str, float]) -> float:
        return _objective_after_base_step(
            case_, lambda m: [{"params": [p], "lr": rates[name]} for name, p in m.named_parameters()],
            snapshot_params, snapshot_state, batches, idle,
        )

    for name, rate in rates_previous.items():
        h = 1e-5 * rate
        hypergradient = (
            next_objective({**rates_previous, name: rate + h}) - next_objective({**rates_previous, name: rate - h})
        ) / (2 * h)
        expected_change = -case_.settings["hypergrad_lr"] * hypergradient
        observed_change = rates_now[name] - rate
        if name == idle:
            assert expected_change == 0 and observed_change == 0, (name, observed_change, expected_change)
            continue
        assert relative_error(observed_change, expected_change) < 1e-6, (name, observed_change, expected_change)


@pytest.mark.parametrize("idle", [None, IDLE])
@pytest.mark.parametrize("case", GRANULARITY_CASES)
def test_per_weight_lr_change_is_that_weights_hypergradient(case, idle):
    """Each weight's lr change is -beta * dJ_t / d(lr of that weight at t-1). Every base rule moves
    the parameters linearly in the lr, so a torch.optim step with lr=1 from the t-2 snapshot gives
    u_{t-1}; autograd differentiates J_t(theta_{t-2} - R * u_{t-1}) with respect to the rates R."""
    case_, batches, snapshot_params, snapshot_state, rates_previous, rates_now = _run_around_step(case, "element", idle)
    settings, base_cls = case_.settings, case_.base
    replica, base = _base_replica(
        case_, lambda m: [{"params": list(m.parameters()), "lr": 1.0}],
        snapshot_params, snapshot_state, batches[STEPS_BEFORE], idle,
    )
    base.step()
    directions = {name: snapshot_params[name] - p.detach() for name, p in replica.named_parameters()}
    rates = {name: rate.clone().requires_grad_() for name, rate in rates_previous.items()}
    moved = {name: snapshot_params[name] - rates[name] * directions[name] for name in rates}
    objective(replica, batches[STEPS_BEFORE + 1], settings, base_cls, params=moved).backward()
    for name, rate in rates.items():
        expected_change = -settings["hypergrad_lr"] * rate.grad
        observed_change = rates_now[name] - rates_previous[name]
        if name == idle:
            assert not expected_change.any() and not observed_change.any(), name
            continue
        error = (observed_change - expected_change).abs().max() / expected_change.abs().max()
        assert error < 1e-6, (name, error)
    assert all(r.unique().numel() > 1 for r in rates_previous.values())  # the rates have separated


@pytest.mark.parametrize("case", ["sgd", "nesterov", "adamw", "adagrad-decay-init-wd", "rmsprop-centered-momentum"])
def test_blended_runs_keep_an_exact_hypergradient_chain(case):
    """With lr_limit the step uses the blended rate, and the unblended HD rate, group["lr"] times
    the group's factor, moves by -beta times the hypergradient with respect to the rate the previous step used."""
    settings = CASES[case].settings
    model, optimizer, batches, snapshot_params, snapshot_state = _train_to_snapshot(case, lr_limit=0.02)
    group = optimizer.param_groups[0]
    train(model, optimizer, batches[STEPS_BEFORE:STEPS_BEFORE + 1])
    applied_previous, chain_previous = group["lr"], group["lr"] * group["hypergrad_state"]["factor"]
    assert applied_previous != pytest.approx(chain_previous)  # the blend is in force
    train(model, optimizer, batches[STEPS_BEFORE + 1:])

    hypergradient = _group_hypergradient(CASES[case], applied_previous, snapshot_params, snapshot_state, batches)
    expected_change = -settings["hypergrad_lr"] * hypergradient
    chain = group["lr"] * group["hypergrad_state"]["factor"]
    assert relative_error(chain - chain_previous, expected_change) < 1e-6
