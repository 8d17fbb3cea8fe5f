"""Shared fixtures; the shared helpers and the table of optimizer cases live in ``cases.py``."""

from __future__ import annotations

import os

import pytest

# The fused Adam path's compiled statistics would compile every test's shapes anew (seconds
# each): the suite takes the eager statistics, and test_fused.py turns the compiled ones on
# where it checks them against the eager ones.
os.environ.setdefault("HYPERGRAD_COMPILED_STATISTICS", "0")

from cases import make_batches


@pytest.fixture
def batches():
    return make_batches(20)
