"""Static description of a registered task (what `vla-rl envs` lists)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """Facts about a task that hold before any environment is built."""

    id: str  # project id, e.g. "metaworld/drawer-open"
    family: str  # "metaworld" or "tabletop"
    instructions: tuple[str, ...]  # every instruction the task can emit
    action_dim: int  # D: continuous actions live in [-1, 1]^D
    state_dim: int  # proprioception size
    max_episode_steps: int  # default episode length in policy decisions
    description: str = ""

    @property
    def gym_id(self) -> str:
        """The gymnasium id: gymnasium forbids a second '/', so the family separator becomes '.'."""
        return "vla_rl/" + self.id.replace("/", ".")
