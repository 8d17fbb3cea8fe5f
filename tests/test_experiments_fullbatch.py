"""The full-batch benchmark's pieces on small synthetic data (no data set is loaded)."""

from __future__ import annotations

import stat

import numpy as np
import pytest
import torch

from experiments.core.datasets import DatasetSource
from experiments.core.tables import logistic_problem
from experiments.core.workloads import WORKLOADS, Workload
from experiments.paper import hdm_fullbatch as fullbatch

SOURCE = DatasetSource("synthetic", (), "")


def synthetic_problem(n: int = 40, d: int = 3, seed: int = 0) -> fullbatch.Problem:
    """Overlapping classes (labels drawn from a logistic model): a finite minimiser."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d)) * np.array([1.0, 5.0, 0.2])[:d]
    labels = rng.random(n) < 1.0 / (1.0 + np.exp(-0.3 * features @ np.ones(d)))
    features = np.hstack([features, np.full((n, 1), 7.0)])  # a constant column, dropped
    data = logistic_problem(features, labels, SOURCE)
    return fullbatch.Problem("synthetic", data.train_x, data.train_y)


def test_logistic_problem_standardises_and_appends_an_intercept():
    problem = synthetic_problem()
    assert problem.x.shape == (40, 4) and problem.x.dtype == torch.float64
    torch.testing.assert_close(problem.x[:, :3].mean(0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(problem.x[:, :3].std(0, unbiased=False), torch.ones(3, dtype=torch.float64))
    assert torch.equal(problem.x[:, 3], torch.ones(40, dtype=torch.float64))


def evaluate(counter) -> None:
    """One gradient evaluation as the training step's closure makes it, recorded by the counter."""
    counter.w.grad = None
    loss = counter.problem.loss(counter.w)
    loss.backward()
    counter.record(loss)


def test_loss_gradient_and_lipschitz_match_plain_formulas():
    problem = synthetic_problem()
    x, y = problem.x.numpy(), problem.y.numpy()
    w = np.array([0.3, -0.2, 0.1, 0.05])
    grad = x.T @ (1.0 / (1.0 + np.exp(-x @ w)) - y) / len(x)
    counter = fullbatch.Counter(problem, torch.tensor(w, requires_grad=True))
    evaluate(counter)
    np.testing.assert_allclose(counter.w.grad.numpy(), grad, rtol=1e-12)
    assert counter.grad_norms == [pytest.approx(np.abs(grad).max(), rel=1e-12)]
    assert problem.lipschitz == pytest.approx(np.linalg.eigvalsh(x.T @ x / len(x))[-1] / 4, rel=1e-12)


def test_counter_stops_at_the_budget_and_reports_the_first_evaluation_below_tolerance():
    problem = synthetic_problem()
    counter = fullbatch.Counter(problem, torch.zeros(4, dtype=torch.float64, requires_grad=True), budget=3)
    evaluate(counter)
    evaluate(counter)
    with pytest.raises(fullbatch.Finished):
        evaluate(counter)
    assert counter.evaluations is None
    counter.grad_norms = [1.0, 1e-5, 1e-3]
    assert counter.evaluations == 2


@pytest.mark.parametrize("method", ["hdm", "lbfgs", "gd", "nesterov", "adam"])
def test_methods_reach_the_tolerance_on_a_small_problem(method):
    problem = synthetic_problem()
    counter = fullbatch.run_method(problem, method, lr=0.1, budget=500)
    assert counter.evaluations is not None, counter.grad_norms[-5:]
    assert counter.evaluations == len(counter.grad_norms)
    assert counter.grad_norms[-1] <= fullbatch.TOLERANCE


@pytest.mark.parametrize("method", ["sgd_hd", "sgdn_hd"])
def test_sgd_hd_at_its_defaults_runs_to_the_budget_and_makes_progress(method):
    counter = fullbatch.run_method(synthetic_problem(), method, budget=50)
    assert len(counter.grad_norms) == 50 and counter.grad_norms[-1] < counter.grad_norms[0]


def test_lbfgs_is_charged_every_closure_call():
    problem = synthetic_problem()
    counter = fullbatch.run_method(problem, "lbfgs")
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1, max_iter=1000, history_size=10, tolerance_grad=0.0,
                                  tolerance_change=0.0, line_search_fn="strong_wolfe")
    calls = []

    def closure():
        optimizer.zero_grad()
        loss = problem.loss(w)
        loss.backward()
        calls.append(float(w.grad.abs().max()))
        return loss

    while not calls or min(calls) > fullbatch.TOLERANCE:
        optimizer.step(closure)
    first = next(i for i, norm in enumerate(calls, start=1) if norm <= fullbatch.TOLERANCE)
    assert counter.evaluations == first


def test_table_and_figure():
    problem = synthetic_problem()
    results = {"synthetic": fullbatch.run_problem(problem, budget=30)}
    assert list(results["synthetic"]) == list(fullbatch.METHODS)
    assert results["synthetic"]["adam"]["lr"] in fullbatch.ADAM_LRS
    (row,) = fullbatch.table_rows(results, budget=30)
    assert row[0] == "synthetic" and len(row) == len(fullbatch.METHODS) + 1
    for method, cell in zip(fullbatch.METHODS, row[1:]):
        evaluations = results["synthetic"][method]["evaluations"]
        assert cell.split()[0] == (str(evaluations) if evaluations is not None else ">30"), method
    assert ">30" in row  # SGD-HD at its defaults does not get there in 30 evaluations
    assert row[1 + fullbatch.METHODS.index("adam")].endswith(f"(lr {results['synthetic']['adam']['lr']:g})")
    figure = fullbatch.draw_figure(results)
    assert len(figure.axes) == 1 and len(figure.axes[0].lines) == len(fullbatch.METHODS) + 1


def test_study_runs_through_the_cache_and_writes_figure_and_table(tmp_path, monkeypatch):
    from experiments.paper.reproduce import reproduce

    registered = WORKLOADS["breast_cancer"]
    monkeypatch.setitem(WORKLOADS, "synthetic", Workload(
        "synthetic", "fullbatch", "synthetic", registered.kind, registered.metric, registered.goal,
        registered.batch_size, registered.valid_size, lambda data_dir: logistic_problem(*synthetic_arrays(), SOURCE),
        registered.model))
    monkeypatch.setattr(fullbatch, "PROBLEMS", ("synthetic",))
    monkeypatch.setattr(fullbatch, "BUDGET", 40)
    files = reproduce(tmp_path, only=["fullbatch"], progress=lambda text: None)
    names = {path.name for path in files}
    assert {"fullbatch.png", "fullbatch.pdf", "summary.md"} <= names
    assert stat.S_IMODE((tmp_path / "fullbatch.png").stat().st_mode) == 0o666 & ~_umask()
    summary = (tmp_path / "summary.md").read_text()
    assert "| synthetic |" in summary and "HDM" in summary
    monkeypatch.setattr(fullbatch, "run_problem", None)  # a second run reads the cache
    reproduce(tmp_path, only=["fullbatch"], progress=lambda text: None)
    assert (tmp_path / "summary.md").read_text() == summary


def synthetic_arrays(n: int = 40, d: int = 3, seed: int = 0):
    problem = synthetic_problem(n, d, seed)
    return problem.x[:, :-1].numpy(), problem.y.numpy()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="names"):
        fullbatch.load_problems(["nope"])
    with pytest.raises(ValueError, match="method"):
        fullbatch.run_method(synthetic_problem(), "nope")
