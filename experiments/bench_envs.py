"""Benchmark the environments: steps/s (step + render) and scripted-expert success.

    python experiments/bench_envs.py [--episodes 20] [--steps 300] [--workers 2] [--out FILE.json]

Prints one JSON object (also written to --out):
  speed[family][size]: env steps/s through VLAEnv (physics + render + observation), expert actions,
                       per task and the family mean, at 64 and 128 px;
  experts[task]: success rate, mean episode length over `--episodes` seeded episodes (seeds
                 0..N-1) at the task's default episode length, no rendering (state-only);
  below_90: tasks whose expert succeeds < 90 %.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from multiprocessing import get_context

os.environ.setdefault("MUJOCO_GL", "egl")

SPEED_TASKS = {
    "tabletop": ["tabletop/touch-color", "tabletop/push-to-target", "tabletop/off-center"],
    "metaworld": ["metaworld/drawer-open", "metaworld/pick-place", "metaworld/button-press"],
}


def measure_speed(env_id: str, size: int, steps: int) -> float:
    from envs import EnvOptions, ScriptedExpert, make_env

    env = make_env(env_id, EnvOptions(image_size=size))
    expert = ScriptedExpert(env)
    env.reset(seed=0)
    for _ in range(20):  # warm-up: renderer context and caches are not counted
        env.step(expert.act())
    seed, done = 0, True
    start = time.perf_counter()
    for _ in range(steps):
        if done:
            env.reset(seed=seed)
            expert.reset(seed=seed)
            seed += 1
        _, _, terminated, truncated, _ = env.step(expert.act())
        done = terminated or truncated
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def expert_success(args: tuple[str, int]) -> tuple[str, dict]:
    """Success over seeded episodes, calling the backend directly (no rendering)."""
    from envs import EnvOptions, ScriptedExpert, make_env

    env_id, episodes = args
    env = make_env(env_id, EnvOptions(image_size=16))
    expert = ScriptedExpert(env)
    successes, lengths = [], []
    for seed in range(episodes):
        env.backend.reset(seed)
        expert.reset(seed=seed)
        success, t = False, 0
        while not success and t < env.max_episode_steps:
            success = env.backend.step(env.check_action(expert.act())).success
            t += 1
        successes.append(success)
        lengths.append(t)
    env.close()
    return env_id, {"success_rate": sum(successes) / episodes, "mean_length": sum(lengths) / episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20, help="seeded expert episodes per task")
    parser.add_argument("--steps", type=int, default=500, help="steps per speed measurement")
    parser.add_argument("--workers", type=int, default=2, help="processes for the expert sweep")
    parser.add_argument("--tasks", default="", help="comma-separated ids for the expert sweep (default: all)")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args()

    from envs import list_specs

    speed: dict = {}
    for family, ids in SPEED_TASKS.items():
        for size in (64, 128):
            per_task = {i: round(measure_speed(i, size, args.steps), 1) for i in ids}
            speed.setdefault(family, {})[str(size)] = {"mean": round(sum(per_task.values()) / len(ids), 1), **per_task}
            print(f"speed {family} {size}px: {speed[family][str(size)]}", file=sys.stderr)

    ids = args.tasks.split(",") if args.tasks else [s.id for s in list_specs()]
    with get_context("spawn").Pool(args.workers) as pool:
        experts = dict(pool.map(expert_success, [(i, args.episodes) for i in ids], chunksize=1))
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "mujoco_gl": os.environ["MUJOCO_GL"]},
        "episodes_per_task": args.episodes,
        "speed_steps_per_s": speed,
        "experts": experts,
        "below_90": sorted(k for k, v in experts.items() if v["success_rate"] < 0.9),
    }
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
