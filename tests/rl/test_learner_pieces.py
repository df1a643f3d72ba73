"""The learner connector pieces on hand-built batches (no Ray, no env)."""

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from vla_rl.rl.learner import (
    ENV_REWARDS,
    EpisodeOutcomes,
    GroupAdvantages,
    RewardModelRelabel,
    ShuffledAdvantages,
)


class _ScoreIsFirstPixel:
    """A stand-in reward model: the reward of a frame is its first pixel, so every row is traceable."""

    def __init__(self):
        self.calls = []

    def reward(self, batch):
        self.calls.append(batch)
        return batch["image"].reshape(len(batch["image"]), -1)[:, 0].astype(np.float32) / 10.0


def _relabel(mask, env_rewards):
    piece = RewardModelRelabel.__new__(RewardModelRelabel)  # skip loading a model from disk
    piece.model = _ScoreIsFirstPixel()
    n = len(mask)
    image = torch.zeros(n, 4, 4, 3, dtype=torch.uint8)
    image[:, 0, 0, 0] = torch.arange(1, n + 1, dtype=torch.uint8)  # row i's frame scores (i + 1) / 10
    batch = {"default_policy": {
        Columns.OBS: {"image": image, "instruction": torch.zeros(n, 8, dtype=torch.int64)},
        Columns.LOSS_MASK: torch.tensor(mask, dtype=torch.bool),
        Columns.REWARDS: torch.tensor(env_rewards, dtype=torch.float32)}}
    return piece, piece(rl_module=None, batch=batch, episodes=[])["default_policy"]


def test_each_row_gets_the_score_of_the_frame_its_action_led_to():
    # Two episode chunks, each closed by RLlib's masked bootstrap row: rows 0-2 | 3 (bootstrap) | 4-5 | 6 (bootstrap).
    mask = [1, 1, 1, 0, 1, 1, 0]
    env = [0.5, 0.25, 1.0, 0.0, 2.0, 3.0, 0.0]
    piece, out = _relabel(mask, env)
    assert torch.allclose(out[Columns.REWARDS], torch.tensor([0.2, 0.3, 0.4, 0.0, 0.6, 0.7, 0.0]))
    assert torch.equal(out[ENV_REWARDS], torch.tensor(env))  # the ground truth kept for audit
    assert len(piece.model.calls) == 1 and len(piece.model.calls[0]["image"]) == 7  # one batched call


def test_bootstrap_rows_keep_zero_reward_even_when_their_frame_scores_high():
    _, out = _relabel([1, 0], [7.0, 9.0])
    assert torch.allclose(out[Columns.REWARDS], torch.tensor([0.2, 0.0]))
    assert out[ENV_REWARDS].tolist() == [7.0, 9.0]


def _episode(rewards, group_seed, done):
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    n = len(rewards)
    return SingleAgentEpisode(observations=[np.zeros(1, np.float32)] * (n + 1), actions=[0] * n, rewards=list(rewards),
                              infos=[{"group_seed": group_seed}] + [{}] * n, terminated=done, len_lookback_buffer=0)


def test_group_advantages_replace_gae_per_episode_from_the_batch_rewards():
    from ray.rllib.evaluation.postprocessing import Postprocessing
    from ray.rllib.utils.postprocessing.episodes import (
        add_one_ts_to_episodes_and_truncate,
    )

    # Two episodes of group 7 (returns 2 and 0), one alone in group 9, one cut at the rollout boundary.
    episodes = [_episode([1.0, 1.0], 7, True), _episode([0.0, 0.0, 0.0], 7, True), _episode([5.0], 9, True),
                _episode([4.0, 4.0], -1, False)]
    shared = {}
    EpisodeOutcomes()(rl_module=None, batch={}, episodes=episodes, shared_data=shared)
    add_one_ts_to_episodes_and_truncate(episodes)  # what the PPO pipeline does next: one bootstrap row per chunk
    rows = [3, 4, 2, 3]
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 4.0, 4.0, 0.0])
    batch = {"default_policy": {Columns.REWARDS: rewards, Postprocessing.ADVANTAGES: torch.full((12,), 9.0)}}
    out = GroupAdvantages()(rl_module=None, batch=batch, episodes=episodes, shared_data=shared)
    expected = torch.tensor([1.0] * rows[0] + [-1.0] * rows[1] + [0.0] * rows[2] + [0.0] * rows[3])
    assert torch.equal(out["default_policy"][Postprocessing.ADVANTAGES], expected)


def test_the_shuffle_control_permutes_loss_rows_only():
    from ray.rllib.evaluation.postprocessing import Postprocessing

    adv = torch.arange(8, dtype=torch.float32)
    mask = torch.tensor([1, 1, 1, 0, 1, 1, 1, 0], dtype=torch.bool)
    batch = {"default_policy": {Postprocessing.ADVANTAGES: adv.clone(), Columns.LOSS_MASK: mask}}
    out = ShuffledAdvantages(seed=0)(rl_module=None, batch=batch, episodes=[])["default_policy"][Postprocessing.ADVANTAGES]
    assert out[3] == 3 and out[7] == 7  # bootstrap rows untouched
    assert sorted(out[mask].tolist()) == sorted(adv[mask].tolist()) and not torch.equal(out, adv)
