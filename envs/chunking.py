"""Action chunking at the env boundary: one decision = K actions executed in turn.

`ActionChunkWrapper(env, k)` takes actions of shape (K, D), steps the wrapped env with each until
the episode ends (a terminal step inside a chunk ends it early), sums the rewards, and reports
`success` if any step of the chunk succeeded (so a success is not lost when the env is configured
not to terminate on it). `info["chunk_steps"]` says how many env steps ran.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ActionChunkWrapper(gym.Wrapper):
    def __init__(self, env: gym.Env, chunk_size: int):
        super().__init__(env)
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1")
        self.chunk_size = chunk_size
        inner = env.action_space
        self.action_space = gym.spaces.Box(np.repeat(inner.low[None], chunk_size, 0),
                                           np.repeat(inner.high[None], chunk_size, 0), dtype=inner.dtype)

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"action chunk has shape {actions.shape}; expected {self.action_space.shape} (K, D)")
        total, success = 0.0, False
        for k in range(self.chunk_size):
            obs, reward, terminated, truncated, info = self.env.step(actions[k])
            total += float(reward)
            success = success or bool(info.get("success", False))
            if terminated or truncated:
                break
        info = dict(info, success=success, chunk_steps=k + 1)
        return obs, total, terminated, truncated, info
