"""A reward model's rewards are written onto the RLlib episodes once per batch, in the driver: the reward of step t is
the model's score of observation t + 1 (the frame the action led to), and the audit reads the same scores."""

import warnings

import numpy as np
import pytest
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from envs.instruction import encode_instruction
from reward_models.scoring import score_frames, spearman_vs_progress
from vla_rl.base.errors import ConfigError
from vla_rl.rl.episodes import LearnedRewardSettings, episode_frames, write_model_rewards
from vla_rl.train_config import TrainConfig

SCORE = LearnedRewardSettings(scale=1.0, form="score", gamma=0.99)  # gamma plays no part in "score"


class BrightnessModel:
    """A reward model whose score of a frame is its mean pixel / 255 (exact, so the test can check each reward)."""

    def __init__(self):
        self.calls = 0

    def reward(self, obs):
        self.calls += 1
        return np.asarray(obs["image"], dtype=np.float64).mean(axis=(1, 2, 3)) / 255.0


def _episode(levels, env_rewards, t_started=0):
    n = len(env_rewards)
    images = [np.full((8, 8, 3), level, np.uint8) for level in levels]
    instr = encode_instruction("open the drawer", 32)
    obs = [{"image": im, "instruction": instr} for im in images]
    e = SingleAgentEpisode(observations=obs, actions=[0] * n, rewards=list(env_rewards),
                           infos=[{"progress": level / 255} for level in levels], len_lookback_buffer=0,
                           t_started=t_started)
    return e.to_numpy()


def test_each_step_gets_the_score_of_the_frame_it_led_to_and_the_batch_is_scored_once():
    episodes = [_episode([0, 51, 102, 255], [0.1, 0.2, 1.0]), _episode([153, 204], [0.5], t_started=7)]
    episodes[1].rewards.data.setflags(write=False)  # as a remote runner's episodes arrive (unpickled)
    model = BrightnessModel()
    frames = episode_frames(episodes, "rollout:iteration 1")
    scores = score_frames(model, frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no framework warning reaches the user (gym's cast of RLlib's space check)
        metrics = write_model_rewards(episodes, scores, SCORE)
    assert model.calls == 1
    np.testing.assert_allclose(episodes[0].get_rewards(), [0.2, 0.4, 1.0], atol=1e-6)
    np.testing.assert_allclose(episodes[1].get_rewards(), [0.8], atol=1e-6)
    learned, env = np.array([0.2, 0.4, 1.0, 0.8]), np.array([0.1, 0.2, 1.0, 0.5])
    assert metrics["reward/learned_mean"] == pytest.approx(learned.mean(), abs=1e-6)
    assert metrics["reward/gt_mean"] == pytest.approx(env.mean())
    assert metrics["reward/gt_corr"] == pytest.approx(np.corrcoef(learned, env)[0, 1], abs=1e-5)
    assert spearman_vs_progress(scores, frames) == pytest.approx(1.0)  # brightness is the progress here


def test_scores_that_do_not_fit_an_episode_are_refused():
    e = _episode([0, 51, 102], [0.0, 0.0])
    with pytest.raises(ValueError, match="2 steps has 2 scored frames; expected 3"):
        write_model_rewards([e], [np.zeros(2, np.float32)], SCORE)


def test_reward_scale_multiplies_the_written_rewards_and_their_monitor():
    episodes = [_episode([0, 51, 102, 255], [0.1, 0.2, 1.0])]
    scores = score_frames(BrightnessModel(), episode_frames(episodes, "rollout"))
    metrics = write_model_rewards(episodes, scores, LearnedRewardSettings(0.025, "score", 0.99))
    np.testing.assert_allclose(episodes[0].get_rewards(), [0.005, 0.01, 0.025], atol=1e-7)
    assert metrics["reward/learned_mean"] == pytest.approx(np.mean([0.005, 0.01, 0.025]), abs=1e-7)


def test_a_reward_scale_without_a_learned_reward_or_out_of_range_is_refused():
    TrainConfig(policy="p", reward="model", reward_model="rm", reward_scale=0.025).validate()
    with pytest.raises(ConfigError, match=r"reward_scale=0.5 scales learned rewards only"):
        TrainConfig(policy="p", reward_scale=0.5).validate()
    with pytest.raises(ConfigError, match=r"reward_scale=0.0 is out of range"):
        TrainConfig(policy="p", reward="model", reward_model="rm", reward_scale=0.0).validate()


def test_delta_rewards_pay_the_discounted_change_of_the_score_and_sum_to_the_end_minus_the_start():
    episodes = [_episode([0, 51, 102, 255], [0.1, 0.2, 1.0]), _episode([153, 204], [0.5], t_started=7)]
    scores = score_frames(BrightnessModel(), episode_frames(episodes, "rollout"))
    write_model_rewards(episodes, scores, LearnedRewardSettings(2.0, "delta", 0.9))
    s = np.array([0, 51, 102, 255]) / 255
    np.testing.assert_allclose(episodes[0].get_rewards(), 2.0 * (0.9 * s[1:] - s[:-1]), atol=1e-6)
    np.testing.assert_allclose(episodes[1].get_rewards(), [2.0 * (0.9 * 0.8 - 0.6)], atol=1e-6)
    # With gamma 1 the return telescopes: the last frame's score minus the first's, whatever the frames between.
    e = _episode([10, 240, 0, 90], [0.0, 0.0, 0.0])
    write_model_rewards([e], score_frames(BrightnessModel(), episode_frames([e], "r")), LearnedRewardSettings(1.0, "delta", 1.0))
    assert float(np.sum(e.get_rewards())) == pytest.approx((90 - 10) / 255, abs=1e-6)


def test_gain_rewards_pay_the_score_over_the_episodes_first_frame_and_refuse_a_chunk_that_starts_mid_episode():
    episodes = [_episode([51, 51, 102, 255], [0.1, 0.2, 1.0])]
    scores = score_frames(BrightnessModel(), episode_frames(episodes, "rollout"))
    write_model_rewards(episodes, scores, LearnedRewardSettings(2.0, "gain", 0.9))
    s = np.array([51, 51, 102, 255]) / 255
    np.testing.assert_allclose(episodes[0].get_rewards(), 2.0 * (s[1:] - s[0]), atol=1e-6)  # 0, 0.4, 1.6
    late = [_episode([153, 204], [0.5], t_started=7)]  # its first frame was scored in an earlier batch
    with pytest.raises(ConfigError, match=r"learned_reward=gain: .*starts at its step 7.*rollout_length a multiple"):
        write_model_rewards(late, score_frames(BrightnessModel(), episode_frames(late, "r")),
                            LearnedRewardSettings(1.0, "gain", 0.99))


def test_a_delta_learned_reward_with_the_env_reward_or_an_unknown_form_is_refused():
    TrainConfig(policy="p", reward="model", reward_model="rm", learned_reward="delta").validate()
    with pytest.raises(ConfigError, match=r"learned_reward='delta' shapes learned rewards only"):
        TrainConfig(policy="p", learned_reward="delta").validate()
    with pytest.raises(ConfigError, match=r"learned_reward"):
        TrainConfig(policy="p", reward="model", reward_model="rm", learned_reward="levels").validate()
    with pytest.raises(ValueError, match="learned reward form 'levels'"):
        LearnedRewardSettings(1.0, "levels", 0.99)


def test_the_run_relabels_with_the_settings_of_its_train_config():
    """The path that runs: TrainConfig -> LearnedRewardSettings -> VLAPPO._relabel -> the episodes' rewards."""
    from types import SimpleNamespace

    from vla_rl.rl.algorithm import VLAPPO

    cfg = TrainConfig(policy="p", reward="model", reward_model="rm", learned_reward="delta", gamma=0.9,
                      reward_scale=2.0)
    settings = LearnedRewardSettings.from_train_config(cfg)
    assert settings == LearnedRewardSettings(scale=2.0, form="delta", gamma=0.9)
    episodes = [_episode([0, 51, 102, 255], [0.1, 0.2, 1.0])]
    algo = SimpleNamespace(reward_settings=settings, preference=None)  # what use_reward_model sets, nothing else
    metrics = VLAPPO._relabel(algo, episodes, episode_frames(episodes, "rollout"), BrightnessModel())
    s = np.array([0, 51, 102, 255]) / 255
    np.testing.assert_allclose(episodes[0].get_rewards(), 2.0 * (0.9 * s[1:] - s[:-1]), atol=1e-6)
    assert "perf/time_reward_score" in metrics and "reward_model/spearman_vs_progress" not in metrics
