"""Bradley–Terry preference math as pure functions (RL-VLM-F / PEBBLE).

A segment's score is the sum of its per-frame rewards; P[second ≻ first] = σ(S₁ − S₀). Labels are
0 (first better), 1 (second better) or 0.5 (tie: a soft target). Abstained pairs never reach here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segment_scores(frame_rewards: torch.Tensor) -> torch.Tensor:
    """(..., T) per-frame rewards -> (...) segment scores Σ_t r̂(x_t)."""
    return frame_rewards.sum(-1)


def preference_logits(score_first: torch.Tensor, score_second: torch.Tensor) -> torch.Tensor:
    """logit of P[second ≻ first] = S₁ − S₀."""
    return score_second - score_first


def bt_loss(score_first: torch.Tensor, score_second: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of soft labels y ∈ [0, 1] (y = P[second better]) under Bradley–Terry."""
    return F.binary_cross_entropy_with_logits(preference_logits(score_first, score_second), labels.to(score_first.dtype))


def bt_probability(score_first: torch.Tensor, score_second: torch.Tensor) -> torch.Tensor:
    """P[second ≻ first]."""
    return torch.sigmoid(preference_logits(score_first, score_second))


def pairwise_accuracy(prob_second: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of non-tie pairs where the model prefers the labelled segment."""
    decided = labels != 0.5
    if not bool(decided.any()):
        return float("nan")
    return float(((prob_second[decided] > 0.5) == (labels[decided] > 0.5)).float().mean())


def expected_calibration_error(prob_second: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> float:
    """ECE of the predicted preference probability against hard labels (ties excluded), `bins` equal-width bins."""
    decided = labels != 0.5
    p, y = prob_second[decided].double(), (labels[decided] > 0.5).double()
    if p.numel() == 0:
        return float("nan")
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    idx = torch.clamp(torch.bucketize(p, edges[1:-1]), 0, bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.double().mean() * (p[sel].mean() - y[sel].mean()).abs()
    return float(ece)
