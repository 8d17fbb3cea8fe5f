"""The self-tuning benchmark and the commands over its workloads: ``benchmark``, ``sensitivity`` and
``compose`` (see :mod:`experiments`)."""
