"""`vla-rl envs`: every registered environment id with instruction(s), action size, episode length."""

from __future__ import annotations

import json

from envs.registry import list_specs
from vla_rl.config import EnvsConfig


def run(cfg: EnvsConfig) -> int:
    specs = [s for s in list_specs() if not cfg.family or s.family == cfg.family]
    if cfg.json:
        rows = [
            {
                "id": s.id,
                "gym_id": s.gym_id,
                "family": s.family,
                "action_dim": s.action_dim,
                "state_dim": s.state_dim,
                "max_episode_steps": s.max_episode_steps,
                "instructions": list(s.instructions),
            }
            for s in specs
        ]
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(s.id) for s in specs)
    print(f"{'id':<{width}}  act  steps  instruction(s)")
    for s in specs:
        print(f"{s.id:<{width}}  {s.action_dim:>3}  {s.max_episode_steps:>5}  {' | '.join(s.instructions)}")
    print(f"\n{len(specs)} environments; gymnasium ids are 'vla_rl/<family>.<task>', e.g. {specs[0].gym_id}")
    return 0
