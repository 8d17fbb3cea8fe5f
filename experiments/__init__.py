"""Experiments for hypergrad: the paper's tasks, datasets, models and methods, and a runner.

Run ``python -m experiments run TASK`` (see ``python -m experiments run --help``). The pieces are
importable on their own: :mod:`experiments.data` (datasets as tensors), :mod:`experiments.models`,
:mod:`experiments.methods` (name -> optimizer) and :mod:`experiments.runner` (``RunConfig``,
``run_method``, ``run_suite``).
"""
