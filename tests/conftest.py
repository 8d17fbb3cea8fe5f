"""Shared fixtures; the shared helpers and the table of optimizer cases live in ``cases.py``."""

from __future__ import annotations

import pytest

from cases import make_batches


@pytest.fixture
def batches():
    return make_batches(20)
