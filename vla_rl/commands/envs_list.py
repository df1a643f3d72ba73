"""`vla-rl envs`: every registered environment id with instruction(s), action size, episode length; the suites."""

from __future__ import annotations

import json

from envs import get_spec, get_suite, list_specs, metaworld_group, suite_names
from vla_rl.config import EnvsConfig


def run(cfg: EnvsConfig) -> int:
    specs = [get_spec(e) for e in get_suite(cfg.suite).env_ids] if cfg.suite else list_specs()
    specs = [s for s in specs if not cfg.family or s.family == cfg.family]
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
                "group": metaworld_group(s.id),  # Meta-World difficulty group (envs/suites.py); null elsewhere
            }
            for s in specs
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not specs:
        print(f"no environments of family {cfg.family!r} in suite {cfg.suite!r}")
        return 0
    width = max(len(s.id) for s in specs)
    print(f"{'id':<{width}}  act  steps  {'group':<9}  instruction(s)")
    for s in specs:
        group = metaworld_group(s.id) or ""
        print(f"{s.id:<{width}}  {s.action_dim:>3}  {s.max_episode_steps:>5}  {group:<9}  {' | '.join(s.instructions)}")
    print(f"\n{len(specs)} environments; gymnasium ids are 'vla_rl/<family>.<task>', e.g. {specs[0].gym_id}")
    sizes = ", ".join(f"{n} ({len(get_suite(n).env_ids)})" for n in suite_names())
    print(f"suites (vla-rl envs|eval|collect --suite NAME): {sizes}")
    return 0
