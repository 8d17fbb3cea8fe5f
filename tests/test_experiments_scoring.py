"""The benchmark's score against profiles computed by hand."""

import math

import pytest

from experiments.benchmark import scoring

INF = math.inf


def test_upper_median_takes_the_upper_of_two_and_counts_none_as_infinity():
    assert scoring.upper_median([30, 10]) == 30
    assert scoring.upper_median([5, 1, 3]) == 3
    assert scoring.upper_median([10, None]) == INF
    assert scoring.upper_median([None, 4, 2]) == 4
    with pytest.raises(ValueError, match="values"):
        scoring.upper_median([])


def test_first_reached_respects_the_goal():
    assert scoring.first_reached([10, 20, 30], [0.5, 0.3, 0.1], 0.3, "min") == 20
    assert scoring.first_reached([10, 20, 30], [0.5, 0.9, 0.95], 0.95, "max") == 30
    assert scoring.first_reached([10, 20], [math.nan, 0.5], 0.1, "min") is None
    with pytest.raises(ValueError, match="goal"):
        scoring.first_reached([1], [1.0], 1.0, "lower")


def test_single_workload_best_entry_scores_one_and_twice_as_slow_scores_two_thirds():
    # r = 2: rho = 0 on [1, 2), 1 on [2, 4] -> area 2 of 3.
    result = scoring.scores({"a": {"w": 100}, "b": {"w": 200}, "c": {"w": INF}})
    assert result["a"] == pytest.approx(1.0)
    assert result["b"] == pytest.approx(2 / 3, abs=1e-3)
    assert result["c"] == 0.0


def test_ties_share_the_best_ratio():
    result = scoring.scores({"a": {"w": 50, "v": 10}, "b": {"w": 50, "v": 10}})
    assert result == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


def test_two_workloads_hand_computed_profile():
    # a: r = (1, 3) -> rho 0.5 on [1, 3), 1 on [3, 4]: area 1 + 1 = 2, score 2/3.
    # b: r = (1.5, 1) -> rho 0.5 on [1, 1.5), 1 after: area 0.25 + 2.5 = 2.75, score 0.91667.
    # c: r = (inf, 4) -> rho 0 until 4: score 0.
    times = {"a": {"w": 10, "v": 30}, "b": {"w": 15, "v": 10}, "c": {"w": INF, "v": 40}}
    ratios = scoring.performance_ratios(times)
    assert ratios["a"] == {"w": 1.0, "v": 3.0}
    assert ratios["c"]["w"] == INF
    assert scoring.profile(ratios["a"], [1.0, 2.9, 3.0, 4.0]) == [0.5, 0.5, 1.0, 1.0]
    result = scoring.scores(times)
    assert result["a"] == pytest.approx(2 / 3, abs=1e-3)
    assert result["b"] == pytest.approx(2.75 / 3, abs=1e-3)
    assert result["c"] == pytest.approx(0.0, abs=1e-3)


def test_a_workload_no_entry_reaches_counts_against_everyone():
    result = scoring.scores({"a": {"w": 10, "v": INF}, "b": {"w": 20, "v": INF}})
    assert result["a"] == pytest.approx(0.5)
    assert result["b"] == pytest.approx(1 / 3, abs=1e-3)


def test_times_must_be_positive_and_the_grid_long_enough():
    with pytest.raises(ValueError, match="times"):
        scoring.scores({"a": {"w": 0}})
    with pytest.raises(ValueError, match="points"):
        scoring.tau_grid(1)
    assert len(scoring.tau_grid()) >= 1000
