"""experiments/reward_model_quality.py: the AUC and the quality figures on hand-built episodes."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "experiments" / "reward_model_quality.py"
spec = importlib.util.spec_from_file_location("reward_model_quality", PATH)
rmq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rmq)


def test_auc_counts_pairs_above_and_ties_half():
    assert rmq.auc(np.array([3.0, 1.0]), np.array([2.0, 1.0])) == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert np.isnan(rmq.auc(np.array([]), np.array([1.0])))


def _episode(progress, success):
    p = np.asarray(progress, np.float64)
    return SimpleNamespace(image=np.zeros((len(p), 4, 4, 3), np.uint8), instruction=np.zeros(8, np.int32),
                           progress=p, success=np.array([False] * (len(p) - 1) + [success]))


class ShiftedProgress:
    """A reward model that ranks frames within an episode perfectly but adds a per-episode offset."""

    def __init__(self, offsets):
        self.offsets, self.calls, self.progress = list(offsets), 0, None

    def reward(self, obs):
        r = self.progress[self.calls] + self.offsets[self.calls]
        self.calls += 1
        return r


def test_quality_separates_within_episode_ranking_from_outcome_separation():
    episodes = [_episode([0.1, 0.5, 1.0], True), _episode([0.2, 0.4, 0.6], False)]
    model = ShiftedProgress([0.0, 1.0])  # the failure gets +1 on every frame: ranks within, inverts between
    model.progress = [ep.progress for ep in episodes]
    q = rmq.quality(model, episodes)
    assert q["spearman_within"] == pytest.approx(1.0)
    assert q["success_auc_last"] == 0.0 and q["success_auc_mean"] == 0.0  # 1.0 < 1.6, 0.53 < 1.4
    assert q["pearson_frames"] < 0.5
    reference = rmq.quality(rmq._Progress(), episodes)
    assert reference["pearson_frames"] == pytest.approx(1.0) and reference["success_auc_last"] == 1.0
