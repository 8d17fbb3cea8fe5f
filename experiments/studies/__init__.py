"""The studies of ``python -m experiments reproduce``, one module each.

Every module has ``run(context) -> StudyOutput``: it plans its runs (:class:`RunSpec`), fetches
them through the cache (training only what is missing), then draws its figure and writes its
section of ``summary.md`` from the run logs alone.
"""
