"""Scripted preference teachers with the B-Pref noise models (Lee et al., 2021).

Each teacher labels a pair from the segments' privileged per-step ground truth, in B-Pref's order:
myopic discounting -> skip -> equal -> stochastic (Boltzmann with rationality β) -> mistake (flip
with probability ε, applied once). Thresholds δ_skip / δ_equal are fractions of a reference
segment return (the mean |return| of the batch, as B-Pref uses recent returns).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

ABSTAIN = -1.0  # label value meaning "no label" (skip); ties are 0.5


@dataclass(frozen=True)
class TeacherConfig:
    beta: float = math.inf  # rationality; inf = always the better segment
    gamma: float = 1.0  # myopia: weight of step t in an H-step segment is γ^(H-1-t)
    eps_mistake: float = 0.0  # probability of flipping a label
    skip_fraction: float = 0.0  # skip when both returns < this fraction of the reference return
    equal_fraction: float = 0.0  # tie when |R0 - R1| < this fraction of the reference return

    def as_dict(self) -> dict:
        d = asdict(self)
        d["beta"] = "inf" if math.isinf(self.beta) else self.beta
        return d


TEACHERS: dict[str, TeacherConfig] = {
    "oracle": TeacherConfig(),
    "noisy": TeacherConfig(beta=1.0),
    "mistake": TeacherConfig(eps_mistake=0.1),
    "skip": TeacherConfig(skip_fraction=0.1),
    "myopic": TeacherConfig(gamma=0.9),
    "equal": TeacherConfig(equal_fraction=0.1),
}


def segment_returns(rewards: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """(N, H) per-step ground truth -> (N,) returns Σ_t γ^(H-1-t) r_t."""
    rewards = np.asarray(rewards, dtype=np.float64)
    h = rewards.shape[-1]
    weights = gamma ** np.arange(h - 1, -1, -1, dtype=np.float64)
    return rewards @ weights


def teacher_labels(gt_first: np.ndarray, gt_second: np.ndarray, cfg: TeacherConfig, rng: np.random.Generator,
                   reference: float | None = None) -> np.ndarray:
    """Labels (0 first better, 1 second better, 0.5 tie, -1 abstain) for (N, H) ground-truth segments."""
    r0, r1 = segment_returns(gt_first, cfg.gamma), segment_returns(gt_second, cfg.gamma)
    if reference is None:
        reference = float(np.mean(np.abs(np.concatenate([r0, r1])))) if r0.size else 0.0
    n = r0.shape[0]
    labels = np.empty(n, dtype=np.float64)
    if math.isinf(cfg.beta):
        labels[:] = (r1 > r0).astype(np.float64)
        labels[r1 == r0] = 0.5
    else:
        p_second = 1.0 / (1.0 + np.exp(-cfg.beta * (r1 - r0)))
        labels[:] = (rng.random(n) < p_second).astype(np.float64)
    flip = rng.random(n) < cfg.eps_mistake
    decided = labels != 0.5
    labels[flip & decided] = 1.0 - labels[flip & decided]
    if cfg.equal_fraction > 0:
        labels[np.abs(r1 - r0) < cfg.equal_fraction * reference] = 0.5
    if cfg.skip_fraction > 0:
        labels[np.maximum(r0, r1) < cfg.skip_fraction * reference] = ABSTAIN
    return labels
