"""The learning-rate schedule and the run's budget (charrnn/training/schedule.py): pure functions."""

import math

import pytest

from charrnn.config import TrainConfig
from charrnn.training.schedule import budget_fraction, learning_rate, total_steps


def test_total_steps_is_the_tighter_of_steps_and_epochs():
    assert total_steps(TrainConfig(max_steps=100), windows_per_epoch=30) == 100
    assert total_steps(TrainConfig(max_epochs=2.5), windows_per_epoch=30) == 75
    assert total_steps(TrainConfig(max_steps=100, max_epochs=2.5), windows_per_epoch=30) == 75
    assert total_steps(TrainConfig(max_epochs=0.01), windows_per_epoch=30) == 1  # rounded up, never 0
    assert total_steps(TrainConfig(max_time=60.0), windows_per_epoch=30) is None


def test_budget_fraction_takes_the_further_of_steps_and_time_and_stops_at_one():
    config = TrainConfig(max_steps=100, max_time=60.0)
    assert budget_fraction(config, 0, 0.0, 100) == 0.0
    assert budget_fraction(config, 25, 30.0, 100) == 0.5  # time is further along
    assert budget_fraction(config, 80, 30.0, 100) == 0.8  # steps are
    assert budget_fraction(config, 200, 300.0, 100) == 1.0
    assert budget_fraction(TrainConfig(), 10, 5.0, None) == 0.0  # no bound of either kind yet


def test_the_rate_warms_up_linearly_then_decays_by_a_cosine_to_its_floor():
    config = TrainConfig(lr=1e-2, warmup_steps=10, min_lr_frac=0.1)
    assert learning_rate(config, 0, 0.0) == pytest.approx(1e-3)
    assert learning_rate(config, 4, 0.0) == pytest.approx(5e-3)
    assert learning_rate(config, 9, 0.0) == pytest.approx(1e-2)  # warm from step 9 on
    assert learning_rate(config, 500, 0.5) == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5))
    assert learning_rate(config, 1000, 1.0) == pytest.approx(1e-3)  # the floor at the budget's end
    rates = [learning_rate(config, 100, f / 20) for f in range(21)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_the_plateau_rules_scale_multiplies_the_rate_and_no_warmup_is_full_rate():
    config = TrainConfig(lr=4e-3, warmup_steps=0, min_lr_frac=1.0)
    assert learning_rate(config, 0, 0.3) == pytest.approx(4e-3)
    assert learning_rate(config, 0, 0.3, scale=0.25) == pytest.approx(1e-3)
    assert math.isclose(learning_rate(config, 7, 0.9), learning_rate(config, 70, 0.1))  # flat without decay
