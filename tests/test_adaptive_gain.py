"""AdaptiveGainSGD: the classic per-weight gain rule on a hand-made gradient sequence."""

from __future__ import annotations

import pytest
import torch

from hypergrad.adaptive_gain import AdaptiveGainSGD

# Four weights: 0 keeps its sign (gain climbs into the upper bound), 1 flips every step (gain
# falls into the lower bound), 2 starts at a zero gradient (no information: gain kept) and then
# alternates between keeping and flipping, 3 keeps its sign with changing magnitudes.
GRADIENTS = [
    [1.0, 1.0, 0.0, 2.0],
    [2.0, -1.0, 1.0, 1.0],
    [1.0, 1.0, -1.0, 3.0],
    [3.0, -2.0, -1.0, 1.0],
    [1.0, 1.0, 1.0, 1.0],
]
# Worked out by hand from the rule (+0.05 on agreement, *0.95 on a flip, clip to [0.9, 1.12]).
EXPECTED_GAINS = [
    [1.0, 1.0, 1.0, 1.0],
    [1.05, 0.95, 1.0, 1.05],
    [1.10, 0.9025, 0.95, 1.10],
    [1.12, 0.9, 1.0, 1.12],
    [1.12, 0.9, 0.95, 1.12],
]


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_gain_dynamics_on_a_hand_made_gradient_sequence(momentum):
    theta = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    optimizer = AdaptiveGainSGD([theta], lr=0.1, momentum=momentum, gain_bounds=(0.9, 1.12))
    expected_theta = torch.zeros(4, dtype=torch.float64)
    velocity = None
    for grad, gains in zip(GRADIENTS, EXPECTED_GAINS):
        theta.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
        torch.testing.assert_close(optimizer.state[theta]["gain"], torch.tensor(gains, dtype=torch.float64))
        gained = torch.tensor(gains, dtype=torch.float64) * torch.tensor(grad, dtype=torch.float64)
        velocity = gained if velocity is None or momentum == 0 else momentum * velocity + gained
        expected_theta -= 0.1 * velocity
        torch.testing.assert_close(theta.detach(), expected_theta)


def test_with_gains_fixed_at_one_it_is_torch_sgd():
    """gain_increase=0 and gain_decrease=1 keep every gain at 1: plain torch.optim.SGD."""
    torch.manual_seed(0)
    data = torch.randn(32, 5, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    models = [torch.nn.Linear(5, 1, dtype=torch.float64) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    ours = AdaptiveGainSGD(models[0].parameters(), lr=0.05, momentum=0.9, gain_increase=0.0, gain_decrease=1.0,
                           weight_decay=0.01)
    theirs = torch.optim.SGD(models[1].parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    for _ in range(10):
        for model, optimizer in zip(models, (ours, theirs)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(data[0]), data[1]).backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_maximize_flips_the_step_not_the_gain_rule():
    theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = AdaptiveGainSGD([theta], lr=0.1, maximize=True)
    for _ in range(3):
        theta.grad = torch.tensor([1.0, -1.0], dtype=torch.float64)
        optimizer.step()
    torch.testing.assert_close(optimizer.state[theta]["gain"], torch.tensor([1.1, 1.1], dtype=torch.float64))
    assert theta[0] > 0 and theta[1] < 0  # ascending


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (dict(lr=-1.0), "lr"),
        (dict(momentum=-0.1), "momentum"),
        (dict(gain_increase=-0.05), "gain_increase"),
        (dict(gain_decrease=0.0), "gain_decrease"),
        (dict(gain_decrease=1.5), "gain_decrease"),
        (dict(gain_bounds=(2.0, 10.0)), "gain_bounds"),
        (dict(gain_bounds=(0.0, 10.0)), "gain_bounds"),
        (dict(gain_bounds=(0.1,)), "gain_bounds"),
        (dict(weight_decay=-1.0), "weight_decay"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(arguments, named):
    with pytest.raises(ValueError, match=named):
        AdaptiveGainSGD([torch.nn.Parameter(torch.zeros(1))], **arguments)


def test_state_dict_round_trip():
    gradients = [torch.tensor(g, dtype=torch.float64) for g in GRADIENTS]
    runs = []
    for interrupted in (False, True):
        theta = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
        optimizer = AdaptiveGainSGD([theta], lr=0.1, momentum=0.5)
        for index, grad in enumerate(gradients):
            if interrupted and index == 2:
                saved = optimizer.state_dict()
                optimizer = AdaptiveGainSGD([theta], lr=0.1, momentum=0.5)
                optimizer.load_state_dict(saved)
            theta.grad = grad
            optimizer.step()
        runs.append(theta.detach().clone())
    assert torch.equal(runs[0], runs[1])
