import gymnasium as gym
import numpy as np
import pytest

from envs import ActionChunkWrapper


def test_chunk_sums_rewards_and_stops_at_the_episode_end(make):
    env = make("tabletop/touch-color", max_episode_steps=5)
    ref = make("tabletop/touch-color", max_episode_steps=5)
    chunked = ActionChunkWrapper(env, 3)
    assert chunked.action_space.shape == (3, 2)
    chunked.reset(seed=4)
    ref.reset(seed=4)
    rng = np.random.default_rng(0)
    chunk = rng.uniform(-1, 1, (3, 2)).astype(np.float32)
    _, reward, term, trunc, info = chunked.step(chunk)
    expected = sum(ref.step(a)[1] for a in chunk)
    assert reward == pytest.approx(expected) and info["chunk_steps"] == 3 and not (term or trunc)
    obs, reward, term, trunc, info = chunked.step(chunk)  # steps 4 and 5: truncated inside the chunk
    assert trunc and info["chunk_steps"] == 2
    with pytest.raises(ValueError, match=r"expected \(3, 2\)"):
        chunked.step(np.zeros(2, np.float32))


class _SuccessAtStep2(gym.Env):
    """Reports success only at its 2nd step and never terminates (terminate_on_success=False)."""

    observation_space = gym.spaces.Box(-1, 1, (1,))
    action_space = gym.spaces.Box(-1, 1, (2,))

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 1.0, False, False, {"success": self.t == 2}


def test_success_inside_a_chunk_is_kept():
    env = ActionChunkWrapper(_SuccessAtStep2(), 4)
    env.reset()
    _, reward, term, trunc, info = env.step(np.zeros((4, 2), np.float32))
    assert info["success"] and info["chunk_steps"] == 4 and reward == 4.0 and not (term or trunc)
    _, _, _, _, info = env.step(np.zeros((4, 2), np.float32))
    assert not info["success"]


@pytest.mark.parametrize("max_steps", [7, 8])  # 7: the episode ends inside the second chunk of 4
def test_render_skip_gives_the_same_frames_rewards_and_success_as_rendering_every_step(make, max_steps):
    from envs.wrapper import VLAEnv

    runs = []
    for render_inner in (True, False):
        env = make("metaworld/drawer-open", image_size=32, max_episode_steps=max_steps)
        chunked = ActionChunkWrapper(env, 4, render_inner_steps=render_inner)
        renders = []
        original = env.backend.render
        env.backend.render = lambda: renders.append(1) or original()  # count the camera renders
        obs, _ = chunked.reset(seed=3)
        rng = np.random.default_rng(0)
        out = [obs["image"]]
        for _ in range(2):
            obs, reward, term, trunc, info = chunked.step(rng.uniform(-1, 1, (4, 4)).astype(np.float32))
            out += [obs["image"], reward, term, trunc, info["success"], info["chunk_steps"]]
        assert isinstance(env, VLAEnv) and env.render_observations  # restored after every chunk
        runs.append((out, len(renders)))
    (every, n_every), (skipped, n_skipped) = runs
    for a, b in zip(every, skipped, strict=True):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
    assert n_every == 1 + 8 - (8 - max_steps) and n_skipped == 1 + 2  # reset + one render per chunk
