"""Bradley–Terry loss, gradients and metrics on hand-built pairs."""

import math

import pytest
import torch

from reward_models.bradley_terry import (
    bt_loss,
    bt_probability,
    expected_calibration_error,
    pairwise_accuracy,
    segment_scores,
)


def test_loss_values_on_hand_built_pairs():
    s0, s1 = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 2.0])
    labels = torch.tensor([0.5, 0.0, 1.0])
    # pair 1: tie at equal scores -> ln 2; pair 2: first better by 1 -> ln(1 + e^-1); pair 3: ln(1 + e^-2)
    expected = (math.log(2) + math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 3
    assert bt_loss(s0, s1, labels).item() == pytest.approx(expected, abs=1e-6)


def test_gradient_pushes_the_preferred_segment_up():
    s0 = torch.tensor([0.3], requires_grad=True)
    s1 = torch.tensor([-0.2], requires_grad=True)
    bt_loss(s0, s1, torch.tensor([1.0])).backward()
    p = torch.sigmoid(torch.tensor(-0.5)).item()
    assert s1.grad.item() == pytest.approx(-(1 - p), abs=1e-6)  # d/dS1 of -log σ(S1-S0)
    assert s0.grad.item() == pytest.approx(1 - p, abs=1e-6)


def test_segment_scores_sum_frames_and_probability_is_symmetric():
    r = torch.tensor([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]])
    assert torch.allclose(segment_scores(r), torch.tensor([0.6, 0.5]))
    a, b = torch.tensor([0.2]), torch.tensor([0.7])
    assert (bt_probability(a, b) + bt_probability(b, a)).item() == pytest.approx(1.0)


def test_accuracy_and_calibration():
    p = torch.tensor([0.9, 0.8, 0.3, 0.6])
    y = torch.tensor([1.0, 0.0, 0.0, 0.5])
    assert pairwise_accuracy(p, y) == pytest.approx(2 / 3)
    # perfectly calibrated: in the 0.75 bin, 3 of 4 second-better
    p2 = torch.full((4,), 0.75)
    assert expected_calibration_error(p2, torch.tensor([1.0, 1.0, 1.0, 0.0])) == pytest.approx(0.0, abs=1e-9)
    assert expected_calibration_error(p2, torch.tensor([1.0, 1.0, 1.0, 1.0])) == pytest.approx(0.25, abs=1e-9)
