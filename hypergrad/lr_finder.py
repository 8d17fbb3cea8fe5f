"""Learning-rate range test (Smith 2015, "Cyclical Learning Rates for Training Neural Networks").

`find_lr` trains for a few mini-batches while the learning rate grows from tiny to huge, records
how the loss (or a validation metric) responds, and puts the model and the optimizer back exactly
as they were. `LRFinderResult` turns the curve into a learning rate with fastai's four rules and
into a (min, max) pair for `torch.optim.lr_scheduler.CyclicLR` / `OneCycleLR`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from ._lr_suggestions import SUGGESTION_METHODS, SUGGESTIONS, interp_log
from ._validation import check_number
from ._range_test import (
    Curve,
    Snapshot,
    cycle,
    evaluate,
    lr_schedule,
    mean_loss,
    model_device,
    run_range_test,
    switch_off_hypergradients,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["LRFinderResult", "find_lr"]

@dataclass(frozen=True)
class LRFinderResult:
    """The curve recorded by `find_lr`.

    Attributes:
        lrs: learning rate of each recorded step.
        losses: training loss after the step taken with ``lrs[i]`` (measured on the next
            mini-batch), smoothed by a debiased exponential moving average.
        raw_losses: the same losses before smoothing.
        metric_values: validation value after each step (the loss on ``val_loader``, or
            ``metric``), or ``None`` when the test ran without ``val_loader``.
        metric_goal: ``"min"`` when lower ``metric_values`` are better, ``"max"`` otherwise.
        num_iter: the number of steps requested (the curve is shorter when the test diverged).
        diverged: whether the test stopped early because the smoothed loss blew up.

    Suggestions and `range` read ``metric_values`` when there are any, ``losses`` otherwise.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    metric_values: list[float] | None
    metric_goal: Literal["min", "max"]
    num_iter: int
    diverged: bool

    def _curve(self, skip_start: int | None, skip_end: int) -> tuple[list[float], list[float]]:
        """The (lrs, values) the rules read: trimmed, finite, oriented so that lower is better.

        fastai drops the first ``num_iter // 10`` points (the smoother is still settling) and
        the last 5 (the blow-up that stopped the test).
        """
        if skip_start is None:
            skip_start = self.num_iter // 10
        if skip_start < 0 or skip_end < 0:
            raise ValueError(f"skip_start and skip_end must be >= 0, got {skip_start}, {skip_end}")
        if self.metric_values is not None:
            sign = -1.0 if self.metric_goal == "max" else 1.0
            values = [sign * v for v in self.metric_values]
        else:
            values = list(self.losses)
        stop = len(values) - skip_end
        points = [
            (lr, v)
            for lr, v in zip(self.lrs[skip_start:stop], values[skip_start:stop], strict=True)
            if math.isfinite(v)
        ]
        if len(points) < 3:
            raise ValueError(
                f"only {len(points)} usable points after dropping the first {skip_start} and the "
                f"last {skip_end} of {len(values)}: lower start_lr, raise num_iter, or pass "
                "smaller skip_start / skip_end"
            )
        lrs, vals = zip(*points, strict=True)
        return list(lrs), list(vals)

    def suggest(
        self,
        method: str = "valley",
        *,
        skip_start: int | None = None,
        skip_end: int = 5,
    ) -> float:
        """A learning rate read off the curve by one of fastai's four rules.

        The rules see the curve without its first ``skip_start`` points (default
        ``num_iter // 10``) and its last ``skip_end`` points, as fastai's ``lr_find`` does.

        - ``"valley"``: find the longest strictly decreasing run of the curve (longest
          decreasing subsequence ``lds[i]`` ending at each point; the valley is the
          ``lds``-long stretch of indices ending where ``lds`` is largest) and return the lr
          about halfway along it (fastai: ``start + int(n/3) + int(n/6)``). Robust; fastai's
          default.
        - ``"slide"``: slide a window from the divergent end towards small lrs until the loss
          gradient at its two ends agrees to within a threshold, and return the lr at the
          window's left end just before that. fastai states the rule per point of its default
          test (100 points over 8 decades): a 15-point window and a threshold of 0.005 in loss
          units. Here the window is the same 1.21 decades of lr and the threshold the same
          slope per decade, whatever ``num_iter`` and range, and the curve is first divided by
          its starting value with the threshold set to 0.002 (0.005 on a 10-class
          cross-entropy starting near ln 10 = 2.3), so the rule depends neither on the number
          of points nor on the loss's units. On fastai's default test it is fastai's rule.
        - ``"minimum"``: the lr at the lowest point, divided by 10 (the minimum already sits at
          the edge of stability).
        - ``"steep"``: the lr where the loss falls fastest per decade of lr (most negative
          ``d loss / d log lr`` between consecutive points; the left point of that pair).

        Raises:
            ValueError: unknown ``method``, or too few points left to apply it.
        """
        if method not in SUGGESTION_METHODS:
            raise ValueError(f"method must be one of {SUGGESTION_METHODS}, got {method!r}")
        lrs, values = self._curve(skip_start, skip_end)
        return SUGGESTIONS[method](lrs, values)

    def suggestions(self, *, skip_start: int | None = None, skip_end: int = 5) -> dict[str, float]:
        """All four suggestions, as ``{method: lr}``."""
        return {
            m: self.suggest(m, skip_start=skip_start, skip_end=skip_end) for m in SUGGESTION_METHODS
        }

    def range(
        self, div: float = 4.0, *, skip_start: int | None = None, skip_end: int = 5
    ) -> tuple[float, float]:
        """``(min_lr, max_lr)`` for ``CyclicLR(base_lr=min_lr, max_lr=max_lr)`` or
        ``OneCycleLR(max_lr=max_lr, div_factor=...)``.

        ``max_lr`` is the lr where the loss is still clearly improving: a tenth of the lr at
        the curve's lowest point (the ``"minimum"`` rule). The lowest point itself is past the
        edge of stability: divergence takes a few steps to show and the smoother lags (on a
        least-squares problem it sits at about 3x the divergence edge 2/L, the tenth at 0.3x).
        ``min_lr = max_lr / div``; Smith's rule of thumb is ``div`` = 3 to 4.
        """
        if not div > 1.0:
            raise ValueError(f"div must be > 1, got {div}")
        max_lr = self.suggest("minimum", skip_start=skip_start, skip_end=skip_end)
        return max_lr / div, max_lr

    def plot(
        self,
        ax: Axes | None = None,
        suggestions: Sequence[str] = ("valley",),
        *,
        skip_start: int | None = None,
        skip_end: int = 5,
    ) -> Axes:
        """Draw the curve against the lr (log x-axis) with a marker per suggestion.

        Draws the whole recorded curve (the blow-up included, as a dotted tail) and marks
        each rule's lr on it. Needs matplotlib. Returns the axes.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        if self.metric_values is not None:
            values, ylabel = self.metric_values, "validation metric"
        else:
            values, ylabel = self.losses, "training loss (smoothed)"
        n_kept = len(values) - skip_end
        ax.plot(self.lrs[: n_kept], values[: n_kept], color="C0", label=ylabel)
        if skip_end > 0 and n_kept > 0:
            ax.plot(self.lrs[n_kept - 1 :], values[n_kept - 1 :], color="C0", linestyle=":")
        markers = "ovsD^<>p"
        for i, method in enumerate(suggestions):
            lr = self.suggest(method, skip_start=skip_start, skip_end=skip_end)
            y = interp_log(lr, self.lrs, values)
            ax.plot([lr], [y], marker=markers[i % len(markers)], color=f"C{i + 1}",
                    linestyle="none", markersize=8, label=f"{method}: {lr:.2e}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(ylabel)
        finite = [v for v in values[: max(n_kept, 1)] if math.isfinite(v)]
        if finite:
            # Keep the blow-up from squashing the interesting part of the curve.
            low, high = min(finite), max(finite)
            pad = 0.05 * (high - low) if high > low else 0.05 * abs(high) + 1e-12
            ax.set_ylim(low - pad, high + pad)
        ax.legend(loc="best")
        title = "LR range test" + (" (stopped: diverged)" if self.diverged else "")
        ax.set_title(title)
        return ax


def find_lr(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Any], Tensor],
    loader: Iterable[Any],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    mode: Literal["exp", "linear"] = "exp",
    smooth: float = 0.05,
    diverge_factor: float = 4.0,
    val_loader: Iterable[Any] | None = None,
    metric: Callable[[Tensor, Any], Tensor | float] | None = None,
    metric_goal: Literal["min", "max"] = "max",
    accumulation_steps: int = 1,
    device: torch.device | str | None = None,
) -> LRFinderResult:
    """Learning-rate range test: train while raising the lr, record the loss, restore everything.

    Takes ``num_iter`` optimizer steps (cycling ``loader`` if it runs out) with the lr of step
    ``i`` going from ``start_lr`` to ``end_lr``, ``start_lr * (end_lr/start_lr)**(i/(num_iter-1))``
    (``mode="exp"``) or linearly (``mode="linear"``). Every param group gets the same lr.
    The loss recorded for step ``i`` is the training loss on the *next* mini-batch, i.e. after
    the step with ``lrs[i]`` (one extra forward pass at the end), smoothed by a debiased
    exponential moving average ``avg = (1 - smooth) * avg + smooth * loss``,
    ``smoothed = avg / (1 - (1 - smooth)**t)`` (fastai's AvgSmoothLoss; ``smooth=1`` turns
    smoothing off). The smoother lags by about ``1/smooth - 1`` steps. The test stops early
    when the smoothed loss is not finite or exceeds ``diverge_factor`` times the best so far.

    With ``val_loader``, the whole of it is evaluated after every step (in eval mode) and the
    suggestions read that curve: the mean loss, or with ``metric(outputs, targets)`` (a batch
    mean, e.g. accuracy, the original range test's choice) the metric, maximised unless
    ``metric_goal="min"``.

    Afterwards the model and the optimizer are exactly as before, bit for bit: parameters,
    buffers (BatchNorm statistics), ``.grad``, train/eval flags, optimizer state and every
    param group value (lr, ``hypergrad_lr``, ...). This also holds when the test raises or is
    interrupted (the exception propagates). Global RNG state is not restored.

    Works with any optimizer. Hypergradient optimizers are tested as their base optimizer: for
    the duration of the test, every group that has them gets ``hypergrad_lr = 0`` and
    ``lr_limit = None`` (no blend). With ``granularity="tensor"`` / ``"element"`` the schedule
    sets the base rate ``group["lr"]``, which the (then frozen) per-tensor scales multiply.

    Args:
        model: the model to test; its parameters must already be on ``device``.
        optimizer: an optimizer over (some of) the model's parameters.
        loss_fn: ``loss_fn(model(inputs), targets)`` -> scalar loss (batch mean).
        loader: yields ``(inputs, targets)`` batches (a one-shot iterator's are replayed).
        start_lr, end_lr: lr range, ``0 < start_lr < end_lr``.
        num_iter: optimizer steps, >= 2.
        mode: ``"exp"`` (geometric spacing, the usual choice) or ``"linear"``.
        smooth: weight of the newest loss in the moving average, in (0, 1].
        diverge_factor: stop when the smoothed loss exceeds this many times the best
            smoothed loss (> 1; ``math.inf`` never stops on growth, only on inf/NaN).
        val_loader: optional validation batches, evaluated after every step.
        metric: optional ``metric(outputs, targets)`` on ``val_loader`` instead of its loss.
        metric_goal: ``"max"`` (accuracy-like) or ``"min"``; only used with ``metric``.
        accumulation_steps: mini-batches whose gradients are summed per optimizer step (the
            loss of each is divided by this), >= 1.
        device: where batches are moved; default: the device of the model's first parameter.

    Returns the recorded curve (`LRFinderResult`). Raises ``ValueError`` for a bad argument
    (naming it) or an empty loader, ``TypeError`` for a batch that is not an ``(inputs, targets)``
    pair.
    """
    _check_arguments(
        start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, mode=mode, smooth=smooth,
        diverge_factor=diverge_factor, metric_goal=metric_goal, metric=metric, val_loader=val_loader,
        accumulation_steps=accumulation_steps, loader=loader,
    )
    device = model_device(model) if device is None else torch.device(device)
    validate = None
    if val_loader is not None:
        validate = functools.partial(evaluate, model, val_loader, metric if metric is not None else loss_fn, device)
    curve = Curve(smooth, diverge_factor, metric_values=[] if val_loader is not None else None)
    snapshot = Snapshot(model, optimizer)
    try:
        switch_off_hypergradients(optimizer)
        model.train()
        next_loss = functools.partial(mean_loss, model, loss_fn, cycle(loader), device, accumulation_steps)
        run_range_test(optimizer, lr_schedule(start_lr, end_lr, num_iter, mode), curve, next_loss, validate)
    finally:
        snapshot.restore(model, optimizer)
    goal = metric_goal if metric is not None else "min"
    return LRFinderResult(lrs=curve.lrs, losses=curve.losses, raw_losses=curve.raw_losses,
                          metric_values=curve.metric_values, metric_goal=goal, num_iter=num_iter,
                          diverged=curve.diverged)


def _check_arguments(
    *,
    start_lr: float,
    end_lr: float,
    num_iter: int,
    mode: str,
    smooth: float,
    diverge_factor: float,
    metric_goal: str,
    metric: Callable[[Tensor, Any], Tensor | float] | None,
    val_loader: Iterable[Any] | None,
    accumulation_steps: int,
    loader: Iterable[Any],
) -> None:
    """`find_lr`'s argument checks, in the order of its signature."""
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr), ("smooth", smooth),
                        ("diverge_factor", diverge_factor)):
        check_number(name, value)
    if not (math.isfinite(start_lr) and start_lr > 0):
        raise ValueError(f"start_lr must be a finite number > 0, got {start_lr}")
    if not (math.isfinite(end_lr) and end_lr > start_lr):
        raise ValueError(f"end_lr must be finite and > start_lr ({start_lr}), got {end_lr}")
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 2:
        raise ValueError(f"num_iter must be an int >= 2, got {num_iter!r}")
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
    if not 0 < smooth <= 1:
        raise ValueError(f"smooth must be in (0, 1] (1 = no smoothing), got {smooth}")
    if not diverge_factor > 1:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor}")
    if metric_goal not in ("min", "max"):
        raise ValueError(f"metric_goal must be 'min' or 'max', got {metric_goal!r}")
    if metric is not None and val_loader is None:
        raise ValueError("metric needs val_loader: it is evaluated on the validation batches")
    if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be an int >= 1, got {accumulation_steps!r}")
    if hasattr(loader, "__len__") and len(loader) == 0:  # type: ignore[arg-type]
        raise ValueError("loader is empty: it has no batch")
