import gymnasium as gym
import numpy as np
import pytest
from env_ids import CONTRACT_IDS

from envs import PRIVILEGED_INFO_KEYS, decode_instruction, list_specs


@pytest.mark.parametrize("env_id", CONTRACT_IDS)
def test_observation_contract(make, env_id):
    env = make(env_id, image_size=48)
    obs, info = env.reset(seed=0)
    assert set(obs) == {"image", "state", "instruction"}
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (48, 48, 3)
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (env.task_spec.state_dim,)
    assert obs["instruction"].dtype == np.int64 and obs["instruction"].shape == (64,)
    assert env.observation_space.contains(obs)
    assert decode_instruction(obs["instruction"]) == info["instruction"]
    assert info["instruction"] in env.task_spec.instructions
    for key in ("success", *PRIVILEGED_INFO_KEYS):
        assert key in info
    assert 0.0 <= info["progress"] <= 1.0
    assert obs["image"].std() > 0, "rendered frame is blank"
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert isinstance(reward, float) and np.isfinite(reward)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)


@pytest.mark.parametrize("env_id", CONTRACT_IDS)
def test_same_seed_same_frames_and_states(make, env_id):
    a, b = make(env_id), make(env_id)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, a.task_spec.action_dim)).astype(np.float32)
    runs = []
    for env in (a, b):
        obs, _ = env.reset(seed=7)
        frames, states = [obs["image"]], [obs["state"]]
        for act in actions:
            obs, *_ = env.step(act)
            frames.append(obs["image"])
            states.append(obs["state"])
        runs.append((np.stack(frames), np.stack(states)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    other, _ = a.reset(seed=8)
    assert not np.array_equal(other["image"], runs[0][0][0]), "different seeds gave the same initial frame"


@pytest.mark.parametrize("env_id", ["tabletop/push-to-target", "metaworld/drawer-open"])
def test_wrong_action_size_and_nan_are_rejected(make, env_id):
    env = make(env_id)
    env.reset(seed=0)
    d = env.task_spec.action_dim
    with pytest.raises(ValueError, match=rf"shape \({d + 1},\).*expects \({d},\)"):
        env.step(np.zeros(d + 1, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(d, np.nan, dtype=np.float32))


def test_actions_are_clipped_to_unit_box(make):
    a, b = make("tabletop/touch-color"), make("tabletop/touch-color")
    a.reset(seed=1)
    b.reset(seed=1)
    oa, *_ = a.step(np.array([5.0, -9.0]))
    ob, *_ = b.step(np.array([1.0, -1.0]))
    np.testing.assert_array_equal(oa["state"], ob["state"])


def test_time_limit_and_action_repeat(make):
    env = make("tabletop/touch-color", max_episode_steps=3, action_repeat=2, terminate_on_success=False)
    env.reset(seed=0)
    start = env.backend.finger_xy
    flags = [env.step(np.array([0.0, 1.0]))[3] for _ in range(3)]
    assert flags == [False, False, True]
    moved = env.backend.finger_xy - start
    assert moved[1] == pytest.approx(min(6 * 0.015, 0.2 - start[1]), abs=1e-9)


@pytest.mark.parametrize("env_id", ["tabletop/touch-color", "metaworld/button-press"])
def test_sparse_reward_is_success(make, env_id):
    """1.0 exactly on the step that succeeds (the episode then terminates), 0.0 on every other step."""
    from envs.collect import rollout_expert
    from envs.experts import ScriptedExpert

    env = make(env_id, reward_type="sparse", image_size=32)
    episode = rollout_expert(env, ScriptedExpert(env), seed=0)
    assert episode.succeeded and episode.success[-1] and not episode.success[:-1].any()
    np.testing.assert_array_equal(episode.reward, np.eye(episode.length, dtype=np.float32)[-1])
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.zeros(env.action_space.shape))
    assert reward == float(info["success"]) == float(terminated) == 0.0


def test_unknown_env_id_suggests_close_match():
    from envs import make_env

    with pytest.raises(KeyError, match="did you mean.*tabletop/touch-color"):
        make_env("tabletop/touch-colour")


def test_registry_lists_all_50_metaworld_tasks_and_gym_make_works():
    specs = list_specs()
    assert sum(s.family == "metaworld" for s in specs) == 50
    assert sum(s.family == "tabletop" for s in specs) == 4
    env = gym.make("vla_rl/tabletop.off-center", image_size=32)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3)
    env.close()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_vector_env_batches_the_contract(asynchronous):
    from envs import EnvOptions, make_vector_env

    venv = make_vector_env("tabletop/touch-color", 2, EnvOptions(image_size=32), asynchronous=asynchronous)
    obs, info = venv.reset(seed=[0, 1])
    assert obs["image"].shape == (2, 32, 32, 3) and obs["instruction"].shape == (2, 64)
    obs, reward, term, trunc, info = venv.step(np.zeros((2, 2), dtype=np.float32))
    assert reward.shape == (2,) and "progress" in info
    venv.close()


def test_a_refused_env_frees_its_simulator(monkeypatch):
    """The backend is built before the wrapper checks the options; a refusal there must not leak it (a LIBERO scene
    holds ~1.5 GB)."""
    from envs import EnvOptions, make_env
    from envs.tabletop.tasks import TabletopBackend
    from vla_rl.base.errors import ConfigError

    closed = []
    original = TabletopBackend.close
    monkeypatch.setattr(TabletopBackend, "close", lambda self: (closed.append(self), original(self)))
    with pytest.raises(ConfigError, match="instruction_length"):
        make_env("tabletop/touch-color", EnvOptions(instruction_length=8))
    assert len(closed) == 1


def test_instruction_length_zero_means_the_familys_and_a_direct_vlaenv_gets_the_generic_default():
    from envs import EnvOptions, VLAEnv, get_spec, make_env
    from envs.tabletop.tasks import make_tabletop_backend

    env = make_env("tabletop/touch-color", EnvOptions())
    assert env.observation_space["instruction"].shape == (64,) and env.options.instruction_length == 64
    env.close()
    backend = make_tabletop_backend(get_spec("tabletop/touch-color"), 64, "")
    direct = VLAEnv(backend, EnvOptions(instruction_length=0))
    assert direct.reset(seed=0)[0]["instruction"].shape == (64,)
    direct.close()
