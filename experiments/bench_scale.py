"""Scale benchmark (JSON on stdout): env steps/s of RL sampling with 1 and 2 env runners and 1…16 envs per
runner vs the bare single-process loop, per-phase time shares of whole PPO iterations, and the same sampling
on a two-node Ray cluster started on this machine (head + a worker holding the runners by a custom resource).

Every configuration's algorithm is built once and kept; the timings then go round all configurations
`--repeats` times (alternated, so drift hits every configuration alike) and each ratio is the median of the
per-round ratios to the bare loop timed in the same round, with its min and max.

    python experiments/bench_scale.py --policy outputs/metaworld/drawer-open/pretrain/checkpoints/000750/pretrained_model

Rates are decisions (policy queries, one chunk each) per second of wall-clock, rendering included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from experiments.bench_rl import _env_config, bare_loop, machine  # noqa: E402


def _cfg(policy: str, runners: int, envs: int, steps: int, **extra):
    from vla_rl.train_config import TrainConfig

    return TrainConfig(policy=policy, env_runners=runners, envs_per_runner=envs, rollout_length=steps,
                       minibatch_size=min(64, max(1, runners) * envs * steps), **extra)


def _build(cfg, env_config):
    from vla_rl.rl.algorithm import build_config

    return build_config(cfg, env_config, cfg.policy).build_algo()


def _sample_rate(algo, n: int) -> float:
    t0 = time.perf_counter()
    parts = algo.env_runner_group.foreach_env_runner(
        lambda r: r.sample(num_timesteps=n, force_reset=True, explore=True), local_env_runner=False)
    steps = sum(len(e) for eps in parts for e in eps)
    return steps / (time.perf_counter() - t0)


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def scaling(args, policy, env_config) -> dict:
    """steps/s per (runners, envs per runner) and its ratio to the bare loop with as many envs, alternated."""
    import ray

    grid = [(r, e) for r in (1, 2) for e in args.envs]
    # Every configuration's runners stay alive (idle while the others are timed): logical CPUs for all of them.
    ray.init(num_cpus=sum(r for r, _ in grid), include_dashboard=False, logging_level="ERROR")
    algos = {key: _build(_cfg(args.policy, *key, args.steps), env_config) for key in grid}
    for (r, e), algo in algos.items():  # warm-up: first-call allocations
        _sample_rate(algo, 2 * e)
    for e in args.envs:
        bare_loop(policy, env_config, 2, e)
    rates: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        bare = {e: bare_loop(policy, env_config, args.steps, e) for e in args.envs}
        for e, v in bare.items():
            rates.setdefault(f"bare envs={e}", []).append(v)
        for (r, e), algo in algos.items():
            v = _sample_rate(algo, args.steps * e)
            rates.setdefault(f"rllib runners={r} envs_per_runner={e}", []).append(v)
            ratios.setdefault(f"rllib runners={r} envs_per_runner={e} / bare envs={e}", []).append(v / bare[e])
    phases = {}
    for (r, e), algo in algos.items():
        if e != max(args.envs):
            continue
        rows = [algo.train()["vla"] for _ in range(args.train_iterations)]
        shares = {}
        for phase in ("sample_s", "learn_s", "sync_s"):
            per = [row[f"perf/{phase}"] / sum(row[f"perf/{p}"] for p in ("sample_s", "learn_s", "sync_s"))
                   for row in rows]
            shares[phase.replace("_s", "_share")] = statistics.median(per)
        shares["iteration_s_median"] = statistics.median(
            [sum(row[f"perf/{p}"] for p in ("sample_s", "learn_s", "sync_s")) for row in rows])
        shares["batch_decisions"] = r * e * args.steps
        phases[f"runners={r} envs_per_runner={e}"] = shares
    for algo in algos.values():
        algo.stop()
    ray.shutdown()
    return {"steps_per_s": {k: _summary(v) for k, v in rates.items()},
            "ratio_to_bare": {k: _summary(v) for k, v in ratios.items()}, "phase_shares": phases}


def two_node(args, env_config) -> dict:
    """One runner placed on a second node (custom resource) of a Cluster on this machine vs on a one-node Ray."""
    import ray
    from ray.cluster_utils import Cluster

    e = args.two_node_envs
    out: dict[str, list[float]] = {}
    for where in ("one_node", "two_node"):
        cluster = None
        if where == "one_node":
            ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
            cfg = _cfg(args.policy, 1, e, args.steps)
        else:
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
            cluster.add_node(num_cpus=1, resources={"sim": 1})
            ray.init(address=cluster.address, logging_level="ERROR")
            cfg = _cfg(args.policy, 1, e, args.steps, runner_resources={"sim": 1})
        algo = _build(cfg, env_config)
        _sample_rate(algo, 2 * e)
        out[where] = [_sample_rate(algo, args.steps * e) for _ in range(args.repeats)]
        algo.stop()
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    return {"envs_per_runner": e, "one_node": _summary(out["one_node"]), "two_node": _summary(out["two_node"]),
            "ratio_medians": statistics.median(out["two_node"]) / statistics.median(out["one_node"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="outputs/metaworld/drawer-open/pretrain/checkpoints/000750/pretrained_model",
                    help="a pretrained_model directory (its training env and options are used)")
    ap.add_argument("--envs", type=int, nargs="+", default=[1, 4, 16], help="envs per runner (and in the bare loop)")
    ap.add_argument("--steps", type=int, default=16, help="decisions per env per timing")
    ap.add_argument("--repeats", type=int, default=5, help="alternated rounds of timings")
    ap.add_argument("--train_iterations", type=int, default=3, help="whole PPO iterations for the phase shares")
    ap.add_argument("--two_node_envs", type=int, default=4, help="envs of the runner in the two-node comparison")
    ap.add_argument("--skip_two_node", action="store_true", help="leave out the two-node cluster comparison")
    args = ap.parse_args()
    import ray  # noqa: F401  (imported before torch threads are set: Ray reads OMP_NUM_THREADS at import)

    from vla_rl.policy import VLAPolicy
    from vla_rl.rl.module import build_policy_from_config
    from vla_rl.rl.module_settings import ModuleSettings

    args.policy = str(Path(args.policy).resolve())
    torch.set_num_threads(1)  # like a 1-CPU runner: the bare loop and the driver's learner use one thread
    base = VLAPolicy.from_pretrained(args.policy)
    env_config = _env_config(base)
    policy = build_policy_from_config(ModuleSettings.from_train_config(args.policy, _cfg(args.policy, 1, 1, 1)))
    result = {"benchmark": "scale", "machine": machine(), "command": " ".join(sys.argv), "env": env_config["env_id"],
              "steps_per_env": args.steps, "repeats": args.repeats, **scaling(args, policy, env_config)}
    if not args.skip_two_node:
        result["two_node"] = two_node(args, env_config)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
