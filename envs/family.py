"""An env family: the tasks of one simulator and how to build them (what `envs.register_family` takes).

The built-in families (tabletop, metaworld) are `EnvFamily` values registered in `envs/registry.py`; a package of
your own registers more through the `vla_rl.env_families` entry point, so that every process that imports `envs`
(Ray runners included) sees them. docs/environments.md, "Adding an env family", walks through one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from envs.backend import TaskBackend
from envs.options import DEFAULT_INSTRUCTION_LENGTH
from envs.spec import TaskSpec


@dataclass(frozen=True)
class EnvFamily:
    name: str  # the ids' prefix: "<name>/<task>"
    specs: Callable[[], list[TaskSpec]]  # every task of the family (called once, at registration)
    make_backend: Callable[[TaskSpec, int, str], TaskBackend]  # (spec, image_size, camera or "") -> a backend
    reward_max: float  # per-step maximum of the backends' dense reward (TaskStatus.gt_reward): the RL reward's scale
    # The scripted expert, if the family has one: the clean action in [-1, 1]^D for a backend's current state, from
    # its privileged state (`vla-rl collect` adds the noise). None: no demos for this family.
    expert: Callable[[TaskBackend], np.ndarray] | None = None
    # Bytes of instruction ids in the observation when env_options.instruction_length is 0 (its default): at least the
    # longest instruction of the family, the same for all its tasks so that one policy reads every task of a suite.
    instruction_length: int = DEFAULT_INSTRUCTION_LENGTH

    def check_specs(self, specs: list[TaskSpec]) -> None:
        for s in specs:
            if s.family != self.name or not s.id.startswith(f"{self.name}/"):
                raise ValueError(f"env family {self.name!r}: task {s.id!r} (family {s.family!r}) must have family "
                                 f"{self.name!r} and an id '{self.name}/<task>'")
