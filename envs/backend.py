"""The small interface every simulator task implements; `VLAEnv` turns it into the contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from envs.spec import TaskSpec


@dataclass
class TaskStatus:
    """Privileged ground truth after a reset or a control step."""

    success: bool
    gt_reward: float  # the task's dense shaped reward for the last control step
    progress: float  # in [0, 1]; 1 at success


class TaskBackend(ABC):
    """One simulated task. Not a gymnasium env: no spaces, no time limit, no observation dict."""

    spec: TaskSpec
    default_camera: str

    @abstractmethod
    def reset(self, seed: int | None) -> TaskStatus:
        """Start an episode. The same seed gives the same initial state (and instruction)."""

    @abstractmethod
    def step(self, action: np.ndarray) -> TaskStatus:
        """Apply one control step of a clipped action in [-1, 1]^D."""

    @abstractmethod
    def state(self) -> np.ndarray:
        """Proprioception (float32, shape (spec.state_dim,))."""

    @property
    def privileged_dim(self) -> int:
        """Length of `privileged_state()`."""
        return int(self.spec.state_dim)

    def privileged_state(self) -> np.ndarray:
        """The simulator's full state (float32, shape (privileged_dim,)) for an asymmetric critic in RL: it may
        show what the policy cannot see (object poses, the target), so it must never reach the policy. Default:
        the proprioception."""
        return np.asarray(self.state(), dtype=np.float32)

    @abstractmethod
    def render(self) -> np.ndarray:
        """uint8 (H, W, 3) frame from the configured camera."""

    @property
    @abstractmethod
    def instruction(self) -> str:
        """The language instruction of the current episode."""

    def close(self) -> None:
        """Release renderers and simulator resources."""
