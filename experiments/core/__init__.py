"""The pieces every study and command shares: files, data, models, the workload and method
registries, the training function, run specifications and their cache (see :mod:`experiments`)."""
