import numpy as np
import pytest
from env_ids import TABLETOP_IDS

from envs import ScriptedExpert
from envs.collect import rollout_expert


@pytest.mark.parametrize("env_id", TABLETOP_IDS)
def test_tabletop_experts_succeed(make, env_id):
    env = make(env_id, image_size=16)
    expert = ScriptedExpert(env, noise=0.1)
    episodes = [rollout_expert(env, expert, seed) for seed in range(10)]
    assert np.mean([e.succeeded for e in episodes]) >= 0.9


def test_metaworld_expert_succeeds_on_drawer_open(make):
    env = make("metaworld/drawer-open", image_size=16)
    expert = ScriptedExpert(env)
    for seed in range(2):
        assert rollout_expert(env, expert, seed).succeeded


def test_off_center_demos_have_two_modes(make):
    env = make("tabletop/off-center", image_size=16)
    expert = ScriptedExpert(env)
    sides = []
    for seed in range(12):
        episode = rollout_expert(env, expert, seed)
        assert episode.succeeded
        sides.append(np.sign(env.backend.body_xy("block")[0]))
    assert {-1.0, 1.0} <= set(sides), "the expert should push both left and right"


def test_expert_noise_is_reproducible_and_changes_actions(make):
    env = make("tabletop/push-to-target", image_size=16)
    a = rollout_expert(env, ScriptedExpert(env, noise=0.3), seed=3)
    b = rollout_expert(env, ScriptedExpert(env, noise=0.3), seed=3)
    c = rollout_expert(env, ScriptedExpert(env, noise=0.0), seed=3)
    np.testing.assert_array_equal(a.action, b.action)
    n = min(a.length, c.length)
    assert not np.array_equal(a.action[:n], c.action[:n])


def test_negative_noise_rejected(make):
    with pytest.raises(ValueError, match="noise"):
        ScriptedExpert(make("tabletop/touch-color"), noise=-1)
