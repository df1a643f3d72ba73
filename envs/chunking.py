"""Action chunking at the env boundary: one decision = K actions executed in turn.

`ActionChunkWrapper(env, k)` takes actions of shape (K, D), steps the wrapped env with each until
the episode ends (a terminal step inside a chunk ends it early), sums the rewards, and reports
`success` if any step of the chunk succeeded (so a success is not lost when the env is configured
not to terminate on it). `info["chunk_steps"]` says how many env steps ran.

Only the chunk's last observation reaches the policy, so by default the inner steps skip the camera render
(`VLAEnv.render_observations`) and the frame is rendered once, after the chunk's last step (or the step that
ended the episode inside it): up to K times more env steps per second where rendering dominates (Meta-World on a
CPU). Rendering does not touch the physics, so the chunk's final frame, rewards and success are the same as with
`render_inner_steps=True`. The wrappers between this one and the `VLAEnv` must pass observations through as they
are (none of the project's do; an `ObservationWrapper` there is refused).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ActionChunkWrapper(gym.Wrapper):
    def __init__(self, env: gym.Env, chunk_size: int, render_inner_steps: bool = False):
        super().__init__(env)
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1")
        self.chunk_size = chunk_size
        self._base = self._vla_env(env) if not render_inner_steps and chunk_size > 1 else None
        inner = env.action_space
        self.action_space = gym.spaces.Box(np.repeat(inner.low[None], chunk_size, 0),
                                           np.repeat(inner.high[None], chunk_size, 0), dtype=inner.dtype)

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"action chunk has shape {actions.shape}; expected {self.action_space.shape} (K, D)")
        total, success = 0.0, False
        try:
            for k in range(self.chunk_size):
                if self._base is not None:
                    self._base.render_observations = k == self.chunk_size - 1
                obs, reward, terminated, truncated, info = self.env.step(actions[k])
                total += float(reward)
                success = success or bool(info.get("success", False))
                if terminated or truncated:
                    break
        finally:
            if self._base is not None:
                self._base.render_observations = True
        if self._base is not None and k < self.chunk_size - 1:  # the episode ended inside the chunk: render it now
            obs = self._base.observe()
        info = dict(info, success=success, chunk_steps=k + 1)
        return obs, total, terminated, truncated, info

    @staticmethod
    def _vla_env(env: gym.Env):
        """The VLAEnv under `env`, or None (another env: every step renders as it always does)."""
        from envs.wrapper import VLAEnv

        while not isinstance(env, VLAEnv):
            if isinstance(env, gym.ObservationWrapper):
                raise ValueError(f"{type(env).__name__} transforms observations between ActionChunkWrapper and the "
                                 "VLAEnv: render-skip would return its input frame untransformed — use "
                                 "render_inner_steps=True")
            if not hasattr(env, "env"):
                return None
            env = env.env
        return env
