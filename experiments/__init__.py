"""Experiments for hypergrad: the paper's tasks, datasets, models and methods, a runner and the studies.

Run ``python -m experiments run TASK`` or ``python -m experiments reproduce`` (see ``--help``).
Imports run one way, each layer using only the ones before it:

1. :mod:`experiments.files` (atomic writes, CSV/JSON), :mod:`experiments.plotting`,
   :mod:`experiments.data` (datasets as tensors), :mod:`experiments.models`,
   :mod:`experiments.training` (data order, augmentation, evaluation);
2. :mod:`experiments.methods` (name -> optimizer), :mod:`experiments.schedules`,
   :mod:`experiments.toy` (2-D test functions and optimizer paths);
3. :mod:`experiments.runner` (``RunConfig``, ``run_method``, ``run_suite``);
4. :mod:`experiments.suite` (budgets, ``RunSpec``, the cache of runs);
5. :mod:`experiments.studies` (one module per study);
6. :mod:`experiments.reproduce` (the command) and ``__main__`` (the command line).
"""
