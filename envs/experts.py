"""Scripted experts for every registered task, with optional Gaussian action noise.

Meta-World uses the experts shipped in `metaworld.policies`; the tabletop tasks use the
controllers below. Experts read privileged simulator state through the env's backend.
"""

from __future__ import annotations

import numpy as np

from envs.tabletop.tasks import (
    BLOCK_HALF,
    FINGER_RADIUS,
    MAX_STEP,
    TABLETOP_TASKS,
    OffCenterBackend,
    PushToTargetBackend,
    TouchColorBackend,
)
from envs.wrapper import VLAEnv

CONTACT = BLOCK_HALF + FINGER_RADIUS
CLEARANCE = CONTACT + 0.012  # how far the finger keeps from the block while walking around it


def _toward(finger: np.ndarray, goal: np.ndarray, max_step: float = MAX_STEP) -> np.ndarray:
    """Proportional step toward `goal`, scaled (not clipped per axis) so its direction is kept."""
    step = (goal - finger) / max_step
    return step / max(1.0, float(np.abs(step).max()))


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def push_along(finger: np.ndarray, block: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Action that pushes `block` along unit `direction`: get behind it (walking around), then push."""
    rel = finger - block
    along = float(rel @ direction)
    lateral = rel - along * direction
    behind = block - direction * CLEARANCE
    if along < -(CONTACT - 0.008):  # on the back side of the block
        if np.linalg.norm(lateral) < 0.012:  # in position: advance, removing lateral drift
            return np.clip(direction - lateral / MAX_STEP, -1.0, 1.0)
        return _toward(finger, behind)
    if _segment_distance(block, finger, behind) >= CLEARANCE - 1e-3:
        return _toward(finger, behind)
    # Walk around: first sideways to a clear lane, then back along the lane to the push line.
    perp = np.array([-direction[1], direction[0]])
    side = 1.0 if float(rel @ perp) >= 0 else -1.0
    lane = CLEARANCE + 0.01
    if side * float(rel @ perp) < lane - 0.003:
        return _toward(finger, block + along * direction + side * perp * lane)
    return _toward(finger, behind + side * perp * lane)


class ScriptedExpert:
    """`act()` returns the expert action for `env`'s current state; call `reset()` after env.reset."""

    def __init__(self, env: VLAEnv, noise: float = 0.0, seed: int | None = None):
        if noise < 0:
            raise ValueError(f"expert noise must be >= 0, got {noise}")
        self.env = env
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.backend = env.backend
        self._mw_policy = None
        if env.task_spec.family == "metaworld":
            from metaworld.policies import ENV_POLICY_MAP

            self._mw_policy = ENV_POLICY_MAP[self.backend.task_name]()
        self._side = 1.0

    def reset(self, seed: int | None = None) -> None:
        """Start an episode; a seed makes the episode's noise and mode choice reproducible."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        # off-center: pick the push direction per episode -> two modes in the demonstrations.
        self._side = float(self.rng.choice([-1.0, 1.0]))

    def act(self) -> np.ndarray:
        action = self._clean_action()
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _clean_action(self) -> np.ndarray:
        b = self.backend
        if self._mw_policy is not None:
            return np.asarray(self._mw_policy.get_action(b.raw_obs), dtype=np.float64)
        if isinstance(b, TouchColorBackend):
            return _toward(b.finger_xy, b.body_xy(f"block_{b.target}"), b.max_step)
        if isinstance(b, PushToTargetBackend):
            block, target = b.body_xy("block"), b.body_xy("target")
            gap = target - block
            return push_along(b.finger_xy, block, gap / max(np.linalg.norm(gap), 1e-9))
        if isinstance(b, OffCenterBackend):
            return push_along(b.finger_xy, b.body_xy("block"), np.array([self._side, 0.0]))
        from envs.registry import get_family

        family = get_family(self.env.task_spec.family)
        if family.expert is not None:
            return np.asarray(family.expert(b), dtype=np.float64)
        raise KeyError(f"no scripted expert for task {self.env.task_spec.id}")


def has_scripted_expert(env_id: str) -> bool:
    """Whether `ScriptedExpert` acts in the task `env_id`, from the id alone (no env is built): the tabletop tasks,
    the Meta-World tasks with a policy in `metaworld.policies`, LIBERO-Object and -Spatial (envs/libero_expert.py),
    and another family's tasks when it registered an expert."""
    from envs.registry import get_family, get_spec

    spec = get_spec(env_id)
    task = spec.id.split("/", 1)[1]
    if spec.family == "tabletop":
        return issubclass(TABLETOP_TASKS[task][0], (TouchColorBackend, PushToTargetBackend, OffCenterBackend))
    if spec.family == "metaworld":
        from metaworld.policies import ENV_POLICY_MAP

        return f"{task}-v3" in ENV_POLICY_MAP  # the backend's task_name
    if get_family(spec.family).expert is None:
        return False
    if spec.family == "libero":
        from envs.libero_expert import SCRIPTED_SUITES

        return task.split("/", 1)[0] in SCRIPTED_SUITES
    return True
