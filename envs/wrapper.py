"""`VLAEnv`: the one gymnasium wrapper that gives every task the observation contract.

Observation (gymnasium Dict): `image` uint8 (H, W, 3), `state` float32 (S,), `instruction`
int64 (L,) (see `envs.instruction`). `info`: `success`, `instruction` (text), `task`, and the
privileged `gt_reward`, `progress` (never to be fed to a policy).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from envs.backend import TaskBackend, TaskStatus
from envs.errors import ActionError
from envs.instruction import VOCAB_SIZE, encode_instruction
from envs.options import DEFAULT_INSTRUCTION_LENGTH, EnvOptions

PRIVILEGED_INFO_KEYS = ("gt_reward", "progress")


class VLAEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, backend: TaskBackend, options: EnvOptions, render_mode: str | None = "rgb_array"):
        options.validate()
        if not options.instruction_length:  # built directly, not by make_env (which fills in the family's length)
            options = dataclasses.replace(options, instruction_length=DEFAULT_INSTRUCTION_LENGTH)
        self.backend = backend
        self.options = options
        self.render_mode = render_mode
        spec = backend.spec
        self.task_spec = spec
        self.max_episode_steps = options.max_episode_steps or spec.max_episode_steps
        size = options.image_size
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
                "state": gym.spaces.Box(-np.inf, np.inf, (spec.state_dim,), np.float32),
                "instruction": gym.spaces.Box(0, VOCAB_SIZE - 1, (options.instruction_length,), np.int64),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)
        for text in spec.instructions:  # fail at construction, not mid-run
            encode_instruction(text, options.instruction_length)
        self._image: np.ndarray | None = None
        # False: `step` skips the camera render and returns the previous frame (see ActionChunkWrapper: the inner
        # steps of a chunk are never seen by the policy; rendering is ~95 % of a Meta-World step on a CPU).
        self.render_observations = True
        self._instruction_ids: np.ndarray | None = None
        self._t = 0

    # --- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        status = self.backend.reset(seed)
        self._t = 0
        self._instruction_ids = encode_instruction(self.backend.instruction, self.options.instruction_length)
        return self._observe(), self._info(status, status.gt_reward, status.success)

    def step(self, action):
        action = self.check_action(action)
        if self._instruction_ids is None:
            raise RuntimeError(f"{self.task_spec.id}: call reset() before step()")
        total_reward, succeeded = 0.0, False
        for _ in range(self.options.action_repeat):
            status = self.backend.step(action)
            total_reward += status.gt_reward
            succeeded = succeeded or status.success
            if succeeded and self.options.terminate_on_success:
                break
        self._t += 1
        if not np.isfinite(total_reward):
            raise FloatingPointError(f"{self.task_spec.id}: simulator returned reward {total_reward} at step {self._t}")
        terminated = bool(succeeded and self.options.terminate_on_success)
        truncated = bool(self._t >= self.max_episode_steps and not terminated)
        reward = total_reward if self.options.reward_type == "dense" else float(succeeded)
        return self._observe(), float(reward), terminated, truncated, self._info(status, total_reward, succeeded)

    def render(self):
        return self._image

    def close(self):
        self.backend.close()

    # --- helpers -------------------------------------------------------------------------------
    def check_action(self, action: Any) -> np.ndarray:
        """Return the action as float32 in [-1, 1]^D, or raise naming the env and the problem."""
        arr = np.asarray(action, dtype=np.float32)
        expected = self.action_space.shape
        if arr.shape != expected:
            raise ActionError(
                f"{self.task_spec.id}: action has shape {arr.shape} but this env expects {expected} "
                f"(action_dim={self.task_spec.action_dim})"
            )
        if not np.all(np.isfinite(arr)):
            raise ActionError(f"{self.task_spec.id}: action contains NaN or inf: {arr.tolist()}")
        return np.clip(arr, -1.0, 1.0)

    @property
    def elapsed_steps(self) -> int:
        """Control steps since the last reset (the episode ends at max_episode_steps)."""
        return self._t

    def observe(self) -> dict[str, np.ndarray]:
        """The observation of the current simulator state, rendered now."""
        self._image = self.backend.render()
        return self._obs_dict()

    def _observe(self) -> dict[str, np.ndarray]:
        if self.render_observations or self._image is None:
            return self.observe()
        return self._obs_dict()

    def _obs_dict(self) -> dict[str, np.ndarray]:
        return {
            "image": self._image,
            "state": np.asarray(self.backend.state(), dtype=np.float32),
            "instruction": self._instruction_ids.copy(),
        }

    def _info(self, status: TaskStatus, gt_reward: float, success: bool) -> dict[str, Any]:
        return {
            "success": bool(success),
            "instruction": self.backend.instruction,
            "task": self.task_spec.id,
            "gt_reward": float(gt_reward),
            "progress": float(1.0 if success else status.progress),
        }
