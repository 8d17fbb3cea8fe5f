"""Saving matplotlib figures the way the experiments write every file: atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from matplotlib.figure import Figure

__all__ = ["save_figure"]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save ``fig`` to ``path`` through a temporary file renamed into place, so that an
    interrupted run never leaves a half-written image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=path.suffix)
    os.close(handle)
    try:
        fig.savefig(temporary, dpi=dpi, bbox_inches="tight")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
