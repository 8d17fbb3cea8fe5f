"""The four rules that read a learning rate off a range-test curve (fastai's ``lr_find``
suggestions), and the small numerics they share. Each takes the curve as ``(lrs, values)``,
trimmed, finite and oriented so that lower is better (see ``LRFinderResult._curve``)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

SUGGESTION_METHODS = ("valley", "slide", "minimum", "steep")


def _valley(lrs: list[float], values: list[float]) -> float:
    # Length of the longest strictly decreasing subsequence ending at each point: the longest
    # increasing subsequence of the negated values, by patience sorting (O(n log n); fastai's
    # double loop is O(n^2) and gives the same lengths).
    tails: list[float] = []
    lds = []
    for v in values:
        k = bisect.bisect_left(tails, -v)
        if k == len(tails):
            tails.append(-v)
        else:
            tails[k] = -v
        lds.append(k + 1)
    max_end = lds.index(max(lds))
    max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return lrs[idx]


# fastai's slide rule was tuned on its default test: 100 points from 1e-7 to 10.
_FASTAI_DECADES_PER_POINT = 8 / 99
_SLIDE_WINDOW_DECADES = 15 * _FASTAI_DECADES_PER_POINT  # fastai's lr_diff = 15 points
_SLIDE_THRESH_PER_DECADE = 0.002 / _FASTAI_DECADES_PER_POINT  # fastai's 0.005 per point, relative


def _slide(lrs: list[float], values: list[float]) -> float:
    decades_per_point = math.log10(lrs[-1] / lrs[0]) / (len(lrs) - 1)
    lr_diff = max(1, round(_SLIDE_WINDOW_DECADES / decades_per_point))
    thresh = _SLIDE_THRESH_PER_DECADE * decades_per_point
    scale = abs(values[0]) if values[0] != 0 else 1.0
    grad = _gradient([v / scale for v in values])
    n = len(values)
    r_idx, l_idx = n - 1, n - 1 - lr_diff
    if l_idx < 0:
        raise ValueError(
            f"'slide' needs a curve longer than its window ({lr_diff} points, "
            f"{_SLIDE_WINDOW_DECADES:.2f} decades of lr), the curve has {n}"
        )
    local_min_lr = lrs[l_idx]
    while l_idx >= 0 and abs(grad[r_idx] - grad[l_idx]) > thresh:
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return local_min_lr


def _minimum(lrs: list[float], values: list[float]) -> float:
    return lrs[values.index(min(values))] / 10


def _steep(lrs: list[float], values: list[float]) -> float:
    slopes = [
        (values[i + 1] - values[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]))
        for i in range(len(values) - 1)
    ]
    return lrs[slopes.index(min(slopes))]


SUGGESTIONS: dict[str, Callable[[list[float], list[float]], float]] = {
    "valley": _valley,
    "slide": _slide,
    "minimum": _minimum,
    "steep": _steep,
}


def _gradient(values: list[float]) -> list[float]:
    """``numpy.gradient`` with unit spacing: central differences, one-sided at the ends."""
    n = len(values)
    if n < 2:
        return [0.0] * n
    inner = [(values[i + 1] - values[i - 1]) / 2 for i in range(1, n - 1)]
    return [values[1] - values[0], *inner, values[-1] - values[-2]]


def interp_log(lr: float, lrs: list[float], values: list[float]) -> float:
    """The curve's value at ``lr``, interpolating linearly in log lr."""
    x = math.log(lr)
    xs = [math.log(v) for v in lrs]
    if x <= xs[0]:
        return values[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            t = (x - xs[i - 1]) / (xs[i] - xs[i - 1]) if xs[i] > xs[i - 1] else 0.0
            return values[i - 1] + t * (values[i] - values[i - 1])
    return values[-1]
