"""docs/environments.md, "Adding an env family": the page's code block, run as written, gives a working family —
the env contract, the expert, gymnasium ids, the RL env stack — and registration refuses what does not fit."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from doc_blocks import python_block

import envs
from envs import registry
from envs.collect import rollout_expert
from envs.errors import ActionError

DOC = Path(__file__).resolve().parents[1] / "docs" / "environments.md"


def _doc_example() -> str:
    return python_block("environments.md", "## Adding an env family")


@pytest.fixture
def clean_registry():
    """Whatever a test registers is gone afterwards (families, specs and gymnasium ids)."""
    families, specs, gym_ids = dict(registry._FAMILIES), dict(registry._SPECS), set(gym.registry)
    yield
    registry._FAMILIES.clear(), registry._FAMILIES.update(families)
    registry._SPECS.clear(), registry._SPECS.update(specs)
    for gym_id in set(gym.registry) - gym_ids:
        del gym.registry[gym_id]


@pytest.fixture
def toy(clean_registry):
    namespace = {}
    exec(compile(_doc_example(), str(DOC), "exec"), namespace)  # the page's block, as a user would paste it
    return namespace


def test_the_documented_family_meets_the_env_contract(toy):
    env = toy["env"]
    assert "toy" in envs.family_names() and envs.get_spec("toy/reach-point").max_episode_steps == 40
    obs, info = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].dtype == np.float32 and obs["instruction"].dtype == np.int64
    assert all(np.array_equal(obs[k], again[k]) for k in obs)  # same seed, same start
    assert envs.decode_instruction(obs["instruction"]) == "move the red dot onto the green dot"
    assert {"success", "progress", "gt_reward"} <= set(info)
    with pytest.raises(ActionError, match="toy/reach-point"):
        env.step(np.zeros(3, np.float32))
    same = gym.make("vla_rl/toy.reach-point", image_size=32)
    assert np.array_equal(same.reset(seed=3)[0]["image"], obs["image"])
    same.close()


def test_the_documented_expert_collects_successful_demos(toy):
    env = toy["env"]
    episodes = [rollout_expert(env, envs.ScriptedExpert(env, noise=0.1, seed=s), seed=s) for s in range(5)]
    assert all(bool(e.success[-1]) for e in episodes)
    assert all(len(e.action) < 40 for e in episodes)


def test_the_documented_family_runs_through_the_rl_env_stack(toy):
    from vla_rl.policy import ActionTokenizer
    from vla_rl.rl.env import build_rl_env

    tok = ActionTokenizer((-1.0, -1.0), (1.0, 1.0))
    env = build_rl_env("toy/reach-point", envs.EnvOptions(image_size=32), tok, chunk_size=2, reward="shaped",
                       seed=0, privileged_obs=True)
    obs, _ = env.reset()
    backend = env.unwrapped.backend
    assert obs["privileged"].shape == (5,)  # the backend's 4 numbers + the fraction of the episode's time left
    np.testing.assert_array_equal(obs["privileged"][:4], np.concatenate([backend.point, backend.goal]).astype(np.float32))
    bins = tok.to_bins(np.zeros((2, 2))).reshape(-1)
    _, reward, terminated, truncated, info = env.step(bins)
    assert np.isfinite(reward) and not terminated and not truncated


def test_registration_refuses_a_taken_name_or_a_spec_of_another_family(toy):
    with pytest.raises(ValueError, match="registered already"):
        envs.register_family(toy["TOY"])
    wrong = envs.EnvFamily("other", lambda: [envs.get_spec("toy/reach-point")], toy["ReachPointBackend"], 1.0)
    with pytest.raises(ValueError, match="must have family 'other'"):
        envs.register_family(wrong)
    assert "other" not in envs.family_names()


def test_entry_point_families_are_registered_and_a_wrong_object_is_refused(toy, monkeypatch):
    from vla_rl.base.errors import ConfigError
    from vla_rl.config import EnvsConfig

    family = envs.EnvFamily("toy2", lambda: [envs.TaskSpec("toy2/reach-point", "toy2", ("go",), 2, 2, 10)],
                            toy["ReachPointBackend"], 1.0)

    class EntryPoint:
        def __init__(self, name, obj):
            self.name, self.value, self._obj = name, f"pkg:{name}", obj

        def load(self):
            return self._obj

    monkeypatch.setattr(registry, "entry_points", lambda group: [EntryPoint("toy2", family)])
    envs.register_entry_point_families()
    assert envs.get_spec("toy2/reach-point").family == "toy2"
    EnvsConfig(family="toy2").validate()
    with pytest.raises(ConfigError, match="not registered"):
        EnvsConfig(family="nope").validate()
    monkeypatch.setattr(registry, "entry_points", lambda group: [EntryPoint("bad", object())])
    with pytest.raises(TypeError, match="not an envs.EnvFamily"):
        envs.register_entry_point_families()
