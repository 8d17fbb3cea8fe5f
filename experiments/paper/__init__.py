"""The paper's reproduction: ``python -m experiments run`` and ``python -m experiments reproduce``
with its studies, one module each (see :mod:`experiments`)."""
