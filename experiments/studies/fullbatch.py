"""HDM against L-BFGS on full-batch logistic regression (``fullbatch.png``).

Every method of :mod:`experiments.fullbatch` on each of its problems, counted in gradient
evaluations until ``|grad|_inf <= 1e-4`` (at most 1000). The problems are deterministic and the
same in ``--quick`` and ``--full``; each problem's results are computed once and cached
(``runs/fullbatch-PROBLEM-HASH``), and the figure and the table are drawn from the cache.
"""

from __future__ import annotations

import inspect

import hypergrad
from experiments import fullbatch
from experiments.plotting import save_figure
from experiments.studies.common import markdown_table
from experiments.suite import StudyOutput, SuiteContext


def run(context: SuiteContext, problems: list[str] | None = None) -> StudyOutput:
    results = {}
    for name in problems or list(fullbatch.PROBLEMS):
        identity = {"problem": name, "methods": list(fullbatch.METHODS), "adam_lrs": list(fullbatch.ADAM_LRS),
                    "tolerance": fullbatch.TOLERANCE, "budget": fullbatch.BUDGET,
                    "hdm_defaults": _defaults(hypergrad.HDM)}
        context.progress(f"[fullbatch] {name}")
        results[name] = context.cache.cached_json(
            f"fullbatch-{name}", identity, lambda name=name: fullbatch.run_problem(fullbatch.load_problems([name])[0]))
    figure = fullbatch.draw_figure(results)
    files = list(save_figure(figure, context.out_dir / "fullbatch", dpi=110))
    headers = ["problem", *(fullbatch.LABELS[method] for method in fullbatch.METHODS)]
    summary = (
        "## Full-batch logistic regression: HDM against L-BFGS (fullbatch.png)\n\n"
        f"Gradient evaluations until |grad|_inf <= {fullbatch.TOLERANCE:g} (at most {fullbatch.BUDGET}; "
        "L-BFGS is charged every closure call of its line search); unregularised logistic regression, "
        "standardised features with an intercept, w_0 = 0, float64. HDM, SGD-HD and SGDN-HD at their defaults; "
        "gradient descent and Nesterov with the data's L; Adam at the best learning rate of a grid.\n\n"
        + markdown_table(headers, fullbatch.table_rows(results))
    )
    return StudyOutput(files, summary)


def _defaults(cls) -> dict:
    """A constructor's keyword defaults: they enter the cache key, so changing them reruns the study."""
    return {name: parameter.default for name, parameter in inspect.signature(cls).parameters.items()
            if parameter.default is not inspect.Parameter.empty}
