"""Tests of the learning-rate range test (hypergrad.lr_finder)."""

from __future__ import annotations

import copy
import math

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from hypergrad import AdagradHD, AdamHD, AdamWHD, AdaptiveGainSGD, RMSpropHD, SGDHD
from hypergrad.lr_finder import LRFinderResult, find_lr

matplotlib.use("Agg")


def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - target) ** 2).mean()


def least_squares(n: int = 256, d: int = 20, seed: int = 0):
    """Full-batch least squares with Hessian X^T X / n; returns (X, y, largest eigenvalue)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x = x * torch.logspace(0, -1, d, dtype=torch.float64)
    y = x @ torch.randn(d, 1, generator=g, dtype=torch.float64)
    y = y + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    top = torch.linalg.eigvalsh(x.T @ x / n).max().item()
    return x, y, top


def linear_sgd(x: torch.Tensor, lr: float = 0.5) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A linear model without bias for ``least_squares``' ``X`` (float64) and plain SGD on it."""
    model = nn.Linear(x.shape[1], 1, bias=False).double()
    return model, torch.optim.SGD(model.parameters(), lr=lr)


class BNNet(nn.Module):
    """Small classifier with BatchNorm buffers and a dropout layer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def classification_batches(num: int = 4, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 8, generator=g), torch.randint(0, 3, (size,), generator=g))
        for _ in range(num)
    ]


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Independent deep copy of everything find_lr promises to restore."""
    opt_state = optimizer.state_dict()
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "opt_state": copy.deepcopy(opt_state["state"]),  # (a group's HD record is a dict of tensors)
        "groups": copy.deepcopy(opt_state["param_groups"]),
        "group_objects": [
            {k: v for k, v in g.items() if torch.is_tensor(v)} for g in optimizer.param_groups
        ],
    }


def bit_equal(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(bit_equal(a[k], b[k]) for k in a)
    if torch.is_tensor(a) or torch.is_tensor(b):
        return (
            torch.is_tensor(a)
            and torch.is_tensor(b)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a.view(-1).view(torch.uint8) if a.numel() else a,
                            b.view(-1).view(torch.uint8) if b.numel() else b)
        )
    return a == b


def assert_restored(before: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    after = snapshot(model, optimizer)
    assert before["model"].keys() == after["model"].keys()
    for k in before["model"]:
        assert bit_equal(before["model"][k], after["model"][k]), k
    assert len(before["grads"]) == len(after["grads"])
    for a, b in zip(before["grads"], after["grads"], strict=True):
        assert (a is None and b is None) or bit_equal(a, b)
    assert before["training"] == after["training"]
    assert before["opt_state"].keys() == after["opt_state"].keys()
    for pid, state in before["opt_state"].items():
        assert state.keys() == after["opt_state"][pid].keys()
        for k in state:
            assert bit_equal(state[k], after["opt_state"][pid][k]), (pid, k)
    for g_before, g_after in zip(before["groups"], after["groups"], strict=True):
        assert g_before.keys() == g_after.keys()
        for k in g_before:
            assert bit_equal(g_before[k], g_after[k]), k
    # A tensor-valued hyperparameter must still be the very same tensor object.
    for objs, group in zip(before["group_objects"], optimizer.param_groups, strict=True):
        for k, v in objs.items():
            assert group[k] is v, k


def trained_bn_setup(optimizer_cls=torch.optim.Adam, **kwargs):
    """A BN model and an optimizer that already have state (moments, step, running stats)."""
    torch.manual_seed(0)
    model = BNNet()
    optimizer = optimizer_cls(model.parameters(), **kwargs)
    batches = classification_batches()
    for x, t in batches[:2]:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), t).backward()
        optimizer.step()
    # A gradient left over from an unfinished step, and one submodule in eval mode.
    nn.functional.cross_entropy(model(batches[2][0]), batches[2][1]).backward()
    model.body[3].eval()
    return model, optimizer, batches


class RaisesAt:
    """A loss function that raises ``exc`` on its ``k``-th call."""

    def __init__(self, k: int, exc: BaseException) -> None:
        self.k, self.exc, self.calls = k, exc, 0

    def __call__(self, out, target):
        self.calls += 1
        if self.calls == self.k:
            raise self.exc
        return nn.functional.cross_entropy(out, target)


# ---- input validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"start_lr": 1.0, "end_lr": 1.0}, "end_lr"),
        ({"start_lr": 1.0, "end_lr": 0.5}, "end_lr"),
        ({"start_lr": 0.0}, "start_lr"),
        ({"start_lr": -1e-3}, "start_lr"),
        ({"end_lr": math.inf}, "end_lr"),
        ({"num_iter": 1}, "num_iter"),
        ({"num_iter": 2.5}, "num_iter"),
        ({"mode": "cosine"}, "mode"),
        ({"smooth": 0.0}, "smooth"),
        ({"smooth": 1.5}, "smooth"),
        ({"diverge_factor": 1.0}, "diverge_factor"),
        ({"accumulation_steps": 0}, "accumulation_steps"),
        ({"metric": lambda o, t: 0.0}, "val_loader"),
        ({"metric_goal": "up"}, "metric_goal"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    model, optimizer, batches = trained_bn_setup()
    with pytest.raises(ValueError, match=match):
        find_lr(model, optimizer, nn.functional.cross_entropy, batches, **kwargs)


def test_empty_loader_raises_and_restores():
    model, optimizer, _ = trained_bn_setup()
    before = snapshot(model, optimizer)
    with pytest.raises(ValueError, match="empty"):
        find_lr(model, optimizer, nn.functional.cross_entropy, [])
    # A loader without len() that yields nothing is found out while running.
    with pytest.raises(ValueError, match="empty"):
        find_lr(model, optimizer, nn.functional.cross_entropy, iter(()))
    assert_restored(before, model, optimizer)


def test_batch_that_is_not_a_pair_raises_type_error():
    model, optimizer, batches = trained_bn_setup()
    with pytest.raises(TypeError, match="inputs, targets"):
        find_lr(model, optimizer, nn.functional.cross_entropy, [b[0] for b in batches])


# ---- restoring -------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer_cls, kwargs", [
    (torch.optim.Adam, {"lr": 1e-3}),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (torch.optim.RMSprop, {"lr": 1e-3, "centered": True}),
])
def test_restores_everything_after_a_complete_test(optimizer_cls, kwargs):
    model, optimizer, batches = trained_bn_setup(optimizer_cls, **kwargs)
    before = snapshot(model, optimizer)
    result = find_lr(model, optimizer, nn.functional.cross_entropy, batches, num_iter=20,
                     end_lr=1.0)
    assert len(result.lrs) > 0
    assert_restored(before, model, optimizer)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_restores_everything_when_interrupted_mid_test(exc):
    model, optimizer, batches = trained_bn_setup()
    before = snapshot(model, optimizer)
    loss_fn = RaisesAt(k=7, exc=exc)
    with pytest.raises(type(exc)):
        find_lr(model, optimizer, loss_fn, batches, num_iter=20)
    assert loss_fn.calls == 7  # six steps were taken: there was something to undo
    assert_restored(before, model, optimizer)


def test_restored_optimizer_continues_bit_for_bit_like_an_untouched_one():
    model, optimizer, batches = trained_bn_setup()
    twin_model, twin_optimizer, _ = trained_bn_setup()
    find_lr(model, optimizer, nn.functional.cross_entropy, batches, num_iter=15)
    for m, opt in ((model, optimizer), (twin_model, twin_optimizer)):
        torch.manual_seed(3)
        for x, t in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), t).backward()
            opt.step()
    for a, b in zip(model.state_dict().values(), twin_model.state_dict().values(), strict=True):
        assert bit_equal(a, b)


def test_tensor_lr_is_written_in_place_and_restored():
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    lr_tensor = torch.tensor(1e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr_tensor, foreach=False)
    batches = classification_batches()
    seen = []

    def loss_fn(out, target):
        lr = optimizer.param_groups[0]["lr"]
        seen.append((lr is lr_tensor, float(lr)))
        return nn.functional.cross_entropy(out, target)

    before = snapshot(model, optimizer)
    result = find_lr(model, optimizer, loss_fn, batches, num_iter=10, diverge_factor=math.inf)
    assert all(same for same, _ in seen)
    assert [v for _, v in seen[:10]] == pytest.approx(result.lrs, rel=1e-6)
    assert optimizer.param_groups[0]["lr"] is lr_tensor
    assert_restored(before, model, optimizer)


def test_hypergrad_lr_is_zero_during_the_test_and_restored():
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.param_groups[0]["hypergrad_lr"] = 1e-3  # a group as an HD optimizer has it
    seen = []

    def loss_fn(out, target):
        seen.append(optimizer.param_groups[0]["hypergrad_lr"])
        return nn.functional.cross_entropy(out, target)

    find_lr(model, optimizer, loss_fn, classification_batches(), num_iter=5)
    assert seen == [0.0] * 6
    assert optimizer.param_groups[0]["hypergrad_lr"] == 1e-3


# ---- what is recorded ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["exp", "linear"])
def test_lr_schedule_and_recorded_losses_match_plain_gradient_descent(mode):
    """lrs[i] is used for step i and losses[i] is the loss after that step (smooth=1)."""
    x, y, _ = least_squares()
    model, optimizer = linear_sgd(x)
    w0 = model.weight.detach().clone()
    result = find_lr(model, optimizer, mse, [(x, y)], start_lr=1e-3, end_lr=1.0, num_iter=30,
                     mode=mode, smooth=1.0)
    if mode == "exp":
        expected_lrs = np.logspace(-3, 0, 30)
    else:
        expected_lrs = np.linspace(1e-3, 1.0, 30)
    np.testing.assert_allclose(result.lrs, expected_lrs, rtol=1e-12)
    # Independent gradient descent with the closed-form gradient of 0.5 * mean((Xw - y)^2).
    w = w0.T.clone()
    expected_losses = []
    for lr in expected_lrs:
        w = w - lr * x.T @ (x @ w - y) / x.shape[0]
        expected_losses.append((0.5 * ((x @ w - y) ** 2).mean()).item())
    np.testing.assert_allclose(result.raw_losses, expected_losses, rtol=1e-10)
    assert result.losses == result.raw_losses
    assert not result.diverged


def test_smoothing_is_a_debiased_moving_average():
    x, y, _ = least_squares()
    model, optimizer = linear_sgd(x)
    result = find_lr(model, optimizer, mse, [(x, y)], start_lr=1e-3, end_lr=1.0, num_iter=30,
                     smooth=0.1)
    avg, expected = 0.0, []
    for t, raw in enumerate(result.raw_losses, start=1):
        avg = 0.9 * avg + 0.1 * raw
        expected.append(avg / (1 - 0.9**t))
    np.testing.assert_allclose(result.losses, expected, rtol=1e-12)


def test_validation_loss_is_scored_after_each_step():
    """On the training set itself, the validation loss after step i equals the training loss
    measured on the next forward pass (same weights, two code paths)."""
    x, y, _ = least_squares()
    model, optimizer = linear_sgd(x)
    result = find_lr(model, optimizer, mse, [(x, y)], start_lr=1e-3, end_lr=1.0, num_iter=20,
                     val_loader=[(x[:100], y[:100]), (x[100:], y[100:])])
    np.testing.assert_allclose(result.metric_values, result.raw_losses, rtol=1e-10)
    assert result.metric_goal == "min"


def test_accuracy_metric_is_maximised():
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = classification_batches(num=8)

    def accuracy(out, target):
        return (out.argmax(dim=1) == target).float().mean()

    result = find_lr(model, optimizer, nn.functional.cross_entropy, batches, num_iter=30,
                     start_lr=1e-4, end_lr=10, val_loader=batches[:2], metric=accuracy)
    assert result.metric_goal == "max"
    assert all(0.0 <= v <= 1.0 for v in result.metric_values)
    best = max(result.metric_values[result.num_iter // 10 : len(result.lrs) - 5])
    assert result.suggest("minimum") == pytest.approx(
        result.lrs[result.metric_values.index(best)] / 10)


def test_loader_is_cycled_and_accumulation_matches_a_double_batch():
    x, y, _ = least_squares()
    model, optimizer = linear_sgd(x)

    class Counting:
        def __init__(self, batches):
            self.batches, self.count = batches, 0

        def __iter__(self):
            for b in self.batches:
                self.count += 1
                yield b

    halves = Counting([(x[:128], y[:128]), (x[128:], y[128:])])
    accumulated = find_lr(model, optimizer, mse, halves, start_lr=1e-3, end_lr=1.0,
                          num_iter=12, smooth=1.0, accumulation_steps=2)
    assert halves.count == 2 * (12 + 1)  # 12 steps and one scoring pass, two halves each
    whole = find_lr(model, optimizer, mse, [(x, y)], start_lr=1e-3, end_lr=1.0, num_iter=12,
                    smooth=1.0)
    np.testing.assert_allclose(accumulated.raw_losses, whole.raw_losses, rtol=1e-10)


def test_stops_when_the_smoothed_loss_exceeds_diverge_factor_times_the_best():
    x, y, _ = least_squares()
    model, optimizer = linear_sgd(x)
    result = find_lr(model, optimizer, mse, [(x, y)], start_lr=1e-3, end_lr=1e3, num_iter=100,
                     diverge_factor=4)
    assert result.diverged and len(result.lrs) < 100
    assert result.losses[-1] > 4 * min(result.losses[:-1])
    assert all(v <= 4 * min(result.losses[: i + 1]) for i, v in enumerate(result.losses[:-1]))


@pytest.mark.parametrize("seed, num_iter, low, high", [
    (0, 100, 1e-5, 1e2),
    (1, 300, 1e-7, 1e3),
    (2, 200, 1e-3, 1e1),
])
def test_least_squares_suggestions_lie_below_the_divergence_edge(seed, num_iter, low, high):
    """Full-batch gradient descent on least squares diverges above 2/L (L = largest Hessian
    eigenvalue): every suggestion must be below that edge and within 1000x of it."""
    x, y, top = least_squares(seed=seed)
    edge = 2 / top
    model, optimizer = linear_sgd(x, lr=0.1)
    before = snapshot(model, optimizer)
    result = find_lr(model, optimizer, mse, [(x, y)], start_lr=edge * low, end_lr=edge * high,
                     num_iter=num_iter)
    assert result.diverged
    for method, lr in result.suggestions().items():
        assert edge / 1000 < lr < edge, (method, lr / edge)
    low, high = result.range()
    assert edge / 1000 < low < high < edge
    assert_restored(before, model, optimizer)


# ---- suggestion rules against fastai's reference implementations ----------------------------


def fastai_valley(lrs, losses):
    """fastai.callback.schedule.valley, verbatim apart from types."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def fastai_slide(lrs, losses, lr_diff=15, thresh=0.005):
    """fastai.callback.schedule.slide (absolute threshold on the raw loss)."""
    loss_grad = np.gradient(np.asarray(losses))
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while (l_idx >= -len(losses)) and (abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh):
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return float(local_min_lr)


def curve(lrs: np.ndarray, dip: float) -> np.ndarray:
    """A range-test-like curve: flat, a fall around ``dip - 2`` decades, a blow-up past ``dip``."""
    x = np.log10(lrs)
    return 2.3 - 1.5 / (1 + np.exp(-(x - dip + 2) * 2)) + np.exp(3 * (x - dip)) * 0.05


def noisy_curves(n: int | None = None):
    """Noisy curves; ``n=None`` draws their length, else fastai's default test (1e-7..10)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        lrs = np.logspace(-6, 1, int(rng.integers(30, 120))) if n is None else np.logspace(-7, 1, n)
        values = curve(lrs, rng.uniform(-3, 0)) + rng.normal(0, 0.01, len(lrs))
        yield lrs.tolist(), values.tolist()


def result_of(lrs, losses):
    return LRFinderResult(lrs=lrs, losses=losses, raw_losses=losses, metric_values=None,
                          metric_goal="min", num_iter=len(lrs), diverged=False)


def test_rules_match_fastai_on_noisy_curves():
    for lrs, losses in noisy_curves():
        result = result_of(lrs, losses)
        kept_lrs, kept = lrs[len(lrs) // 10 : -5], losses[len(lrs) // 10 : -5]
        assert result.suggest("valley") == fastai_valley(kept_lrs, kept)
        assert result.suggest("minimum") == kept_lrs[int(np.argmin(kept))] / 10
        slopes = np.diff(kept) / np.diff(np.log(kept_lrs))
        assert result.suggest("steep") == kept_lrs[int(np.argmin(slopes))]


def test_slide_is_fastais_rule_on_fastais_default_test():
    """On 100 points from 1e-7 to 10, our slide is fastai's (15-point window) applied to the
    curve divided by its first value, with threshold 0.002."""
    for lrs, losses in noisy_curves(n=100):
        kept_lrs, kept = lrs[10:-5], losses[10:-5]
        expected = fastai_slide(kept_lrs, [v / kept[0] for v in kept], lr_diff=15, thresh=0.002)
        assert result_of(lrs, losses).suggest("slide") == expected


def test_slide_does_not_depend_on_the_loss_scale_or_the_number_of_points():
    for lrs, losses in noisy_curves():
        a = result_of(lrs, losses).suggest("slide")
        b = result_of(lrs, [1000 * v for v in losses]).suggest("slide")
        assert a == b
    for dip in (-3.0, -1.5, 0.0):
        coarse, fine = (np.logspace(-7, 1, n) for n in (100, 400))
        a = result_of(coarse.tolist(), curve(coarse, dip).tolist()).suggest("slide")
        b = result_of(fine.tolist(), curve(fine, dip).tolist()).suggest("slide")
        assert abs(math.log10(a / b)) < 0.1  # within a tenth of a decade


def test_suggest_rejects_unknown_method_and_short_curves():
    lrs, losses = next(noisy_curves())
    with pytest.raises(ValueError, match="method"):
        result_of(lrs, losses).suggest("median")
    with pytest.raises(ValueError, match="window"):
        result_of(lrs[:12], losses[:12]).suggest("slide")
    with pytest.raises(ValueError, match="usable points"):
        result_of(lrs[:7], losses[:7]).suggest("valley")
    with pytest.raises(ValueError, match="div"):
        result_of(lrs, losses).range(div=1.0)


def test_plot_has_log_axis_and_a_marker_per_suggestion():
    import matplotlib.pyplot as plt

    lrs, losses = next(noisy_curves())
    result = result_of(lrs, losses)
    ax = result.plot(suggestions=("valley", "steep", "minimum"))
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for method in ("valley", "steep", "minimum"):
        assert any(label.startswith(method) for label in labels)
    plt.close(ax.figure)


# ---- hypergradient optimizers ----------------------------------------------------------------


@pytest.mark.parametrize("hd_cls, base_cls, kwargs, hd_kwargs", [
    (SGDHD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}, {"hypergrad_lr": 1e-2}),
    (SGDHD, torch.optim.SGD, {"lr": 0.05}, {"hypergrad_lr": 1e-2, "granularity": "tensor"}),
    (SGDHD, torch.optim.SGD, {"lr": 0.05}, {"hypergrad_lr": 1e-2, "lr_limit": 0.01}),
    (AdamHD, torch.optim.Adam, {"lr": 1e-3}, {"hypergrad_lr": 1e-4}),
    (AdamWHD, torch.optim.AdamW, {"lr": 1e-3}, {"hypergrad_lr": 1e-4}),
    (AdagradHD, torch.optim.Adagrad, {"lr": 1e-2}, {"hypergrad_lr": 1e-4}),
    (RMSpropHD, torch.optim.RMSprop, {"lr": 1e-3, "centered": True},
     {"hypergrad_lr": 1e-4, "hypergrad_rule": "multiplicative"}),
])
def test_hd_optimizer_is_tested_as_its_base(hd_cls, base_cls, kwargs, hd_kwargs):
    """With HD (and the blend) switched off the curve is the base optimizer's, from the same
    start; afterwards every group value, hypergrad_lr and lr_limit included, is back."""
    x, y, _ = least_squares()
    curves = []
    for cls, extra in ((hd_cls, hd_kwargs), (base_cls, {})):
        model = nn.Linear(x.shape[1], 1, bias=False).double()
        with torch.no_grad():
            model.weight.zero_()
        optimizer = cls(model.parameters(), **kwargs, **extra)
        before = snapshot(model, optimizer)
        curves.append(find_lr(model, optimizer, mse, [(x, y)], start_lr=1e-4, end_lr=1.0,
                              num_iter=40, smooth=1.0).raw_losses)
        assert_restored(before, model, optimizer)
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-10)


def test_adaptive_gain_sgd_is_restored():
    """Per-weight gains are optimizer state like any other: put back after the test."""
    model, optimizer, batches = trained_bn_setup(AdaptiveGainSGD, lr=0.01, momentum=0.9)
    before = snapshot(model, optimizer)
    find_lr(model, optimizer, nn.functional.cross_entropy, batches, num_iter=20)
    assert_restored(before, model, optimizer)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_hd_optimizer_restored_when_interrupted(exc):
    torch.manual_seed(0)
    model = BNNet()
    groups = [{"params": model.body.parameters(), "lr": 1e-3},
              {"params": model.head.parameters(), "lr": 1e-2, "hypergrad_lr": 1e-6}]
    optimizer = AdamHD(groups, hypergrad_lr=1e-7)
    batches = classification_batches()
    for x, t in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), t).backward()
        optimizer.step()
    before = snapshot(model, optimizer)
    with pytest.raises(type(exc)):
        find_lr(model, optimizer, RaisesAt(k=9, exc=exc), batches, num_iter=30)
    assert_restored(before, model, optimizer)
