"""2-D test functions and the optimizer paths on them (the surfaces study draws them).

Top to bottom: the four surfaces (function, plotting window, start, minimum, base learning rates),
the methods (the torch.optim bases of :data:`experiments.core.methods.METHODS` and their HD variants,
one HD setting for all), the loop that records one path, the rule behind the base learning rates,
and the Rosenbrock "learning rate 100x too small" table (issue 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from experiments.core.methods import METHODS, MethodSettings
from experiments.core.training import step

__all__ = ["BASE_METHODS", "SURFACES", "THRESHOLD", "HypergradSettings", "OptimizerPath", "Surface", "best_base_lr",
           "make_optimizer", "methods_available", "rosenbrock_bad_lr_table", "run_all", "run_path",
           "steps_to_stay_below"]

# ---------------------------------------------------------------------------------------------
# Test surfaces. Each is a torch function of a 2-vector p = (x, y) with minimum value 0.


def beale(p: torch.Tensor) -> torch.Tensor:
    """Beale's function; minimum 0 at (3, 0.5), flat plateaus and steep walls around it."""
    x, y = p[0], p[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def rosenbrock(p: torch.Tensor) -> torch.Tensor:
    """Rosenbrock's banana: minimum 0 at (1, 1) at the end of a curved, flat-bottomed valley."""
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def double_well_saddle(p: torch.Tensor) -> torch.Tensor:
    """x^2 + (y^2 - 1)^2: a strict saddle at (0, 0) (f = 1, Hessian diag(2, -4)) between the
    minima 0 at (0, -1) and (0, 1). Unlike x^2 - y^2 it is bounded below, so "distance to the
    minimum" and "iterations to f < threshold" mean something."""
    x, y = p[0], p[1]
    return x**2 + (y**2 - 1) ** 2


VALLEY_ANGLE = math.pi / 6  # direction of the valley floor, 30 degrees above the x axis
VALLEY_CURVATURES = (0.1, 10.0)  # along the floor, across it: condition number 100


def narrow_valley(p: torch.Tensor) -> torch.Tensor:
    """Rotated quadratic 0.5 * (0.1 u^2 + 10 v^2), u along the floor at 30 degrees, v across it:
    a straight, long, narrow valley with condition number 100 and minimum 0 at (0, 0)."""
    along, across = VALLEY_CURVATURES
    c, s = math.cos(VALLEY_ANGLE), math.sin(VALLEY_ANGLE)
    u = c * p[0] + s * p[1]
    v = -s * p[0] + c * p[1]
    return 0.5 * (along * u**2 + across * v**2)


@dataclass(frozen=True)
class Surface:
    """A 2-D test function with everything needed to run and draw optimizers on it."""

    key: str
    title: str
    formula: str
    func: Callable[[torch.Tensor], torch.Tensor]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]  # every global minimiser; f is 0 at each
    steps: int
    # Base learning rate per base rule: from the grid {1, 3} x 10^k, 1e-4 <= lr <= 1, the value
    # after which the base stays below THRESHOLD soonest within `steps` (lowest final f if no
    # value gets there). Check with `best_base_lr` (tests/test_experiments_toy.py does for the valley).
    base_lr: Mapping[str, float] = field(default_factory=dict)


THRESHOLD = 1e-3  # "converged": f < THRESHOLD (every surface has minimum value 0)

SURFACES: dict[str, Surface] = {
    s.key: s
    for s in (
        Surface("beale", "Beale", "(1.5-x+xy)² + (2.25-x+xy²)² + (2.625-x+xy³)²", beale,
                xlim=(-0.5, 4.5), ylim=(-1.5, 2.0), start=(1.0, 1.5), minima=((3.0, 0.5),), steps=1000,
                base_lr={"sgd": 3e-2, "sgdm": 3e-3, "sgdn": 3e-3, "adagrad": 1.0, "rmsprop": 1e-2, "adam": 3e-1}),
        Surface("rosenbrock", "Rosenbrock", "(1-x)² + 100 (y-x²)²", rosenbrock,
                xlim=(-1.6, 1.6), ylim=(-0.6, 1.6), start=(-1.2, 1.0), minima=((1.0, 1.0),), steps=3000,
                base_lr={"sgd": 1e-3, "sgdm": 3e-3, "sgdn": 1e-3, "adagrad": 1.0, "rmsprop": 3e-3, "adam": 3e-2}),
        Surface("saddle", "Saddle", "x² + (y²-1)², saddle at (0, 0)", double_well_saddle,
                xlim=(-2.5, 2.5), ylim=(-1.6, 1.6), start=(2.0, 1e-3), minima=((0.0, -1.0), (0.0, 1.0)), steps=300,
                base_lr={"sgd": 1e-1, "sgdm": 1e-1, "sgdn": 1e-1, "adagrad": 1.0, "rmsprop": 1e-1, "adam": 3e-1}),
        Surface("valley", "Narrow valley", "quadratic, curvatures 0.1 along the 30° floor and 10 across", narrow_valley,
                xlim=(-3.0, 3.0), ylim=(-2.0, 2.0), start=(-2.5, -1.0), minima=((0.0, 0.0),), steps=300,
                base_lr={"sgd": 1e-1, "sgdm": 1e-1, "sgdn": 1e-1, "adagrad": 1.0, "rmsprop": 3e-1, "adam": 3e-1}),
    )
}

# ---------------------------------------------------------------------------------------------
# Methods: six torch.optim base rules and the HD variant of each, from methods.METHODS.

BASE_METHODS = ("sgd", "sgdm", "sgdn", "adagrad", "rmsprop", "adam")
"""torch.optim base rules of ``methods.METHODS`` drawn on the surfaces, each with its ``<base>_hd``."""

@dataclass(frozen=True)
class HypergradSettings:
    """The HD keywords every HD variant here gets: one setting for every method and surface, so
    that no HD run is tuned per case. The multiplicative rule is scale-free; the additive rule's
    hypergrad_lr would have to change by orders of magnitude between these surfaces (Rosenbrock's
    gradients are ~100x Beale's near the start)."""

    rule: str = "multiplicative"
    hypergrad_lr: float = 0.003

    def describe(self) -> str:
        return f"{self.rule} HD rule, β = {self.hypergrad_lr:g}"


def methods_available() -> list[str]:
    """Every base in BASE_METHODS, each followed by its "<base>_hd"."""
    return [method for base in BASE_METHODS for method in (base, base + "_hd")]


def make_optimizer(
    method: str, params: Sequence[torch.nn.Parameter], lr: float, hd: HypergradSettings
) -> torch.optim.Optimizer:
    """The optimizer of ``methods.METHODS[method]`` ("<base>" or "<base>_hd") with initial learning
    rate ``lr`` and no weight decay; ``hd`` applies to HD variants only."""
    if method not in methods_available():
        raise ValueError(f"method must be one of {methods_available()}, got {method!r}")
    return METHODS[method].build(params, MethodSettings(lr, hd.hypergrad_lr, 0.0, False, hd.rule))


# ---------------------------------------------------------------------------------------------
# One optimizer path.

DIVERGED_NORM = 1e6  # a point this far from the origin has left every window for good


@dataclass
class OptimizerPath:
    """Iterates of one method on one surface: ``points[t]`` and ``f[t]`` after t steps
    (t = 0 is the start), ``lr[t-1]`` the learning rate step t used."""

    surface: str
    method: str
    lr0: float
    points: np.ndarray
    f: np.ndarray
    lr: np.ndarray
    diverged: bool

    @property
    def steps(self) -> int:
        return len(self.points) - 1

    def steps_to(self, threshold: float = THRESHOLD) -> int | None:
        """First t with f[t] < threshold, or None if the path never gets there."""
        below = np.flatnonzero(self.f < threshold)
        return int(below[0]) if below.size else None

    def steps_text(self) -> str:
        """Steps to f < THRESHOLD for titles and tables (``'diverged at 12'``, ``'not in 300'``)."""
        if self.diverged:
            return f"diverged at {self.steps}"
        reached = self.steps_to()
        return str(reached) if reached is not None else f"not in {self.steps}"

    def to_json(self) -> dict:
        return {"surface": self.surface, "method": self.method, "lr0": self.lr0, "points": self.points.tolist(),
                "f": self.f.tolist(), "lr": self.lr.tolist(), "diverged": self.diverged}

    @classmethod
    def from_json(cls, stored: dict) -> OptimizerPath:
        """Back from :meth:`to_json` (non-finite values were stored as null: NaN here)."""
        arrays = {key: np.array(stored[key], dtype=float) for key in ("points", "f", "lr")}
        if arrays["points"].ndim == 1:
            arrays["points"] = arrays["points"].reshape(-1, 2)
        return cls(surface=stored["surface"], method=stored["method"], lr0=stored["lr0"],
                   diverged=stored["diverged"], **arrays)


class _PathEnd(Exception):
    """Raised inside the step's closure when a path stops (before the optimizer moves)."""


def run_path(
    surface: Surface,
    method: str,
    lr: float,
    steps: int,
    hd: HypergradSettings = HypergradSettings(),
    stop_below: float | None = None,
) -> OptimizerPath:
    """Run ``method`` from ``surface.start`` for up to ``steps`` steps in float64, recording every
    iterate, its f value and the learning rate of every step.

    Stops early once f < ``stop_below`` (if given), or when f stops being finite or the point
    leaves every window (then ``diverged`` is set).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    point = torch.nn.Parameter(torch.tensor(surface.start, dtype=torch.float64))
    optimizer = make_optimizer(method, [point], lr, hd)
    points: list[np.ndarray] = []
    values: list[float] = []
    lrs: list[float] = []
    diverged = False

    def record(loss: torch.Tensor) -> None:
        """f at the point the closure evaluated; stops the path before the optimizer moves."""
        nonlocal diverged
        points.append(point.detach().numpy().copy())
        values.append(float(loss.detach()))
        if not math.isfinite(values[-1]) or float(point.detach().norm()) > DIVERGED_NORM:
            diverged = True
            raise _PathEnd
        if len(lrs) == steps or (stop_below is not None and values[-1] < stop_below):
            raise _PathEnd

    try:
        while True:
            step(optimizer, lambda: surface.func(point), after_backward=record)
            lrs.append(float(optimizer.param_groups[0]["lr"]))
    except _PathEnd:
        pass
    return OptimizerPath(
        surface=surface.key,
        method=method,
        lr0=lr,
        points=np.array(points),
        f=np.array(values),
        lr=np.array(lrs),
        diverged=diverged,
    )


def run_all(
    surfaces: Sequence[Surface], hd: HypergradSettings = HypergradSettings()
) -> dict[str, dict[str, OptimizerPath]]:
    """Every available method on every surface from its base learning rate:
    ``paths[surface key][method]``."""
    return {
        surface.key: {
            method: run_path(surface, method, surface.base_lr[method.removesuffix("_hd")], surface.steps, hd)
            for method in methods_available()
        }
        for surface in surfaces
    }


# ---------------------------------------------------------------------------------------------
# The base learning rates, and a learning rate 100x too small.

LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def steps_to_stay_below(path: OptimizerPath, threshold: float = THRESHOLD) -> int | None:
    """First t from which f stays below ``threshold`` to the end of the path (None: never)."""
    if path.diverged or path.f[-1] >= threshold:
        return None
    above = np.flatnonzero(path.f >= threshold)
    return int(above[-1]) + 1 if above.size else 0


def best_base_lr(surface: Surface, base: str, grid: Sequence[float] = LR_GRID) -> float:
    """The rule behind ``Surface.base_lr``: over ``grid``, the lr after which ``base`` stays below
    THRESHOLD soonest within ``surface.steps``; if none gets there, the lowest final f; runs that
    diverge are out."""
    scored = []
    for lr in grid:
        path = run_path(surface, base, lr, surface.steps)
        if path.diverged:
            continue
        stays = steps_to_stay_below(path)
        scored.append((stays is None, stays if stays is not None else 0, float(path.f[-1]), lr))
    if not scored:
        raise RuntimeError(f"{base} diverges on {surface.key} at every learning rate of {list(grid)}")
    return min(scored)[3]


def rosenbrock_bad_lr_table(
    lr_factor: float = 0.01,
    max_steps: int = 20_000,
    threshold: float = THRESHOLD,
    hd: HypergradSettings = HypergradSettings(),
) -> list[dict[str, object]]:
    """Issue 4's table: on Rosenbrock from its fixed start, each base and its HD variant at
    ``lr_factor`` times the base's sensible lr; iterations to f < ``threshold`` (None: not
    reached in ``max_steps``), final f and, for HD, the learning rate it ended with."""
    if not 0 < lr_factor:
        raise ValueError(f"lr_factor must be > 0, got {lr_factor}")
    surface = SURFACES["rosenbrock"]
    rows = []
    for base in BASE_METHODS:
        lr = surface.base_lr[base] * lr_factor
        row: dict[str, object] = {"base": base, "sensible_lr": surface.base_lr[base], "lr0": lr}
        for method in (base, base + "_hd"):
            path = run_path(surface, method, lr, max_steps, hd, stop_below=threshold)
            key = "hd" if method != base else "base"
            row[f"{key}_steps"] = path.steps_to(threshold)
            row[f"{key}_final_f"] = float(path.f[-1])
            row[f"{key}_diverged"] = path.diverged
            row[f"{key}_steps_run"] = path.steps
            if method != base:
                row["hd_final_lr"] = float(path.lr[-1])
        rows.append(row)
    return rows
