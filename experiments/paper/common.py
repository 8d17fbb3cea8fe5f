"""Helpers the study figures and tables share (the plot style itself is :mod:`experiments.core.plotting`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from experiments.core.plotting import method_style

__all__ = ["format_value", "label", "markdown_table", "trailing_mean"]


def label(method: str) -> str:
    """The legend label of a method (``sgd_hd`` -> ``SGD-HD``)."""
    return method_style(method).label


def format_value(value: float | None, digits: int = 4) -> str:
    """A table cell: ``digits`` significant digits, ``-`` for a missing value, ``diverged`` for NaN."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "diverged"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table (cells already formatted, or formatted with ``str``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each position (fewer at the start); NaN propagates."""
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return (cumulative[index] - cumulative[start]) / (index - start)


def log_axis(ax, axis: str = "y") -> None:
    """Log scale with plain numbers as tick labels (0.5, 2, 1e-05) instead of 5x10^-1."""
    from matplotlib import ticker

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(ticker.FuncFormatter(
        lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "235" else ""))


def layout_with_legend_below(fig, handles, ncol: int) -> None:
    """``tight_layout`` leaving a strip at the bottom of ``fig`` for a legend of ``handles``."""
    rows = -(-len(handles) // ncol)
    strip = (0.28 * rows + 0.15) / fig.get_figheight()
    fig.tight_layout(rect=(0, strip, 1, 1))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0), ncol=ncol, frameon=False)
