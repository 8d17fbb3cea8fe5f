"""Every optimizer the experiments compare, in one registry: name -> :class:`Method`.

* Baselines are torch.optim's own classes: ``sgd``, ``sgdm`` (momentum 0.9), ``sgdn``
  (Nesterov, momentum 0.9), ``adagrad``, ``rmsprop``, ``adam``, ``adamw``.
* ``NAME_hd`` is the same base with the paper's hypergradient descent on its learning rate (the
  additive rule, given explicitly: the library's default rule is the scale-free one), from
  :mod:`hypergrad`. An HD class that this ``hypergrad`` does not export yet gives a clear
  :class:`MethodUnavailableError`.
* ``NAME_hd_sf`` is ``NAME_hd`` with ``hypergrad_rule="scalefree"`` (one dimensionless beta for
  every base): the library's defaults.
* Learning-rate-free peers through their own packages, at their documented defaults (their own
  ``lr``, which is a multiplier, not alpha_0): ``prodigy`` (prodigyopt), ``dadapt_adam``
  (dadaptation), ``schedulefree_adamw`` (schedulefree; needs ``train()``/``eval()`` calls),
  ``dog`` (dog-optimizer; ``reps_rel`` 1e-4 for batch-norm models, 1e-6 otherwise, as its
  docstring advises); ``mechanic`` (mechanic-pytorch: ``mechanize(torch.optim.AdamW)``).
* ``hdm`` is :class:`hypergrad.HDM` at its defaults (its own step sizes; it takes no weight
  decay); ``NAME_hd_mult`` is ``NAME_hd`` with the multiplicative (scale-free) hypergradient
  rule at beta = ``MULTIPLICATIVE_HYPERGRAD_LR``.

What a method's constructor is given (:class:`MethodSettings`) is resolved in one place,
:func:`resolve_settings`, from a NAMED configuration (:data:`CONFIGURATIONS`), which every run
specification and every output records:

* ``paper``: the reference code's settings: alpha_0 ``lr`` (default 1e-3), weight decay 1e-4 and the
  paper's beta for the task (:func:`default_hypergrad_lr`); ``python -m experiments run`` and
  ``reproduce`` use it.
* ``untuned``: what a user who tunes nothing gets, the constructors' own defaults
  (:func:`untuned_settings`); the benchmark and the commands over its workloads use it.

So ``adagrad_hd`` is beta 1e-7 on logreg under ``paper`` and 1e-6 (``AdagradHD``'s default for the
additive rule) under ``untuned``; the configuration's name says which.

Every method gets the same ``weight_decay`` (L2 through the optimizer's own argument; decoupled
where the method's definition says so: AdamW, Prodigy, Schedule-Free AdamW).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch.optim import Optimizer

from hypergrad import RULES

from experiments.core.workloads import WORKLOADS

__all__ = [
    "METHODS",
    "PAPER_METHODS",
    "Method",
    "MethodSettings",
    "MethodUnavailableError",
    "CONFIGURATIONS",
    "build_optimizer",
    "resolve_settings",
    "untuned_settings",
    "default_hypergrad_lr",
    "resolve_hypergrad_lr",
    "resolve_methods",
]

MOMENTUM = 0.9
SGD_HYPERGRAD_LR = 1e-3
"""The reference code's beta for SGD-type HD methods on every task."""
MULTIPLICATIVE_HYPERGRAD_LR = 0.003
"""beta of the multiplicative rule (scale-free: one value for every base rule and task; the value
the toy surfaces use)."""
PAPER_METHODS = ("sgd", "sgd_hd", "sgdn", "sgdn_hd", "adam", "adam_hd")
PEER_DISTRIBUTIONS = {"prodigyopt": "prodigyopt", "dadaptation": "dadaptation", "schedulefree": "schedulefree",
                      "dog": "dog-optimizer", "mechanic_pytorch": "mechanic-pytorch"}
"""Import name -> PyPI distribution of the learning-rate-free peers."""


class MethodUnavailableError(RuntimeError):
    """The method's optimizer class or package is not installed / not exported yet."""


CONFIGURATIONS = {
    "paper": "the reference code's settings: alpha_0 (default 1e-3), weight decay 1e-4, the paper's beta per task",
    "untuned": "the constructors' own defaults (lr, weight decay, beta): what a user who tunes nothing gets",
}
"""The named settings configurations :func:`resolve_settings` knows, with one line each."""
PAPER_LR = 1e-3
PAPER_WEIGHT_DECAY = 1e-4


@dataclass(frozen=True)
class MethodSettings:
    """What a method's constructor is given (``hypergrad_rule``: HD methods only; None keeps the
    entry's own rule)."""

    lr: float
    hypergrad_lr: float | None
    weight_decay: float
    model_has_batch_norm: bool
    hypergrad_rule: str | None = None

    def hypergrad_keywords(self) -> dict:
        """The HD keywords an HD class is given."""
        keywords = {"hypergrad_lr": self.hypergrad_lr}
        if self.hypergrad_rule is not None:
            keywords["hypergrad_rule"] = self.hypergrad_rule
        return keywords


@dataclass(frozen=True)
class Method:
    """One entry of the registry.

    Attributes:
        name: registry key (CSV file names use it).
        description: one line for tables and ``--help``.
        build: ``(params, settings) -> optimizer``.
        hypergradient: ``"sgd"`` or ``"adaptive"`` for HD methods with the paper's rule,
            ``"multiplicative"`` for the multiplicative rule (these pick the default beta),
            ``"scalefree"`` or ``"bracket"`` for a rule with one dimensionless default beta (every
            base; read from the library's rule registry), None for the rest.
        uses_alpha0: whether ``--lr`` is the method's initial learning rate (False for the
            learning-rate-free peers, which keep their documented ``lr``).
        has_train_eval_modes: the optimizer needs ``optimizer.train()`` before training steps and
            ``optimizer.eval()`` before evaluation (Schedule-Free).
        effective_lr: the step size the method used, for the logs.
        parameters: ``model -> what build takes``: ``model.parameters()``, or for the Muon entries
            the usual split (:func:`hypergrad.muon_param_groups`: hidden matrices to Muon, the rest
            to AdamW).
        requires: what provides the optimizer: ``"torch.CLASS"``, ``"hypergrad.CLASS"`` or a
            peer's module, for availability checks before anything trains (and the constructor
            whose defaults :func:`untuned_settings` reads).
    """

    name: str
    description: str
    build: Callable[[Iterable[torch.nn.Parameter], MethodSettings], Optimizer]
    requires: str
    hypergradient: str | None = None
    uses_alpha0: bool = True
    has_train_eval_modes: bool = False
    effective_lr: Callable[[Optimizer], float] = lambda optimizer: float(optimizer.param_groups[0]["lr"])
    parameters: Callable[[torch.nn.Module], object] = lambda model: model.parameters()


def _hypergrad_class(class_name: str) -> type[Optimizer]:
    import hypergrad

    optimizer_class = getattr(hypergrad, class_name, None)
    if optimizer_class is None:
        raise MethodUnavailableError(
            f"hypergrad.{class_name} is not available in this hypergrad ({hypergrad.__file__}); "
            f"it lands with the family of HD optimizers. Choose other --methods meanwhile."
        )
    return optimizer_class


def _import_peer(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        distribution = PEER_DISTRIBUTIONS[module]
        raise MethodUnavailableError(f"needs the {distribution} package: pip install {distribution}") from error


def _sgd(momentum: float = 0.0, nesterov: bool = False):
    def build(params, s: MethodSettings) -> Optimizer:
        return torch.optim.SGD(params, lr=s.lr, momentum=momentum, nesterov=nesterov, weight_decay=s.weight_decay)

    return build


def _sgd_hd(momentum: float = 0.0, nesterov: bool = False, rule: str = "additive"):
    def build(params, s: MethodSettings) -> Optimizer:
        keywords = {"hypergrad_rule": rule} | s.hypergrad_keywords()  # a rule in the settings wins
        return _hypergrad_class("SGDHD")(
            params, lr=s.lr, momentum=momentum, nesterov=nesterov, weight_decay=s.weight_decay, **keywords
        )

    return build


def _torch_base(class_name: str):
    def build(params, s: MethodSettings) -> Optimizer:
        return getattr(torch.optim, class_name)(params, lr=s.lr, weight_decay=s.weight_decay)

    return build


def _hd(class_name: str, rule: str = "additive"):
    def build(params, s: MethodSettings) -> Optimizer:
        keywords = {"hypergrad_rule": rule} | s.hypergrad_keywords()  # a rule in the settings wins
        return _hypergrad_class(class_name)(params, lr=s.lr, weight_decay=s.weight_decay, **keywords)

    return build


def _hdm(params, s: MethodSettings) -> Optimizer:
    return _hypergrad_class("HDM")(params)


def _mechanic(params, s: MethodSettings) -> Optimizer:
    return _import_peer("mechanic_pytorch").mechanize(torch.optim.AdamW)(params, lr=s.lr, weight_decay=s.weight_decay)


def _prodigy(params, s: MethodSettings) -> Optimizer:
    return _import_peer("prodigyopt").Prodigy(params, weight_decay=s.weight_decay)


def _dadapt_adam(params, s: MethodSettings) -> Optimizer:
    return _import_peer("dadaptation").DAdaptAdam(params, weight_decay=s.weight_decay)


def _schedulefree_adamw(params, s: MethodSettings) -> Optimizer:
    return _import_peer("schedulefree").AdamWScheduleFree(params, weight_decay=s.weight_decay)


class _TorchMuonWithAdamW(Optimizer):
    """torch's own ``Muon`` for the Muon groups and ``AdamW`` for the others, stepped as one
    optimizer (the ``muon`` baseline; AdamW at its defaults, Muon at the settings given)."""

    def __init__(self, groups: list[dict], lr: float, weight_decay: float) -> None:
        muon = [g["params"] for g in groups if g["use_muon"]]
        adamw = [g["params"] for g in groups if not g["use_muon"]]
        self.parts = ([torch.optim.Muon(muon[0], lr=lr, weight_decay=weight_decay)] if muon else []) + (
            [torch.optim.AdamW(adamw[0])] if adamw else [])
        super().__init__([g for part in self.parts for g in part.param_groups], {})
        self.state = self.parts[0].state if len(self.parts) == 1 else {}  # each part keeps its own

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def state_dict(self) -> dict:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state_dict: dict) -> None:
        for part, saved in zip(self.parts, state_dict["parts"], strict=True):
            part.load_state_dict(saved)


def _muon(params, s: MethodSettings) -> Optimizer:
    return _TorchMuonWithAdamW(params, lr=s.lr, weight_decay=s.weight_decay)


def _muon_hd(params, s: MethodSettings) -> Optimizer:
    return _hypergrad_class("MuonWithAdamWHD")(params, lr=s.lr, weight_decay=s.weight_decay,
                                               **({"hypergrad_rule": "scalefree"} | s.hypergrad_keywords()))


def _muon_split(model: torch.nn.Module) -> list[dict]:
    import hypergrad

    return hypergrad.muon_param_groups(model)


def _dog(params, s: MethodSettings) -> Optimizer:
    reps_rel = 1e-4 if s.model_has_batch_norm else 1e-6
    return _import_peer("dog").DoG(params, reps_rel=reps_rel, weight_decay=s.weight_decay)


def _d_times_lr(optimizer: Optimizer) -> float:
    """Prodigy and D-Adaptation step with ``d * lr``."""
    group = optimizer.param_groups[0]
    return float(group["d"]) * float(group["lr"])


def _dog_eta(optimizer: Optimizer) -> float:
    """DoG's step size; one value per group (a list with one entry per parameter)."""
    eta = optimizer.param_groups[0].get("eta")
    return float(eta[0]) if eta else float("nan")


def _methods() -> dict[str, Method]:
    entries = [
        Method("sgd", "SGD", _sgd(), "torch.SGD"),
        Method("sgd_hd", "SGD with HD", _sgd_hd(), "hypergrad.SGDHD", hypergradient="sgd"),
        Method("sgdm", "SGD, momentum 0.9", _sgd(MOMENTUM), "torch.SGD"),
        Method("sgdm_hd", "SGD, momentum 0.9, with HD", _sgd_hd(MOMENTUM), "hypergrad.SGDHD", hypergradient="sgd"),
        Method("sgdn", "SGD, Nesterov momentum 0.9", _sgd(MOMENTUM, nesterov=True), "torch.SGD"),
        Method("sgdn_hd", "SGD, Nesterov momentum 0.9, with HD", _sgd_hd(MOMENTUM, nesterov=True), "hypergrad.SGDHD",
               hypergradient="sgd"),
        Method("adagrad", "Adagrad", _torch_base("Adagrad"), "torch.Adagrad"),
        Method("adagrad_hd", "Adagrad with HD", _hd("AdagradHD"), "hypergrad.AdagradHD", hypergradient="adaptive"),
        Method("rmsprop", "RMSprop", _torch_base("RMSprop"), "torch.RMSprop"),
        Method("rmsprop_hd", "RMSprop with HD", _hd("RMSpropHD"), "hypergrad.RMSpropHD", hypergradient="adaptive"),
        Method("adam", "Adam", _torch_base("Adam"), "torch.Adam"),
        Method("adam_hd", "Adam with HD", _hd("AdamHD"), "hypergrad.AdamHD", hypergradient="adaptive"),
        Method("sgdn_hd_sf", "SGD, Nesterov momentum 0.9, with scale-free HD",
               _sgd_hd(MOMENTUM, nesterov=True, rule="scalefree"), "hypergrad.SGDHD",
               hypergradient="scalefree"),
        Method("sgd_hd_sf", "SGD with scale-free HD", _sgd_hd(rule="scalefree"), "hypergrad.SGDHD",
               hypergradient="scalefree"),
        Method("adam_hd_sf", "Adam with scale-free HD", _hd("AdamHD", "scalefree"), "hypergrad.AdamHD",
               hypergradient="scalefree"),
        Method("adamw_hd_sf", "AdamW with scale-free HD", _hd("AdamWHD", "scalefree"), "hypergrad.AdamWHD",
               hypergradient="scalefree"),
        Method("adagrad_hd_sf", "Adagrad with scale-free HD", _hd("AdagradHD", "scalefree"), "hypergrad.AdagradHD",
               hypergradient="scalefree"),
        Method("rmsprop_hd_sf", "RMSprop with scale-free HD", _hd("RMSpropHD", "scalefree"), "hypergrad.RMSpropHD",
               hypergradient="scalefree"),
        Method("sgd_hd_bracket", "SGD with HD, the bracketing rule", _sgd_hd(rule="bracket"), "hypergrad.SGDHD",
               hypergradient="bracket"),
        Method("sgdn_hd_bracket", "SGD, Nesterov momentum 0.9, with HD, the bracketing rule",
               _sgd_hd(MOMENTUM, nesterov=True, rule="bracket"), "hypergrad.SGDHD", hypergradient="bracket"),
        Method("adam_hd_bracket", "Adam with HD, the bracketing rule", _hd("AdamHD", "bracket"), "hypergrad.AdamHD",
               hypergradient="bracket"),
        Method("adamw", "AdamW", _torch_base("AdamW"), "torch.AdamW"),
        Method("adamw_hd", "AdamW with HD", _hd("AdamWHD"), "hypergrad.AdamWHD", hypergradient="adaptive"),
        Method("adam_hd_mult", "Adam with HD, multiplicative rule", _hd("AdamHD", "multiplicative"),
               "hypergrad.AdamHD", hypergradient="multiplicative"),
        Method("hdm", "HDM (hypergrad defaults)", _hdm, "hypergrad.HDM", uses_alpha0=False,
               effective_lr=lambda optimizer: float("nan")),
        Method("prodigy", "Prodigy (prodigyopt defaults)", _prodigy, "prodigyopt", uses_alpha0=False,
               effective_lr=_d_times_lr),
        Method("dadapt_adam", "D-Adaptation Adam (dadaptation defaults)", _dadapt_adam, "dadaptation",
               uses_alpha0=False, effective_lr=_d_times_lr),
        Method("schedulefree_adamw", "Schedule-Free AdamW (schedulefree defaults)", _schedulefree_adamw,
               "schedulefree", uses_alpha0=False, has_train_eval_modes=True),
        Method("schedulefree_adamw_hd", "Schedule-Free AdamW with scale-free HD", _hd("ScheduleFreeAdamWHD", "scalefree"),
               "hypergrad.ScheduleFreeAdamWHD", hypergradient="scalefree", has_train_eval_modes=True),
        Method("schedulefree_sgd_hd", "Schedule-Free SGD with scale-free HD", _hd("ScheduleFreeSGDHD", "scalefree"),
               "hypergrad.ScheduleFreeSGDHD", hypergradient="scalefree", has_train_eval_modes=True),
        Method("muon", "Muon on the hidden matrices + AdamW on the rest (torch's, defaults)", _muon, "torch.Muon",
               parameters=_muon_split),
        Method("muon_hd", "Muon + AdamW with scale-free HD (MuonWithAdamWHD)", _muon_hd,
               "hypergrad.MuonWithAdamWHD", hypergradient="scalefree", parameters=_muon_split),
        Method("dog", "DoG (dog-optimizer defaults)", _dog, "dog", uses_alpha0=False, effective_lr=_dog_eta),
        Method("mechanic", "Mechanic on AdamW (mechanic-pytorch defaults)", _mechanic, "mechanic_pytorch"),
    ]
    return {method.name: method for method in entries}


METHODS: dict[str, Method] = _methods()


def resolve_hypergrad_lr(method: str, task: str, hypergrad_lr: float | None = None) -> float | None:
    """The beta a run of ``method`` on ``task`` uses: ``hypergrad_lr`` when given, else the
    reference code's default; None for methods without HD (whatever was given)."""
    if METHODS[method].hypergradient is None:
        return None
    return default_hypergrad_lr(method, task) if hypergrad_lr is None else hypergrad_lr


def default_hypergrad_lr(method: str, task: str) -> float | None:
    """The reference code's beta: 1e-3 for SGD-type HD; for Adam-type (and the other adaptive
    bases, whose directions have Adam's per-coordinate scale) 1e-7 on logreg/mlp, 1e-8 on
    cnn/vgg; the library's dimensionless default for the scale-free rule. None for methods
    without HD."""
    kind = METHODS[method].hypergradient
    if kind is None:
        return None
    if kind == "multiplicative":
        return MULTIPLICATIVE_HYPERGRAD_LR
    if kind in RULES and RULES[kind].default_beta is not None:
        return RULES[kind].default_beta
    if kind == "sgd":
        return SGD_HYPERGRAD_LR
    if task not in WORKLOADS or WORKLOADS[task].paper_hypergrad_lr is None:
        raise ValueError(f"task must be a paper task for the paper's beta of {method!r}, got {task!r}")
    return WORKLOADS[task].paper_hypergrad_lr


def untuned_settings(method: str, model_has_batch_norm: bool) -> MethodSettings:
    """What a user who tunes nothing gets: the constructor's own ``lr``, ``weight_decay`` and
    ``hypergrad_lr`` (``MULTIPLICATIVE_HYPERGRAD_LR`` for the multiplicative rule, which has none
    of its own); Mechanic wraps ``torch.optim.AdamW`` at AdamW's; the peers keep their packages'
    defaults (weight decay 0) whatever they are given."""
    entry = METHODS[method]
    module, _, class_name = entry.requires.partition(".")
    if module == "hypergrad":
        constructor = _hypergrad_class(class_name)
    elif module == "torch" or module == "mechanic_pytorch":
        constructor = getattr(torch.optim, class_name or "AdamW")
    else:
        return MethodSettings(1.0, None, 0.0, model_has_batch_norm)
    parameters = inspect.signature(constructor).parameters
    beta = None
    if entry.hypergradient == "multiplicative":
        beta = MULTIPLICATIVE_HYPERGRAD_LR
    elif entry.hypergradient in RULES and RULES[entry.hypergradient].default_beta is not None:
        beta = RULES[entry.hypergradient].default_beta
    elif entry.hypergradient is not None:
        beta = constructor.paper_hypergrad_lr
    return MethodSettings(float(parameters["lr"].default) if "lr" in parameters else 1.0, beta,
                          float(parameters["weight_decay"].default) if "weight_decay" in parameters else 0.0,
                          model_has_batch_norm)


def resolve_settings(method: str, configuration: str, task: str, model_has_batch_norm: bool, *,
                     lr: float | None = None, hypergrad_lr: float | None = None,
                     weight_decay: float | None = None) -> MethodSettings:
    """The settings a run of ``method`` gets under ``configuration`` (a key of :data:`CONFIGURATIONS`):
    its defaults, each value given here replacing its default; methods without HD get no beta.

    ``paper``: ``lr`` alpha_0 (default 1e-3), weight decay 1e-4, beta :func:`default_hypergrad_lr` of
    the paper's ``task``. ``untuned``: :func:`untuned_settings` (``task`` is not used).
    """
    if configuration == "paper":
        beta = resolve_hypergrad_lr(method, task, hypergrad_lr)
        return MethodSettings(PAPER_LR if lr is None else lr, beta,
                              PAPER_WEIGHT_DECAY if weight_decay is None else weight_decay, model_has_batch_norm)
    if configuration != "untuned":
        raise ValueError(f"configuration must be one of {list(CONFIGURATIONS)}, got {configuration!r}")
    settings = untuned_settings(method, model_has_batch_norm)
    given = {"lr": lr, "weight_decay": weight_decay}
    if METHODS[method].hypergradient is not None:
        given["hypergrad_lr"] = hypergrad_lr
    return dataclasses.replace(settings, **{name: value for name, value in given.items() if value is not None})


def resolve_methods(names: Sequence[str]) -> list[Method]:
    """Look up ``names`` and check that each one can be built here, before anything trains.

    Raises:
        ValueError: an unknown or repeated name (listing the known ones).
        MethodUnavailableError: a method whose package or hypergrad class is missing.
    """
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; methods are: {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"methods must not repeat, got {list(names)}")
    if not names:
        raise ValueError("methods must name at least one method")
    for name in names:
        method = METHODS[name]
        module, _, class_name = method.requires.partition(".")
        if module == "hypergrad":
            _hypergrad_class(class_name)
        elif module == "torch":
            getattr(torch.optim, class_name)
        elif module != "torch":
            _import_peer(module)
    return [METHODS[name] for name in names]


def build_optimizer(method: str, params: Iterable[torch.nn.Parameter], settings: MethodSettings) -> Optimizer:
    """Construct ``method``'s optimizer over ``params``."""
    return METHODS[method].build(params, settings)
