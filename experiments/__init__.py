"""Experiments for hypergrad: the paper's tasks, datasets, models and methods, a runner, the studies
and the self-tuning benchmark.

Run ``python -m experiments run TASK``, ``python -m experiments reproduce`` or
``python -m experiments benchmark`` (see ``--help``).
Imports run one way, each layer using only the ones before it:

1. :mod:`experiments.files` (atomic writes, CSV/JSON), :mod:`experiments.plotting`,
   :mod:`experiments.data` (datasets as tensors), :mod:`experiments.benchmark_data` (the
   benchmark's text and tables), :mod:`experiments.models`, :mod:`experiments.training` (data
   order, augmentation, evaluation), :mod:`experiments.scoring` (the benchmark's score);
2. :mod:`experiments.methods` (name -> optimizer), :mod:`experiments.schedules`,
   :mod:`experiments.toy` (2-D test functions and optimizer paths);
3. :mod:`experiments.runner` (``RunConfig``, ``run_method``, ``run_suite``),
   :mod:`experiments.workloads` (the benchmark's workloads and step-counted runs),
   :mod:`experiments.benchmark_report` (its table, Markdown and figures);
4. :mod:`experiments.suite` (budgets, ``RunSpec``, the cache of runs);
5. :mod:`experiments.studies` (one module per study);
6. :mod:`experiments.reproduce` and :mod:`experiments.benchmark` (the commands) and ``__main__``
   (the command line).
"""
