"""What the library tests share: a small deterministic problem, and the one table of optimizer
cases (fast class, torch.optim base, reference twin, settings) that every parametrized table of
the tests picks its cases from by name."""

from __future__ import annotations

import copy
import itertools
from typing import Any, NamedTuple

import pytest
import schedulefree
import torch
from torch.optim import Optimizer

import hypergrad
from hypergrad import reference
from hypergrad._keywords import HYPERGRAD_KEYWORDS


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


def resumed_run(make, edit=None, steps: int = 10, split: int = 5):
    """``make(params)``'s optimizer trained on ``steps`` batches, and a new model and optimizer
    resumed from the state saved after ``split`` of them (``edit(state_dict)`` may change it, as a
    file of another version holds it) and trained on the rest: ``(model, optimizer)`` of both."""
    batches = make_batches(steps)
    model = TinyNet()
    optimizer = make(model.parameters())
    train(model, optimizer, batches[:split])
    saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    train(model, optimizer, batches[split:])
    resumed_model = TinyNet()
    resumed_model.load_state_dict(saved_model)
    resumed = make(resumed_model.parameters())
    if edit is not None:
        edit(saved)
    resumed.load_state_dict(saved)
    train(resumed_model, resumed, batches[split:])
    return (model, optimizer), (resumed_model, resumed)


def assert_additive_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches, beta: float,
                          directions_after, before=None) -> None:
    """Under the additive rule group 0's rate moves at every step by ``beta * g_t . u_{t-1}``,
    written out: ``before(number)`` runs before each step (it may write into the group) and what
    it returns goes with the step's gradients to ``directions_after(noted, grads)``, the ``u_t``
    of every parameter after that step."""
    params, group, directions = list(model.parameters()), optimizer.param_groups[0], None
    for number, batch in enumerate(batches):
        noted = before(number) if before is not None else None
        rate = group["lr"]
        optimizer.zero_grad()
        batch_loss(model, batch).backward()
        grads = [p.grad.clone() for p in params]
        optimizer.step()
        if directions is not None:
            moved = beta * sum(float(torch.dot(g.flatten(), u.flatten())) for g, u in zip(grads, directions))
            assert group["lr"] == pytest.approx(rate + moved, rel=1e-12, abs=1e-15), f"step {number}"
        directions = directions_after(noted, grads)


def quadratic_descent(optimizer: torch.optim.Optimizer, x: torch.Tensor, eigenvalues: torch.Tensor, steps: int,
                      record=None) -> list[float]:
    """``steps`` full-batch steps on f(x) = sum(eigenvalues * x^2) / 2; the loss before each step
    (and ``record(optimizer)`` after it, where given)."""
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = 0.5 * (eigenvalues * x * x).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if record is not None:
            record(optimizer)
    return losses


def steps_on(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], gradients) -> list[float]:
    """One step per list of ``gradients`` (copied into ``params``' grads); the lr of group 0 after each."""
    lrs = []
    for step_gradients in gradients:
        for param, grad in zip(params, step_gradients):
            param.grad = grad.clone()
        optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs


HD_KEYS = HYPERGRAD_KEYWORDS
IMPLEMENTATION_KEYS = ("foreach", "capturable", "fused")


class Case(NamedTuple):
    """An optimizer and the settings a test runs it with."""

    fast: type[Optimizer]
    base: type[Optimizer]
    reference: type[Optimizer]
    settings: dict[str, Any]

    def make(self, params: Any, **overrides: Any) -> Optimizer:
        return _ready(self.fast(params, **{**self.settings, **overrides}))

    def make_reference(self, params: Any, **overrides: Any) -> Optimizer:
        settings = {k: v for k, v in {**self.settings, **overrides}.items() if k not in IMPLEMENTATION_KEYS}
        return _ready(self.reference(params, **settings))

    def base_settings(self) -> dict[str, Any]:
        """The settings torch.optim's base takes (no lr, no hypergradient keyword)."""
        return {k: v for k, v in self.settings.items() if k not in (*HD_KEYS, *IMPLEMENTATION_KEYS, "lr")}


_FAMILIES = {
    "sgd": (hypergrad.SGDHD, torch.optim.SGD, reference.SGDHDReference),
    "adam": (hypergrad.AdamHD, torch.optim.Adam, reference.AdamHDReference),
    "adamw": (hypergrad.AdamWHD, torch.optim.AdamW, reference.AdamWHDReference),
    "adagrad": (hypergrad.AdagradHD, torch.optim.Adagrad, reference.AdagradHDReference),
    "rmsprop": (hypergrad.RMSpropHD, torch.optim.RMSprop, reference.RMSpropHDReference),
    "muon": (hypergrad.MuonHD, getattr(torch.optim, "Muon", None), reference.MuonHDReference),
}
#: Base rules that take 2-D parameters only (not TinyNet's biases): their cases are picked by
#: name (tests/test_muon.py), never by one_per_base_rule.
MATRIX_ONLY = ("muon",)


#: Schedule-Free's, whose base is the schedulefree package's: picked by name, never by
#: one_per_base_rule (their bases take other flags), and switched to train mode by make().
_SCHEDULE_FREE_FAMILIES = {
    "schedulefree_adamw": (hypergrad.ScheduleFreeAdamWHD, schedulefree.AdamWScheduleFree,
                           reference.ScheduleFreeAdamWHDReference),
    "schedulefree_sgd": (hypergrad.ScheduleFreeSGDHD, schedulefree.SGDScheduleFree, reference.ScheduleFreeSGDHDReference),
}


def _ready(optimizer: Optimizer) -> Optimizer:
    """The optimizer ready to step: a Schedule-Free one in train mode, as its users switch it."""
    if hasattr(optimizer, "train"):
        optimizer.train()
    return optimizer


def _case(family: str, **settings: Any) -> Case:
    """A case of the paper's additive rule unless ``settings`` name another (the library's default
    rule is the scale-free one; the table's betas are additive ones), without the bound on the
    first update unless ``settings`` set one: a case's rates follow the twin's to 1e-9 over many
    steps, and the bound's retracted first step differs from the twin's directly scaled one by
    rounding, which the additive rule amplifies (tests/test_first_step.py holds the bound to the
    twins)."""
    defaults = {"hypergrad_rule": "additive", "first_step_bound": None}
    return Case(*{**_FAMILIES, **_SCHEDULE_FREE_FAMILIES}[family], {**defaults, **settings})


# The table. Names say the base rule and what departs from its defaults.
CASES: dict[str, Case] = {
    # SGD, heavy ball, Nesterov
    "sgd": _case("sgd", lr=0.05, hypergrad_lr=1e-2),
    "sgd-small-wd": _case("sgd", lr=0.05, hypergrad_lr=1e-2, weight_decay=1e-2),
    "sgd-wd-maximize": _case("sgd", lr=0.05, hypergrad_lr=1e-2, weight_decay=0.05, maximize=True),
    "sgd-small-wd-maximize": _case("sgd", lr=0.05, hypergrad_lr=1e-2, weight_decay=1e-2, maximize=True),
    "sgd-wd-maximize-bounded": _case("sgd", lr=0.02, hypergrad_lr=1e-3, weight_decay=0.05, maximize=True,
                                     lr_bounds=(0.0, 0.03)),
    "sgd-multiplicative": _case("sgd", lr=0.05, hypergrad_lr=0.3, hypergrad_rule="multiplicative"),
    "sgd-bounded": _case("sgd", lr=0.05, hypergrad_lr=10.0, lr_bounds=(0.01, 0.08)),
    "momentum": _case("sgd", lr=0.02, hypergrad_lr=1e-2, momentum=0.9),
    "momentum-fast": _case("sgd", lr=0.05, hypergrad_lr=1e-2, momentum=0.9),
    "momentum-dampening": _case("sgd", lr=0.02, hypergrad_lr=1e-2, momentum=0.8, dampening=0.2),
    "momentum-dampening-wd": _case("sgd", lr=0.02, hypergrad_lr=1e-2, momentum=0.8, dampening=0.3, weight_decay=0.05),
    "heavy-ball": _case("sgd", lr=0.05, hypergrad_lr=1e-2, momentum=0.5, dampening=0.2),
    "momentum-multiplicative": _case("sgd", lr=0.02, momentum=0.9, hypergrad_lr=0.1, hypergrad_rule="multiplicative",
                                     lr_bounds=(1e-4, 1.0)),
    "momentum-multiplicative-bounded": _case("sgd", lr=0.02, hypergrad_lr=0.05, momentum=0.9,
                                             hypergrad_rule="multiplicative", lr_bounds=(1e-3, 0.05)),
    "nesterov": _case("sgd", lr=0.02, hypergrad_lr=1e-2, momentum=0.9, nesterov=True),
    "nesterov-wd": _case("sgd", lr=0.02, hypergrad_lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.05),
    "nesterov-small-wd": _case("sgd", lr=0.02, hypergrad_lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "nesterov-fast-wd": _case("sgd", lr=0.05, hypergrad_lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.01),
    "nesterov-scalefree": _case("sgd", lr=0.02, momentum=0.9, nesterov=True, hypergrad_rule="scalefree",
                                hypergrad_lr=0.05),
    # Adam, AMSGrad
    "adam": _case("adam", lr=0.01, hypergrad_lr=1e-4),
    "adam-wd-maximize": _case("adam", lr=0.01, hypergrad_lr=1e-4, weight_decay=0.05, maximize=True),
    "amsgrad": _case("adam", lr=0.01, hypergrad_lr=1e-4, amsgrad=True, betas=(0.8, 0.9)),
    "amsgrad-wd": _case("adam", lr=0.01, hypergrad_lr=1e-4, amsgrad=True, weight_decay=0.01),
    "amsgrad-foreach": _case("adam", lr=0.01, hypergrad_lr=1e-4, amsgrad=True, foreach=True),
    "amsgrad-wd-maximize-bounded": _case("adam", lr=0.01, hypergrad_lr=1e-4, amsgrad=True, weight_decay=0.05,
                                         maximize=True, lr_bounds=(0.0, 0.02)),
    "adam-multiplicative": _case("adam", lr=0.01, hypergrad_lr=0.2, hypergrad_rule="multiplicative", betas=(0.8, 0.99)),
    "adam-bounded": _case("adam", lr=0.01, hypergrad_lr=1.0, lr_bounds=(0.001, 0.02)),
    "adam-scalefree": _case("adam", lr=0.01, hypergrad_rule="scalefree", hypergrad_lr=0.05),
    # AdamW
    "adamw": _case("adamw", lr=0.01, hypergrad_lr=1e-4, weight_decay=0.5),
    "adamw-default-decay": _case("adamw", lr=0.01, hypergrad_lr=1e-4),
    "adamw-decay": _case("adamw", lr=0.01, weight_decay=0.1, hypergrad_lr=1e-4),
    "adamw-strong-decay": _case("adamw", lr=0.01, weight_decay=0.3, hypergrad_lr=1e-4),
    "adamw-per-weight": _case("adamw", lr=0.01, weight_decay=0.1, hypergrad_lr=1e-4, granularity="element"),
    "adamw-amsgrad-maximize": _case("adamw", lr=0.01, hypergrad_lr=1e-4, weight_decay=0.5, amsgrad=True, maximize=True),
    # Adagrad
    "adagrad": _case("adagrad", lr=0.05, hypergrad_lr=1e-4),
    "adagrad-decay": _case("adagrad", lr=0.05, lr_decay=0.05, hypergrad_lr=1e-4),
    "adagrad-small-decay": _case("adagrad", lr=0.05, lr_decay=0.01, hypergrad_lr=1e-4),
    "adagrad-slow-decay": _case("adagrad", lr=0.01, hypergrad_lr=1e-4, lr_decay=0.01),
    "adagrad-decay-init": _case("adagrad", lr=0.05, lr_decay=0.1, initial_accumulator_value=0.2, hypergrad_lr=1e-4),
    "adagrad-decay-init-wd": _case("adagrad", lr=0.05, hypergrad_lr=1e-4, lr_decay=0.2, initial_accumulator_value=0.5,
                                   weight_decay=0.05),
    "adagrad-per-tensor-blend": _case("adagrad", lr=0.05, lr_decay=0.1, hypergrad_lr=1e-4, granularity="tensor",
                                      lr_limit=0.03),
    # RMSprop
    "rmsprop": _case("rmsprop", lr=0.01, hypergrad_lr=1e-4, alpha=0.9),
    "rmsprop-maximize": _case("rmsprop", lr=0.01, alpha=0.9, maximize=True, hypergrad_lr=1e-4),
    "rmsprop-centered": _case("rmsprop", lr=0.01, centered=True, hypergrad_lr=1e-4),
    "rmsprop-centered-wd-maximize": _case("rmsprop", lr=0.01, hypergrad_lr=1e-4, centered=True, weight_decay=0.05,
                                          maximize=True),
    "rmsprop-momentum": _case("rmsprop", lr=0.01, hypergrad_lr=1e-4, momentum=0.9),
    "rmsprop-half-momentum": _case("rmsprop", lr=0.01, momentum=0.5, hypergrad_lr=1e-4),
    "rmsprop-centered-momentum": _case("rmsprop", lr=0.01, hypergrad_lr=1e-4, centered=True, momentum=0.5, alpha=0.9),
    "rmsprop-centered-half-momentum": _case("rmsprop", lr=0.01, centered=True, momentum=0.5, hypergrad_lr=1e-4),
    "rmsprop-centered-heavy-momentum": _case("rmsprop", lr=0.01, hypergrad_lr=1e-4, momentum=0.9, centered=True),
    "rmsprop-momentum-blend": _case("rmsprop", lr=0.01, momentum=0.5, centered=True, hypergrad_lr=0.05,
                                    hypergrad_rule="multiplicative", lr_limit=0.005),
    # Muon (2-D parameters only)
    "muon": _case("muon", lr=0.02, hypergrad_lr=1e-3),
    "muon-no-decay": _case("muon", lr=0.02, hypergrad_lr=1e-3, weight_decay=0.0),
    "muon-plain-match": _case("muon", lr=0.02, hypergrad_lr=1e-3, nesterov=False, momentum=0.9, ns_steps=3,
                              adjust_lr_fn="match_rms_adamw", weight_decay=0.3),
    # Schedule-Free AdamW and SGD (warmup, decay at y)
    "schedulefree-adamw": _case("schedulefree_adamw", lr=0.01, hypergrad_lr=1e-4, warmup_steps=5, weight_decay=0.05),
    "schedulefree-sgd": _case("schedulefree_sgd", lr=0.05, hypergrad_lr=1e-2, warmup_steps=5, weight_decay=0.05),
    "schedulefree-adamw-scalefree": _case("schedulefree_adamw", lr=0.01, hypergrad_rule="scalefree", hypergrad_lr=0.05,
                                          warmup_steps=3),
}


def pick(*names: str) -> dict[str, Case]:
    """The cases a test table runs, by name, in the order given."""
    return {name: CASES[name] for name in names}


def one_per_base_rule(lr_of: dict[str, float] | None = None) -> list[Case]:
    """One case per base rule (fast, base, twin) with no settings beyond ``lr`` (the family's
    test lr by default): for tests that parametrize the settings themselves."""
    lrs = {"sgd": 0.05, "adam": 0.01, "adamw": 0.01, "adagrad": 0.05, "rmsprop": 0.01, **(lr_of or {})}
    return [Case(*members, {"lr": lrs[family]}) for family, members in _FAMILIES.items() if family not in MATRIX_ONLY]


# Every combination of torch.optim's flags per base rule, for the tests that sweep them.
SGD_FLAGS = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
    for m, d, n, wd, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 1e-2), (False, True))
    if not (n and (m == 0 or d != 0))
]
ADAM_FLAGS = [
    dict(amsgrad=a, weight_decay=wd, maximize=mx)
    for a, wd, mx in itertools.product((False, True), (0.0, 1e-2), (False, True))
]
MUON_FLAGS = [
    dict(nesterov=n, weight_decay=wd, adjust_lr_fn=fn, ns_steps=k)
    for n, wd, fn, k in itertools.product((True, False), (0.0, 0.1), (None, "original", "match_rms_adamw"), (5, 2))
]
BASE_FLAGS: dict[type[Optimizer] | None, list[dict[str, Any]]] = {
    torch.optim.SGD: SGD_FLAGS,
    torch.optim.Adam: [dict(flags, betas=b) for flags in ADAM_FLAGS for b in ((0.9, 0.999), (0.5, 0.9))],
    torch.optim.AdamW: [
        dict(amsgrad=a, weight_decay=wd, maximize=mx)
        for a, wd, mx in itertools.product((False, True), (0.0, 1e-2, 0.3), (False, True))
    ],
    torch.optim.Adagrad: [
        dict(lr_decay=d, initial_accumulator_value=init, weight_decay=wd, maximize=mx)
        for d, init, wd, mx in itertools.product((0.0, 0.1), (0.0, 0.5), (0.0, 1e-2), (False, True))
    ],
    torch.optim.RMSprop: [
        dict(centered=c, momentum=m, weight_decay=wd, maximize=mx, alpha=a)
        for c, m, wd, mx, a in itertools.product((False, True), (0.0, 0.9), (0.0, 1e-2), (False, True), (0.99, 0.8))
    ],
    getattr(torch.optim, "Muon", None): MUON_FLAGS,
}


def flag_id(flags: dict[str, Any]) -> str:
    return "-".join(f"{k}={v}" for k, v in flags.items())


def hd_variants(lr_bounds: tuple[float, float] = (0.0, 0.03)) -> list[dict[str, Any]]:
    """Every HD rule at every granularity: plain, clipped into ``lr_bounds``, and blended."""
    return [
        dict(hypergrad_rule=rule, granularity=granularity, **extra)
        for rule, granularity, extra in itertools.product(
            ("additive", "multiplicative", "scalefree"),
            ("group", "tensor", "element"),
            ({}, {"lr_bounds": lr_bounds}, {"lr_limit": 0.02, "lr_limit_power": 1.5}),
        )
    ]


def twin_rates(optimizer: Optimizer, model: torch.nn.Module) -> dict[str, Any]:
    """The rates a twin stepped with, by name (it keeps them as absolute values, unblended)."""
    group = optimizer.param_groups[0]
    rates = {}
    for name, p in model.named_parameters():
        state = optimizer.state[p]
        rate = state.get("rate", state.get("rates", group["lr"]))
        if group["granularity"] != "group" and group["lr_limit"] is not None:
            delta = group["t"] ** -group["lr_limit_power"]
            rate = delta * rate + (1 - delta) * group["lr_limit"]
        rates[name] = rate
    return rates


def with_beta(case: Case, variant: dict[str, Any]) -> dict[str, Any]:
    """``variant`` with a ``hypergrad_lr`` for its rule: the case's under the additive rule, 0.05
    under the others (their beta is dimensionless)."""
    beta = case.settings["hypergrad_lr"] if variant["hypergrad_rule"] == "additive" else 0.05
    return dict(variant, hypergrad_lr=beta)


def follow_twin(
    case: Case, net: type[torch.nn.Module], steps: int, **overrides: Any
) -> tuple[list[float], dict[str, Any]]:
    """Trains ``net`` with the case's fast optimizer and, from the same start, with its twin, both
    with ``overrides`` on the case's settings (the twin without the implementation switches);
    asserts they step with the same group lr at every step (one rate per group), end at the same
    parameters and hold the same rates. Returns the group lrs per step and the fast optimizer's
    rates by name."""
    batches = make_batches(steps)
    models = [net(), net()]
    fast = case.make(models[0].parameters(), **overrides)
    slow = case.make_reference(models[1].parameters(), **overrides)
    lrs, slow_lrs = train(models[0], fast, batches), train(models[1], slow, batches)
    if fast.param_groups[0]["granularity"] == "group":  # else group["lr"] is the base of the rates
        torch.testing.assert_close(torch.tensor(lrs), torch.tensor(slow_lrs), rtol=1e-9, atol=0.0)
    for ours, theirs in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    fast_rates = fast.learning_rates(models[0].named_parameters())
    slow_rates = twin_rates(slow, models[1])
    for name, rate in fast_rates.items():
        torch.testing.assert_close(torch.as_tensor(rate), torch.as_tensor(slow_rates[name]), rtol=1e-9, atol=0.0)
    return lrs, fast_rates


def same(a: Any, b: Any) -> bool:
    """Equality of nested state (dicts, lists, tuples) with tensors compared by value and dtype
    (a group of the scale-free rule holds its memory tensor)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b
