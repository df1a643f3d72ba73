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
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

sys.path.insert(0, str(Path(__file__).parent))
from bench_learning import check_overrides, read_metrics, run_seed, seed_summary  # noqa: E402  (the shared multi-seed helpers)

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


def build_weak_bc_policy(out: Path, preset: str, chunk: int = 1) -> Path:
    """A weak BC start: 40 demos of the scripted expert with action noise 0.5, 120 BC steps (~55 % greedy).
    BC orders the bins (neighbouring bins get neighbouring head rows); a random head leaves them unordered."""
    policy = out / "pretrain" / "checkpoints" / "last" / "pretrained_model"
    if (policy / "policy.json").exists():
        return policy
    cli = [sys.executable, "-m", "vla_rl.cli"]
    subprocess.run(cli + ["collect", "--env", ENV, "--episodes", "40", "--noise", "0.5", "--seed", "0",
                          "--out", str(out / "demos")], check=True, stdout=sys.stderr)
    subprocess.run(cli + ["pretrain", "--demos", f"[{out / 'demos'}]", "--policy.preset", preset, "--steps", "120",
                          "--batch_size", "32", "--warmup_steps", "10", "--policy.chunk_size", str(chunk),
                          "--eval_every", "120", "--eval_episodes", "100",
                          "--save_every", "120", "--out", str(out / "pretrain")], check=True, stdout=sys.stderr)
    return policy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="train seeds, one run each")
    ap.add_argument("--config", type=Path, default=CONFIG, help="the train config (default: %(default)s)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a train option over the config, e.g. --set group_size=4 (repeatable)")
    ap.add_argument("--start", choices=("bc", "random"), default="bc",
                    help="bc: a weak BC policy (40 noisy demos, 120 steps); random: a randomly initialised one")
    ap.add_argument("--preset", default="small", help="backbone preset of the start (default: small, the quickstart's)")
    ap.add_argument("--chunk", type=int, default=1,
                    help="action chunk K of the BC start (K > 1: each decision emits K x 2 tokens, of which the 2-step "
                         "episode uses the first 2 actions; tests the chunked path, with --set ratio=token)")
    ap.add_argument("--out", type=Path, default=Path("outputs/sanity"), help="runs go to OUT/seed_<s>")
    ap.add_argument("--threshold", type=float, default=0.95, help="greedy success every seed must reach")
    ap.add_argument("--window", type=int, default=5, help="iterations pooled for the first/last sampled success")
    args = ap.parse_args(argv)
    check_overrides(ap, args.set)
    if args.chunk > 1 and args.start != "bc":
        ap.error("--chunk > 1 needs --start bc (the chunked BC start)")
    start = args.out / ("start" if args.chunk == 1 else f"start_k{args.chunk}")  # one cached start per K
    policy = (build_weak_bc_policy(start, args.preset, args.chunk) if args.start == "bc" else
              build_random_policy(args.out / "start" / "pretrained_model", args.preset, seed=0))
    per_seed = {}
    for seed in args.seeds:
        wall = run_seed(args.out / f"seed_{seed}", seed, args.config, args.set, policy)
        per_seed[seed] = {**seed_summary(read_metrics(args.out / f"seed_{seed}" / "metrics.jsonl"), args.threshold,
                                         args.window), "wall_s": round(wall, 1)}
        print(f"seed {seed}: {json.dumps(per_seed[seed])}", file=sys.stderr)
    import torch

    print(json.dumps({"benchmark": "sanity", "env": ENV, "config": str(args.config), "overrides": args.set,
                      "start": args.start, "preset": args.preset, "chunk": args.chunk, "threshold": args.threshold,
                      "seeds": per_seed,
                      "all_passed": all(s["passed"] for s in per_seed.values()),
                      "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
