"""B-Pref teachers: each noise model's statistics over many pairs."""

import numpy as np
import pytest

from reward_models.teachers import (
    ABSTAIN,
    TEACHERS,
    TeacherConfig,
    segment_returns,
    teacher_labels,
)

N = 20_000


def _pairs(seed=0, h=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (N, h)), rng.uniform(0, 1, (N, h))


def _truth(a, b, gamma=1.0):
    return (segment_returns(b, gamma) > segment_returns(a, gamma)).astype(float)


def test_oracle_is_always_right():
    a, b = _pairs()
    labels = teacher_labels(a, b, TEACHERS["oracle"], np.random.default_rng(0))
    np.testing.assert_array_equal(labels, _truth(a, b))


def test_mistake_teacher_flips_ten_percent():
    a, b = _pairs()
    labels = teacher_labels(a, b, TEACHERS["mistake"], np.random.default_rng(1))
    assert np.mean(labels != _truth(a, b)) == pytest.approx(0.10, abs=0.01)


def test_noisy_teacher_follows_the_boltzmann_probability():
    a, b = _pairs()
    labels = teacher_labels(a, b, TEACHERS["noisy"], np.random.default_rng(2))
    diff = (b - a)[:, 0]
    close = np.abs(diff) < 0.05  # near-equal returns: a coin flip
    assert labels[close].mean() == pytest.approx(0.5, abs=0.04)
    big = diff > 0.8  # P(second) = σ(β·Δ) >= σ(0.8) ≈ 0.69
    assert labels[big].mean() == pytest.approx(np.mean(1 / (1 + np.exp(-diff[big]))), abs=0.04)


def test_skip_and_equal_thresholds_are_relative_to_the_mean_return():
    a, b = _pairs()
    ref = np.mean(np.abs(np.concatenate([a[:, 0], b[:, 0]])))
    skip = teacher_labels(a, b, TEACHERS["skip"], np.random.default_rng(3))
    np.testing.assert_array_equal(skip == ABSTAIN, np.maximum(a, b)[:, 0] < 0.1 * ref)
    equal = teacher_labels(a, b, TEACHERS["equal"], np.random.default_rng(4))
    np.testing.assert_array_equal(equal == 0.5, np.abs(a - b)[:, 0] < 0.1 * ref)


def test_myopic_teacher_weights_recent_steps_more():
    first = np.array([[1.0, 0.0, 0.0]])  # early progress
    second = np.array([[0.0, 0.0, 0.95]])  # later, slightly less in total
    assert teacher_labels(first, second, TEACHERS["oracle"], np.random.default_rng(0))[0] == 0.0
    assert teacher_labels(first, second, TEACHERS["myopic"], np.random.default_rng(0))[0] == 1.0
    assert segment_returns(first, 0.9)[0] == pytest.approx(0.81)


def test_mistakes_are_applied_once():
    a, b = _pairs()
    cfg = TeacherConfig(eps_mistake=0.3)
    labels = teacher_labels(a, b, cfg, np.random.default_rng(5))
    assert np.mean(labels != _truth(a, b)) == pytest.approx(0.3, abs=0.015)  # not 0.42 (= 2·0.3·0.7)
