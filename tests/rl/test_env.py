"""The env stack of the RL loop: bins → chunks, the RL reward (every success outreturns every failure
under "shaped"; the dense trap exists), and reproducible, restorable episode seeds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs import EnvOptions, ScriptedExpert, get_family
from envs.errors import ActionError
from vla_rl.policy import ActionTokenizer
from vla_rl.rl.env import (
    FIRST_EPISODE,
    GROUP_SEED,
    RLEnvSettings,
    RLRewardWrapper,
    build_rl_env,
    make_rl_env,
    mark_first_episodes,
    queue_group_seeds,
    seed_states,
    set_seed_states,
)


class ScriptedRewards(gym.Env):
    """A stand-in task: returns the given per-step rewards, succeeds at step `success_at` (1-based)."""

    observation_space = gym.spaces.Box(0, 1, (1,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def __init__(self, rewards, success_at=None, horizon=10):
        self.rewards, self.success_at = rewards, success_at
        self.options, self.max_episode_steps = EnvOptions(), horizon

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1), {}

    def step(self, action):
        self.t += 1
        success = self.t == self.success_at
        return (np.zeros(1), self.rewards[self.t - 1], success, self.t >= self.max_episode_steps and not success,
                {"success": success, "gt_reward": self.rewards[self.t - 1]})


def episode_return(env) -> float:
    env.reset()
    total, done = 0.0, False
    while not done:
        _, r, term, trunc, _ = env.step(np.zeros(1))
        total, done = total + r, term or trunc
    return total


@pytest.mark.parametrize("reward_max", [10.0, 1.0])
def test_shaped_reward_ranks_every_success_above_every_failure_and_dense_does_not(reward_max):
    hover = [0.99 * reward_max] * 10  # a near-miss that hovers by the goal for the whole episode
    quick = [0.0] * 10  # a success at the first step, having collected nothing
    fail = lambda mode: episode_return(RLRewardWrapper(ScriptedRewards(hover), mode, reward_max))  # noqa: E731
    succeed = lambda mode: episode_return(RLRewardWrapper(ScriptedRewards(quick, 1), mode, reward_max))  # noqa: E731
    assert succeed("dense") < fail("dense")  # the trap the RL issue found
    assert succeed("shaped") > fail("shaped")
    assert fail("shaped") == pytest.approx(0.99)  # failures return at most 1
    assert (succeed("sparse"), fail("sparse")) == (1.0, 0.0)


def test_on_a_real_task_expert_successes_outreturn_random_failures():
    env_id = "tabletop/push-to-target"
    tok = ActionTokenizer((-1.0, -1.0), (1.0, 1.0))
    opts = EnvOptions(image_size=32, max_episode_steps=40)
    env = build_rl_env(env_id, opts, tok, chunk_size=1, reward="shaped", seed=0)
    expert, rng = ScriptedExpert(env.unwrapped), np.random.default_rng(0)
    successes, failures = [], []
    for policy in ("expert",) * 3 + ("random",) * 3:
        env.reset()
        total, done, success = 0.0, False, False
        while not done:
            action = expert.act() if policy == "expert" else rng.uniform(-1, 1, 2)
            _, r, term, trunc, info = env.step(tok.to_bins(np.asarray(action)[None]).reshape(-1))
            total, done, success = total + r, term or trunc, success or info["success"]
        (successes if success else failures).append(total)
    env.close()
    assert successes and failures
    assert min(successes) > max(failures)
    assert get_family("tabletop").reward_max == 1.0 and get_family("metaworld").reward_max == 10.0


def test_bins_decode_through_the_policys_tokenizer_and_bad_actions_are_refused():
    tok = ActionTokenizer((-1.0, -0.5), (1.0, 0.5))
    env = build_rl_env("tabletop/touch-color", EnvOptions(image_size=32), tok, chunk_size=2, reward="shaped", seed=0)
    assert env.action_space == gym.spaces.MultiDiscrete([256] * 4)
    bins = np.array([0, 255, 128, 7])
    np.testing.assert_array_equal(env.action(bins), tok.from_bins(bins.reshape(2, 2)))
    with pytest.raises(ActionError, match="shape"):
        env.action(np.zeros(3, dtype=int))
    with pytest.raises(ActionError, match="bins must lie"):
        env.action(np.array([0, 256, 0, 0]))
    env.close()


def test_episode_seeds_come_from_the_env_and_restore_exactly():
    tok = ActionTokenizer((-1.0, -1.0), (1.0, 1.0))
    make = lambda seed: build_rl_env("tabletop/touch-color", EnvOptions(image_size=32), tok, 1, "shaped", seed)  # noqa: E731
    vec = gym.vector.SyncVectorEnv([lambda: make(1), lambda: make(2)])
    first = vec.reset(seed=123)[0]["state"]  # RLlib's seed is ignored: the env's own stream decides
    saved = seed_states(vec)
    second = vec.reset()[0]["state"]
    assert not np.array_equal(first, second) and not np.array_equal(second[0], second[1])
    set_seed_states(vec, saved)
    np.testing.assert_array_equal(vec.reset(seed=999)[0]["state"], second)
    vec.close()


def test_grouped_envs_start_from_one_state_per_group_and_replay_after_a_restore():
    tok = ActionTokenizer((-1.0, -1.0), (1.0, 1.0))
    make = lambda seed: build_rl_env("tabletop/touch-color", EnvOptions(image_size=32), tok, 1, "shaped", seed)  # noqa: E731
    vec = gym.vector.SyncVectorEnv([lambda s=s: make(s) for s in range(4)])
    saved = seed_states(vec)
    queue_group_seeds(vec, 2)
    obs, info = vec.reset()
    state, seeds = obs["state"], info[GROUP_SEED]
    np.testing.assert_array_equal(state[0], state[1])
    np.testing.assert_array_equal(state[2], state[3])
    assert not np.array_equal(state[0], state[2])
    assert seeds[0] == seeds[1] != seeds[2] == seeds[3] and min(seeds) >= 0
    again = vec.reset()  # not queued: each env's own stream, outside any group
    assert list(again[1][GROUP_SEED]) == [-1] * 4 and not np.array_equal(again[0]["state"][0], again[0]["state"][1])
    set_seed_states(vec, saved)  # a resume replays the same groups
    queue_group_seeds(vec, 2)
    np.testing.assert_array_equal(vec.reset()[0]["state"], state)
    with pytest.raises(ValueError, match="groups of 3"):
        queue_group_seeds(vec, 3)
    vec.close()


def _value_targets(env, value: float) -> np.ndarray:
    """Roll one episode of `env` and compute RLlib's GAE value targets (gamma = lambda = 1) for its rows, with a
    critic that predicts `value` everywhere. The row flags mirror RLlib's AddOneTsToEpisodesAndTruncate: each
    episode chunk ends with a masked bootstrap row; its last real row carries terminated, or truncated (= bootstrap
    from the next row's value) when it did not terminate."""
    from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

    env.reset()
    rewards, done = [], False
    while not done:
        _, r, term, trunc, _ = env.step(np.zeros(1))
        rewards.append(r)
        done = term or trunc
    n = len(rewards)
    terminateds = np.array([0.0] * (n - 1) + [float(term), 0.0])
    truncateds = np.array([0.0] * (n - 1) + [float(not term), 0.0])
    targets = compute_value_targets(values=np.full(n + 1, value, np.float32), rewards=np.array(rewards + [0.0]),
                                    terminateds=terminateds, truncateds=truncateds, gamma=1.0, lambda_=1.0)
    return targets[:n]


def test_the_time_limit_ends_the_task_so_an_inflated_critic_cannot_make_timing_out_beat_succeeding():
    hover, quick = [9.9] * 10, [0.0] * 10
    inflated = 5.0  # a critic far above every real return (what bootstrapping with gamma 1 drifted to)
    fail = RLRewardWrapper(ScriptedRewards(hover), "shaped", 10.0)
    fail.reset()
    for _ in range(9):
        assert fail.step(np.zeros(1))[2:4] == (False, False)
    _, _, term, trunc, info = fail.step(np.zeros(1))
    assert (term, trunc, info["time_limit"]) == (True, False, True)  # reported as the task's end

    fail_targets = _value_targets(RLRewardWrapper(ScriptedRewards(hover), "shaped", 10.0), inflated)
    success_targets = _value_targets(RLRewardWrapper(ScriptedRewards(quick, 1), "shaped", 10.0), inflated)
    assert fail_targets[0] == pytest.approx(0.99)  # its true return, whatever the critic says
    assert success_targets[0] == pytest.approx(1.0)
    assert success_targets[0] > fail_targets[0]

    bootstrapped = _value_targets(RLRewardWrapper(ScriptedRewards(hover), "shaped", 10.0, bootstrap_time_limit=True),
                                  inflated)
    assert bootstrapped[0] == pytest.approx(0.99 + inflated)  # the old semantics: the critic's guess is added
    assert bootstrapped[0] > success_targets[0]  # ... and timing out outscores succeeding


@pytest.mark.parametrize("env_id", ["metaworld/drawer-open", "tabletop/touch-color"])
def test_the_privileged_observation_is_the_simulators_state_after_the_whole_chunk(env_id):
    from envs import get_spec
    from vla_rl.rl.env import PRIVILEGED

    spec = get_spec(env_id)
    tok = ActionTokenizer((-1.0,) * spec.action_dim, (1.0,) * spec.action_dim)
    env = build_rl_env(env_id, EnvOptions(image_size=32), tok, 3, "shaped", seed=0, privileged_obs=True)
    plain = build_rl_env(env_id, EnvOptions(image_size=32), tok, 3, "shaped", seed=0)
    backend = env.get_wrapper_attr("backend")
    obs, _ = env.reset()
    ref, _ = plain.reset()
    assert env.observation_space[PRIVILEGED].shape == (backend.privileged_dim + 1,) and PRIVILEGED not in ref
    assert obs[PRIVILEGED][-1] == 1.0  # all of the episode's time left
    assert set(obs) - {PRIVILEGED} == set(ref) and all(np.array_equal(obs[k], ref[k]) for k in ref)
    bins = np.full(env.action_space.shape, 200)
    obs, *_ = env.step(bins)
    ref, *_ = plain.step(bins)
    assert env.observation_space.contains(obs) and obs[PRIVILEGED].dtype == np.float32
    np.testing.assert_array_equal(obs[PRIVILEGED][:-1], backend.privileged_state())  # read after the chunk's 3 steps
    horizon = env.get_wrapper_attr("max_episode_steps")
    assert obs[PRIVILEGED][-1] == np.float32(1 - 3 / horizon)  # the time left after 3 control steps
    np.testing.assert_array_equal(obs["state"], ref["state"])  # the policy's inputs are unchanged
    if env_id.startswith("metaworld"):
        np.testing.assert_array_equal(obs[PRIVILEGED][:-1], backend.raw_obs.astype(np.float32))
        assert obs[PRIVILEGED].shape == (40,)
    else:  # finger, bodies, and the instruction's target one-hot
        np.testing.assert_array_equal(obs[PRIVILEGED][:2], backend.finger_xy.astype(np.float32))
        onehot = obs[PRIVILEGED][-len(spec.instructions) - 1:-1]
        assert onehot.sum() == 1 and spec.instructions[int(onehot.argmax())] == backend.instruction


def test_only_the_reset_after_mark_first_episodes_is_flagged_first():
    tok = ActionTokenizer((-1.0, -1.0), (1.0, 1.0))
    make = lambda seed: build_rl_env("tabletop/touch-color", EnvOptions(image_size=32), tok, 1, "shaped", seed)  # noqa: E731
    vec = gym.vector.SyncVectorEnv([lambda s=s: make(s) for s in range(3)])
    assert list(vec.reset()[1][FIRST_EPISODE]) == [False] * 3
    mark_first_episodes(vec)
    assert list(vec.reset()[1][FIRST_EPISODE]) == [True] * 3
    assert list(vec.reset()[1][FIRST_EPISODE]) == [False] * 3  # an env's second episode of the iteration
    vec.close()


def _episode(first: bool, success_at: int | None, length: int, done: bool = True):
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    infos = [{FIRST_EPISODE: first}] + [{"success": t == success_at, "episode_env_steps": t} for t in range(1, length + 1)]
    return SingleAgentEpisode(observations=list(range(length + 1)), actions=[0] * length, rewards=[0.0] * length,
                              infos=infos, terminated=done, len_lookback_buffer=0)


def test_episode_stats_counts_each_envs_first_episode_not_the_quick_second_ones():
    from vla_rl.rl.algorithm import episode_stats

    # 4 envs, horizon 10: two fail (time limit), two succeed at step 3 and each starts a second episode, which
    # finishes inside the window only when it succeeds quickly too (one did, one was cut at the boundary).
    batch = [_episode(True, None, 10), _episode(True, None, 10), _episode(True, 3, 3), _episode(True, 3, 3),
             _episode(False, 4, 4), _episode(False, None, 7, done=False)]
    s = episode_stats(batch)
    assert (s["episodes"], s["success_rate"]) == (4.0, 0.5)
    assert (s["episodes_all"], s["success_rate_all"]) == (5.0, 0.6)  # the pooled rate over-counts
    assert s["first_episodes_cut"] == 0.0 and s["length"] == (10 + 10 + 3 + 3) / 4 and s["env_steps"] == 37.0
    cut = episode_stats([_episode(True, None, 6, done=False), _episode(True, 2, 2)])
    assert (cut["episodes"], cut["success_rate"], cut["first_episodes_cut"]) == (1.0, 1.0, 1.0)
    # Every env's info names its task; a single-task run still logs no per-task keys (they are --suite/--envs').
    for e in batch:
        e.get_infos(0)["task"] = "metaworld/drawer-open"
    assert set(episode_stats(batch)) == set(s)
    assert "success_rate/metaworld/drawer-open" in episode_stats(batch, per_task=True)


def test_make_rl_env_reads_typed_settings_and_refuses_missing_or_unknown_keys():
    tok = ActionTokenizer((-1.0,) * 2, (1.0,) * 2, 256, 10)
    settings = RLEnvSettings(env_id="tabletop/touch-color", env_options={"image_size": 32},
                             action_tokenizer=tok.to_dict(), chunk_size=2, reward="sparse", seed=3,
                             bootstrap_time_limit=False, privileged_obs=True, envs_per_runner=1, group_size=1)
    env = make_rl_env(settings.as_dict())
    assert RLEnvSettings.of(settings.as_dict()) == settings
    assert env.action_space.nvec.tolist() == [256] * 4  # K=2 chunks of the 2-D action
    assert "privileged" in env.observation_space.spaces
    missing = {k: v for k, v in settings.as_dict().items() if k != "bootstrap_time_limit"}
    with pytest.raises(ValueError, match=r"missing keys \['bootstrap_time_limit'\]"):
        make_rl_env(missing)
    with pytest.raises(ValueError, match=r"unknown keys \['rewards'\]"):
        make_rl_env({**settings.as_dict(), "rewards": "dense"})


def test_the_rl_env_decodes_bins_with_the_policys_own_tokenizer_scheme():
    """An OpenVLA-scheme tokenizer (reversed ids, 255 centres, a mask) reaches the runners' envs whole: the env's
    actions are the tokenizer's own decoding, not the uniform scheme's."""
    tok = ActionTokenizer((-0.5, -1.0), (0.5, 1.0), 256, 10, scheme="openvla", mask=(True, False))
    settings = RLEnvSettings(env_id="tabletop/touch-color", env_options={"image_size": 32},
                             action_tokenizer=tok.to_dict(), chunk_size=1, reward="sparse", seed=3,
                             bootstrap_time_limit=False, privileged_obs=False, envs_per_runner=1, group_size=1)
    env = make_rl_env(settings.as_dict())
    inner = env
    while not hasattr(inner, "tokenizer"):
        inner = inner.env
    assert inner.tokenizer == tok
    bins = np.array([3, 200])
    np.testing.assert_array_equal(inner.action(bins), tok.from_bins(bins.reshape(1, 2)))
    uniform = ActionTokenizer((-0.5, -1.0), (0.5, 1.0), 256, 10)
    assert not np.allclose(inner.action(bins), uniform.from_bins(bins.reshape(1, 2)))  # the scheme changes actions
