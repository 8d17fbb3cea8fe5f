"""Experiments for hypergrad: the paper's reproduction and the self-tuning benchmark over shared core modules.

Commands (``python -m experiments COMMAND --help``): ``run`` and ``reproduce`` (the paper,
:mod:`experiments.paper`), ``benchmark``, ``sensitivity`` and ``compose`` (the benchmark,
:mod:`experiments.benchmark`). Folders, and imports running one way (each module uses only the
ones listed before it):

1. :mod:`experiments.core`, shared by everything:
   ``files`` (atomic writes, CSV/JSON/torch files) and ``plotting``; ``datasets`` (MNIST,
   Fashion-MNIST, CIFAR-10 as tensors), ``tables`` (the benchmark's text and tables, the
   full-batch problems' data) and ``models``; ``training`` (the one optimizer step, the one
   step-counted training loop ``train_steps``, data order, evaluation); ``workloads`` (THE registry
   of workloads, ``WORKLOADS``: the paper's tasks, the benchmark's workloads and the full-batch
   problems, each with data, model, loss, metric, batch size and budgets per mode; ``suite(name)``
   lists one suite); ``methods`` (name -> optimizer, and the named settings configurations
   ``paper`` and ``untuned`` resolved in one place), ``schedules``, ``parallel`` (the data-parallel
   wrapper); ``config`` and ``runner`` (a paper task's run through ``train_steps``, an epoch a
   number of steps, with resumable checkpoints); ``runs`` (``RunSpec``, one run of any workload and
   the only cache key; the benchmark's kind of run, ``train``; the cache, the worker pool, the
   studies' budgets).
2. :mod:`experiments.paper`: ``common`` and ``toy`` (2-D surfaces), one module per study
   (``comparison``, ``alpha_sensitivity``, ``convergence``, ``surfaces``, ``lr_sweep``,
   ``lr_range_test``, ``peers``, ``onecycle``, ``transfer``, ``hdm_fullbatch``), then
   ``reproduce`` (the command).
3. :mod:`experiments.benchmark`: ``scoring`` and ``options``; ``selftuning`` (the benchmark
   command) with ``selftuning_report``; ``beta_sensitivity`` with ``beta_sensitivity_report``, and
   ``compose``.
4. ``__main__``: the command line.

docs/experiments.md lists every module with its size, and says where a new workload, method or
study goes.
"""
