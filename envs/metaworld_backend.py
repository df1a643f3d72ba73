"""Meta-World v3 tasks behind the `TaskBackend` interface.

We build the task class directly (not `gym.make("Meta-World/MT1")`): MT1 samples one of 50
pre-drawn goal configurations per reset, while here `reset(seed)` re-seeds the task's own random
reset vector, so every seed is a distinct, reproducible initial state.
"""

from __future__ import annotations

import numpy as np

from envs.backend import TaskBackend, TaskStatus
from envs.metaworld_instructions import METAWORLD_INSTRUCTIONS
from envs.render import FastRenderer
from envs.spec import TaskSpec

FAMILY = "metaworld"
# Meta-World's v2 reward lies in [0, 10] and reaches 10 at success; progress = reward / 10.
REWARD_SCALE = 10.0
DEFAULT_EPISODE_STEPS = 200  # Meta-World allows 500; the experts finish nearly every task in < 200
# Tasks whose shipped expert needs longer (measured by experiments/bench_envs.py; see docs/benchmarks.md, Environments).
EPISODE_STEPS_OVERRIDES = {"push-back": 400}


def metaworld_specs() -> list[TaskSpec]:
    return [
        TaskSpec(
            id=f"{FAMILY}/{name}",
            family=FAMILY,
            instructions=(text,),
            action_dim=4,
            state_dim=4,
            max_episode_steps=EPISODE_STEPS_OVERRIDES.get(name, DEFAULT_EPISODE_STEPS),
            description=f"Meta-World v3 {name}-v3 (Sawyer arm; actions dx, dy, dz, gripper)",
        )
        for name, text in METAWORLD_INSTRUCTIONS.items()
    ]


class MetaWorldBackend(TaskBackend):
    default_camera = "corner"

    def __init__(self, spec: TaskSpec, image_size: int, camera: str):
        from metaworld.env_dict import (
            ALL_V3_ENVIRONMENTS,  # heavy: imported on first use
        )

        self.spec = spec
        self.task_name = spec.id.split("/", 1)[1] + "-v3"
        env = ALL_V3_ENVIRONMENTS[self.task_name]()
        # Make the goal observable (the scripted experts need it) and let reset draw a new
        # random object/goal placement from the env's own seeded generator.
        env._partially_observable = False
        # step() clips observations to this cached space; drop the partially-observable one
        # (whose goal bounds are zero) as Meta-World's own goal-observable constructor does.
        env.__dict__.pop("sawyer_observation_space", None)
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        env.max_path_length = 10**9  # our wrapper owns the time limit
        self.env = env
        camera = camera or self.default_camera
        # Meta-World's corner cameras render upside down with a plain mujoco.Renderer.
        self._renderer = FastRenderer(env.model, image_size, camera, flip_vertical=camera.startswith("corner"))
        self.raw_obs: np.ndarray | None = None  # full 39-d state, read by the scripted expert
        self._seeded = False

    def reset(self, seed: int | None) -> TaskStatus:
        if seed is not None:
            self.env.seed(int(seed))
            self._seeded = True
        elif not self._seeded:
            self.env.seed(int(np.random.SeedSequence().generate_state(1)[0]))
            self._seeded = True
        self.raw_obs, _ = self.env.reset()
        reward, info = self.env.evaluate_state(self.raw_obs, np.zeros(4, dtype=np.float32))
        return self._status(reward, info)

    def step(self, action: np.ndarray) -> TaskStatus:
        self.raw_obs, reward, _, _, info = self.env.step(action)
        return self._status(reward, info)

    @staticmethod
    def _status(reward: float, info: dict) -> TaskStatus:
        success = bool(info.get("success", 0.0) > 0.5)
        progress = 1.0 if success else float(np.clip(reward / REWARD_SCALE, 0.0, 1.0))
        return TaskStatus(success=success, gt_reward=float(reward), progress=progress)

    def state(self) -> np.ndarray:
        return self.raw_obs[:4].astype(np.float32)  # hand xyz + gripper opening

    @property
    def privileged_dim(self) -> int:
        return int(self.env.observation_space.shape[0])  # 39: hand, gripper, two object poses, previous frame, goal

    def privileged_state(self) -> np.ndarray:
        return self.raw_obs.astype(np.float32)

    def render(self) -> np.ndarray:
        return self._renderer.render(self.env.data)

    @property
    def instruction(self) -> str:
        return self.spec.instructions[0]

    def close(self) -> None:
        self._renderer.close()
        self.env.close()
