"""Are a policy's failures a property of the initial state or of the sampling? One JSON answer per policy.

Runs the policy greedily once on each of N env seeds, then R sampled episodes (temperature T) on the same seeds, each
repetition with its own sampling stream. Reports per seed the greedy outcome and the sampled successes k of R, and
two summaries of the sampled counts:
- the fraction of seeds that never / always succeed (0 of R, R of R);
- the dispersion index Var(k) / (R p (1 - p)) over seeds: 1 when every seed succeeds with the same probability p
  (failures are sampling noise, which sharpening fixes), up to R when each seed always or never succeeds (failures
  belong to the initial state: sampling at T rarely finds the success RL would need to learn from there).

Used for docs/learning.md section 20 (drawer-open's BC start).

    python experiments/probe_failure_structure.py \
        --policy outputs/metaworld/drawer-open/pretrain_chunk5_cos1500_s0/checkpoints/last/pretrained_model \
        --seeds 30 --samples 4 --temperature 0.5 > docs/probe_failure_structure_drawer.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from envs import EnvOptions
from vla_rl.evaluation import resolve_env, run_episodes, wilson_interval
from vla_rl.policy.policy_io import load_policy


def dispersion(counts: np.ndarray, samples: int) -> float:
    """Var(k) / (R p (1 - p)) of per-seed success counts k out of R: 1 = binomial (seeds alike), R = all-or-nothing."""
    p = counts.mean() / samples
    expected = samples * p * (1.0 - p)
    return float(counts.var(ddof=1) / expected) if expected > 0 and len(counts) > 1 else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", required=True, help="a pretrained_model directory")
    ap.add_argument("--env", default="", help="env id (default: the env of the policy's demos)")
    ap.add_argument("--seeds", type=int, default=30, help="initial states: env seeds seed .. seed + N - 1")
    ap.add_argument("--seed", type=int, default=10000, help="first env seed (10000: the RL runs' evaluation seeds)")
    ap.add_argument("--samples", type=int, default=4, help="sampled episodes per seed")
    ap.add_argument("--temperature", type=float, default=0.5, help="sampling temperature (the RL configs': 0.5)")
    ap.add_argument("--num_envs", type=int, default=10, help="episodes run at once")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy)
    env_id, options = resolve_env(args.env, EnvOptions(), policy, args.policy)
    start = time.time()
    greedy, _ = run_episodes(policy, env_id, args.seeds, args.seed, options, greedy=True, num_envs=args.num_envs)
    sampled = [run_episodes(policy, env_id, args.seeds, args.seed, options, greedy=False, temperature=args.temperature,
                            num_envs=args.num_envs, sample_seed=args.seed + 7919 * (r + 1))[0]
               for r in range(args.samples)]
    g = np.array([bool(r["success"]) for r in greedy])
    k = np.array([sum(bool(rep[i]["success"]) for rep in sampled) for i in range(args.seeds)])
    n = args.samples
    p = float(k.sum()) / (n * args.seeds)
    out = {"benchmark": "failure_structure", "policy": args.policy, "env": env_id, "seed": args.seed,
           "seeds": args.seeds, "samples": n, "temperature": args.temperature,
           "greedy_success": round(float(g.mean()), 3),
           "greedy_ci95": [round(x, 3) for x in wilson_interval(int(g.sum()), args.seeds)],
           "sampled_success": round(p, 3),
           "sampled_ci95": [round(x, 3) for x in wilson_interval(int(k.sum()), n * args.seeds)],
           "seeds_never": round(float((k == 0).mean()), 3), "seeds_always": round(float((k == n).mean()), 3),
           "seeds_never_if_independent": round((1 - p) ** n, 3), "seeds_always_if_independent": round(p ** n, 3),
           "dispersion_index": round(dispersion(k, n), 3),
           "sampled_success_where_greedy_fails": round(float(k[~g].sum()) / max(1, n * int((~g).sum())), 3),
           "sampled_success_where_greedy_succeeds": round(float(k[g].sum()) / max(1, n * int(g.sum())), 3),
           "per_seed": [{"seed": args.seed + i, "greedy": bool(g[i]), "sampled_successes": int(k[i])}
                        for i in range(args.seeds)],
           "wall_s": round(time.time() - start, 1)}
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
