"""Full-batch logistic regression: gradient evaluations to |grad|_inf <= 1e-4, HDM against L-BFGS.

Every method minimises the mean logistic loss ``f(w) = mean(log(1 + exp(-y_i x_i . w)))`` (labels
``y = +-1``, features standardised, an intercept column of ones, no regularisation, ``w_0 = 0``,
float64) and is charged one evaluation per gradient it computes; L-BFGS is charged every closure
call of its line search. A run stops at the first evaluated point whose gradient has
``|grad|_inf <= TOLERANCE`` or after ``BUDGET`` evaluations.

Without regularisation a linearly separable data set has no finite minimiser, so the problems
are two-class sets that an LP feasibility test (``y_i (x_i . w + b) >= 1``, scipy's HiGHS) finds
not separable: breast cancer on its ten "mean" features (all thirty separate the classes), iris
versicolor against virginica, digits even against odd, wine class 1 against class 2 on its first
six features (all thirteen separate them), MNIST 3 against 5 (all 11,552 training images;
constant pixels dropped).

Methods: HDM at its defaults (``lipschitz=None``: no knowledge of the data), ``torch.optim.LBFGS``
(history 10, strong Wolfe), gradient descent at ``1/L``, Nesterov's accelerated gradient with
``L`` (``L = lambda_max(X^T X) / (4 n)``, the logistic loss's smoothness constant), Adam at the
best learning rate of a grid, SGD-HD and SGDN-HD (``momentum=0.9, nesterov=True``) at their
defaults. The study (:func:`run`, ``fullbatch.png``; ``python -m experiments reproduce --only
fullbatch``) computes each problem's results once through the run cache
(``runs/fullbatch-PROBLEM-HASH``) and draws the figure and the table from it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib
import torch

import hypergrad

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from experiments.core.plotting import save_figure  # noqa: E402
from experiments.core.runs import StudyOutput, SuiteContext  # noqa: E402
from experiments.core.training import step  # noqa: E402
from experiments.core.workloads import WORKLOADS, suite  # noqa: E402
from experiments.paper.common import markdown_table  # noqa: E402

TOLERANCE = 1e-4
BUDGET = 1000
ADAM_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0, 30.0)


@dataclass(frozen=True)
class Problem:
    """Standardised features with an intercept column, labels in {0, 1} (float64)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor

    @property
    def lipschitz(self) -> float:
        """``lambda_max(X^T X) / (4 n)``: the smoothness constant of the mean logistic loss."""
        return float(torch.linalg.eigvalsh(self.x.T @ self.x / len(self.x))[-1]) / 4.0

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(self.x @ w, self.y)


PROBLEMS = suite("fullbatch")
"""The study's problems: the ``fullbatch`` suite of :data:`experiments.core.workloads.WORKLOADS`."""


def load_problems(names: Sequence[str] | None = None) -> list[Problem]:
    """The problems' data (:func:`experiments.core.tables.load_logistic_problem`), by name."""
    chosen = list(PROBLEMS) if names is None else list(names)
    unknown = sorted(name for name in chosen if name not in WORKLOADS or WORKLOADS[name].suite != "fullbatch")
    if unknown:
        raise ValueError(f"names must be among {list(PROBLEMS)}, got unknown {unknown}")
    problems = []
    for name in chosen:
        data = WORKLOADS[name].load(None)
        problems.append(Problem(name, data.train_x, data.train_y))
    return problems


class Finished(Exception):
    """Raised by the counter when the tolerance or the budget is reached."""


class Counter:
    """Records |grad|_inf after every gradient evaluation (:meth:`record`, called inside every
    closure call) and raises :class:`Finished` at the tolerance or the budget."""

    def __init__(self, problem: Problem, w: torch.Tensor, tolerance: float = TOLERANCE, budget: int = BUDGET) -> None:
        self.problem, self.w, self.tolerance, self.budget = problem, w, tolerance, budget
        self.grad_norms: list[float] = []

    def record(self, loss: torch.Tensor) -> None:
        norm = float(self.w.grad.abs().max())
        self.grad_norms.append(norm)
        if norm <= self.tolerance or len(self.grad_norms) >= self.budget or not math.isfinite(norm):
            raise Finished

    @property
    def evaluations(self) -> int | None:
        """Evaluations until the tolerance was met; None if it never was."""
        for count, norm in enumerate(self.grad_norms, start=1):
            if norm <= self.tolerance:
                return count
        return None


class NesterovAGD(torch.optim.Optimizer):
    """Nesterov's accelerated gradient for smooth convex f with step 1/L: the gradient is taken at
    ``y_k = x_k + (k-1)/(k+2) (x_k - x_{k-1})`` and ``x_{k+1} = y_k - grad f(y_k) / L``."""

    def __init__(self, params, lipschitz: float) -> None:
        super().__init__(params, {"lipschitz": lipschitz})

    @torch.no_grad()
    def step(self, closure):  # type: ignore[override]
        current = {}
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                x = p.detach().clone()
                k = state.get("k", 1)
                p.add_((k - 1) / (k + 2) * (x - state.get("x_prev", x)))
                current[p] = x, k
        loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                p.sub_(p.grad / group["lipschitz"])
                self.state[p]["x_prev"], self.state[p]["k"] = current[p][0], current[p][1] + 1
        return loss


def run_method(problem: Problem, method: str, lr: float | None = None,
               tolerance: float = TOLERANCE, budget: int = BUDGET) -> Counter:
    """One run from w = 0; the returned counter holds |grad|_inf at every evaluation. Every method
    steps through :func:`experiments.core.training.step`'s closure until the counter finishes."""
    w = torch.zeros(problem.x.shape[1], dtype=torch.float64, requires_grad=True)
    counter = Counter(problem, w, tolerance, budget)
    optimizers: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "hdm": lambda: hypergrad.HDM([w]),
        "lbfgs": lambda: torch.optim.LBFGS([w], lr=1, max_iter=budget, history_size=10,
                                           tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe"),
        "gd": lambda: torch.optim.SGD([w], lr=1.0 / problem.lipschitz),
        "nesterov": lambda: NesterovAGD([w], problem.lipschitz),
        "adam": lambda: torch.optim.Adam([w], lr=lr),
        "sgd_hd": lambda: hypergrad.SGDHD([w]),
        "sgdn_hd": lambda: hypergrad.SGDHD([w], momentum=0.9, nesterov=True),
    }
    if method not in optimizers:
        raise ValueError(f"method must be one of {sorted(optimizers)}, got {method!r}")
    optimizer = optimizers[method]()
    try:
        while True:
            step(optimizer, lambda: problem.loss(w), after_backward=counter.record)
    except Finished:
        return counter


METHODS = ("hdm", "lbfgs", "gd", "nesterov", "adam", "sgd_hd", "sgdn_hd")
LABELS = {"hdm": "HDM", "lbfgs": "L-BFGS", "gd": "GD 1/L", "nesterov": "Nesterov",
          "adam": "Adam (best grid lr)", "sgd_hd": "SGD-HD", "sgdn_hd": "SGDN-HD"}


def run_problem(problem: Problem, tolerance: float = TOLERANCE, budget: int = BUDGET) -> dict[str, dict]:
    """Every method on one problem, as JSON-able records ``{"grad_norms", "evaluations", "lr"}``;
    Adam keeps the grid lr that needs the fewest evaluations (``lr`` records it)."""
    runs = {method: (run_method(problem, method, tolerance=tolerance, budget=budget), None)
            for method in METHODS if method != "adam"}
    adam_runs = [(run_method(problem, "adam", lr, tolerance, budget), lr) for lr in ADAM_LRS]
    runs["adam"] = min(adam_runs, key=lambda run: (run[0].evaluations or budget + 1, run[0].grad_norms[-1]))
    return {method: {"grad_norms": runs[method][0].grad_norms, "evaluations": runs[method][0].evaluations,
                     "lr": runs[method][1]} for method in METHODS}


def table_rows(results: dict[str, dict[str, dict]], budget: int = BUDGET) -> list[list[str]]:
    """One row per problem: evaluations per method (">budget" when not reached; Adam's grid lr)."""
    rows = []
    for name, runs in results.items():
        cells = [str(run["evaluations"]) if run["evaluations"] is not None else f">{budget}" for run in runs.values()]
        if runs.get("adam", {}).get("lr") is not None:
            cells[list(runs).index("adam")] += f" (lr {runs['adam']['lr']:g})"
        rows.append([name, *cells])
    return rows


def draw_figure(results: dict[str, dict[str, dict]], tolerance: float = TOLERANCE) -> Figure:
    """|grad|_inf against evaluations, one panel per problem."""
    figure = Figure(figsize=(4.0 * len(results), 3.4), layout="constrained")
    axes = figure.subplots(1, len(results), squeeze=False)[0]
    for ax, (name, runs) in zip(axes, results.items()):
        for method, run in runs.items():
            norms = run["grad_norms"]
            ax.semilogy(range(1, len(norms) + 1), norms, label=LABELS[method],
                        linewidth=2.0 if method in ("hdm", "lbfgs") else 1.0)
        ax.axhline(tolerance, color="black", linewidth=0.6, linestyle=":")
        ax.set_title(name)
        ax.set_xlabel("gradient evaluations")
    axes[0].set_ylabel("|grad|_inf")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    return figure


# ----------------------------------------------------------------------------- the study


def run(context: SuiteContext, problems: list[str] | None = None) -> StudyOutput:
    results = {}
    for name in problems or list(PROBLEMS):
        identity = {"problem": name, "methods": list(METHODS), "adam_lrs": list(ADAM_LRS),
                    "tolerance": TOLERANCE, "budget": BUDGET,
                    "hdm_defaults": _defaults(hypergrad.HDM)}
        context.progress(f"[fullbatch] {name}")
        results[name] = context.cache.cached_json(
            f"fullbatch-{name}", identity, lambda name=name: run_problem(load_problems([name])[0]))
    figure = draw_figure(results)
    files = list(save_figure(figure, context.out_dir / "fullbatch", dpi=110))
    headers = ["problem", *(LABELS[method] for method in METHODS)]
    summary = (
        "## Full-batch logistic regression: HDM against L-BFGS (fullbatch.png)\n\n"
        f"Gradient evaluations until |grad|_inf <= {TOLERANCE:g} (at most {BUDGET}; "
        "L-BFGS is charged every closure call of its line search); unregularised logistic regression, "
        "standardised features with an intercept, w_0 = 0, float64. HDM, SGD-HD and SGDN-HD at their defaults; "
        "gradient descent and Nesterov with the data's L; Adam at the best learning rate of a grid.\n\n"
        + markdown_table(headers, table_rows(results))
    )
    return StudyOutput(files, summary)


def _defaults(cls) -> dict:
    """A constructor's keyword defaults: they enter the cache key, so changing them reruns the study."""
    return {name: parameter.default for name, parameter in inspect.signature(cls).parameters.items()
            if parameter.default is not inspect.Parameter.empty}
