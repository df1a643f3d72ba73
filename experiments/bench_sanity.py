"""The learning sanity task (issue 22): does PPO on the VLA reach a known optimum, on every seed? JSON on stdout.

`tabletop/reach-corner` is a contextual bandit over the 256 bins (four blocks at fixed corners, the instruction
names one, one decision of up to 12 cm touches it: the optimum succeeds every time; a uniform policy ~15 %). From a
weak BC start (40 noisy demos, 120 BC steps; `--start random` for a randomly initialised policy), each seed runs `vla-rl train` on the same config and reports, per
seed: greedy success before/after on 100 unseen seeds (Wilson 95 % CI), sampled rollout success over its first and
last 5 iterations (what PPO maximises), token entropy first/last, the first iteration whose greedy evaluation
reached the threshold, and the wall-clock. Bar: >= 95 % greedy on every seed in <= 5 min each on 2 cores — a run
that misses it points to a bug in the machinery (row alignment, ratio, sign), not to a hard task.

    python experiments/bench_sanity.py --seeds 0 1 2 3 4 > docs/bench_sanity.json
    python experiments/bench_sanity.py --seeds 0 --set group_size=4 --set envs_per_runner=32   # a variant
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

CONFIG = Path(__file__).parent / "train" / "sanity_reach_corner.yaml"
ENV = "tabletop/reach-corner"


def build_random_policy(path: Path, preset: str, seed: int) -> Path:
    """A randomly initialised policy of `preset` for the sanity env (the same architecture the quickstart uses)."""
    from envs import get_spec
    from vla_rl.policy import ActionTokenizer, build_policy

    if (path / "policy.json").exists():
        return path
    spec = get_spec(ENV)
    policy = build_policy(ActionTokenizer((-1.0,) * spec.action_dim, (1.0,) * spec.action_dim), state_dim=spec.state_dim,
                          image_size=(64, 64), family="llava", preset=preset, seed=seed)
    policy.spec.train_env, policy.spec.train_env_options = ENV, {"image_size": 64}
    policy.save_pretrained(path)
    return path


def build_weak_bc_policy(out: Path, preset: str) -> Path:
    """A weak BC start: 40 demos of the scripted expert with action noise 0.5, 120 BC steps (~55 % greedy).
    BC orders the bins (neighbouring bins get neighbouring head rows); a random head leaves them unordered."""
    policy = out / "pretrain" / "checkpoints" / "last" / "pretrained_model"
    if (policy / "policy.json").exists():
        return policy
    cli = [sys.executable, "-m", "vla_rl.cli"]
    subprocess.run(cli + ["collect", "--env", ENV, "--episodes", "40", "--noise", "0.5", "--seed", "0",
                          "--out", str(out / "demos")], check=True, stdout=sys.stderr)
    subprocess.run(cli + ["pretrain", "--demos", f"[{out / 'demos'}]", "--policy.preset", preset, "--steps", "120",
                          "--batch_size", "32", "--warmup_steps", "10", "--eval_every", "120", "--eval_episodes", "100",
                          "--save_every", "120", "--out", str(out / "pretrain")], check=True, stdout=sys.stderr)
    return policy


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pooled_success(rows: list[dict]) -> tuple[float | None, int]:
    k = n = 0.0
    for r in rows:
        e, s = r.get("rollout/episodes"), r.get("rollout/success_rate")
        if e and s is not None:
            k, n = k + s * e, n + e
    return (round(k / n, 3) if n else None), int(n)


def seed_summary(rows: list[dict], threshold: float, window: int) -> dict:
    """One seed's table from its metrics.jsonl rows."""
    evals = [(r["iteration"], r["eval/success_rate"], r.get("eval/success_ci_low"), r.get("eval/success_ci_high"),
              r.get("eval/sampled_success_rate")) for r in rows if r.get("eval/success_rate") is not None]
    it = [r for r in rows if r.get("iteration", 0) > 0]
    first, last = pooled_success(it[:window]), pooled_success(it[-window:])
    ent = [r["policy/entropy"] for r in it if r.get("policy/entropy") is not None]
    reached = next((i for i, s, *_ in evals if i > 0 and s >= threshold), None)
    return {
        "greedy_before": evals[0][1] if evals and evals[0][0] == 0 else None,
        "greedy_after": evals[-1][1] if evals else None, "greedy_after_ci95": list(evals[-1][2:4]) if evals else None,
        "sampled_eval_after": evals[-1][4] if evals else None,
        "greedy_by_iteration": {i: s for i, s, *_ in evals},
        f"sampled_first_{window}": first[0], "episodes_first": first[1],
        f"sampled_last_{window}": last[0], "episodes_last": last[1],
        "entropy_first_last": [round(ent[0], 3), round(ent[-1], 3)] if ent else None,
        "first_iteration_at_threshold": reached, "iterations": len(it),
        "env_steps": sum(int(r.get("rollout/env_steps", 0)) for r in it),
        "passed": bool(evals) and evals[-1][1] >= threshold,
    }


def run_seed(policy: Path, out: Path, seed: int, config: Path, overrides: list[str]) -> float:
    cmd = [sys.executable, "-m", "vla_rl.cli", "train", "--config_path", str(config), "--policy", str(policy),
           "--seed", str(seed), "--out", str(out), "--overwrite", "true"]
    for item in overrides:
        key, _, value = item.partition("=")
        cmd += [f"--{key}", value]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="train seeds, one run each")
    ap.add_argument("--config", type=Path, default=CONFIG, help="the train config (default: %(default)s)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a train option over the config, e.g. --set group_size=4 (repeatable)")
    ap.add_argument("--start", choices=("bc", "random"), default="bc",
                    help="bc: a weak BC policy (40 noisy demos, 120 steps); random: a randomly initialised one")
    ap.add_argument("--preset", default="small", help="backbone preset of the start (default: small, the quickstart's)")
    ap.add_argument("--out", type=Path, default=Path("outputs/sanity"), help="runs go to OUT/seed_<s>")
    ap.add_argument("--threshold", type=float, default=0.95, help="greedy success every seed must reach")
    ap.add_argument("--window", type=int, default=5, help="iterations pooled for the first/last sampled success")
    args = ap.parse_args(argv)
    policy = (build_weak_bc_policy(args.out / "start", args.preset) if args.start == "bc" else
              build_random_policy(args.out / "start" / "pretrained_model", args.preset, seed=0))
    per_seed = {}
    for seed in args.seeds:
        wall = run_seed(policy, args.out / f"seed_{seed}", seed, args.config, args.set)
        per_seed[seed] = {**seed_summary(read_metrics(args.out / f"seed_{seed}" / "metrics.jsonl"), args.threshold,
                                         args.window), "wall_s": round(wall, 1)}
        print(f"seed {seed}: {json.dumps(per_seed[seed])}", file=sys.stderr)
    import torch

    print(json.dumps({"benchmark": "sanity", "env": ENV, "config": str(args.config), "overrides": args.set,
                      "start": args.start, "preset": args.preset, "threshold": args.threshold, "seeds": per_seed,
                      "all_passed": all(s["passed"] for s in per_seed.values()),
                      "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
