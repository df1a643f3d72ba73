"""Validate a `vla-rl train` run's saved checkpoints after the fact (a run trained without --val_episodes).

Each checkpoint is evaluated greedily, exactly as `vla-rl eval --seed SEED --episodes N --videos 0`, on
validation seeds that must not overlap the run's evaluation seeds (its train_config.yaml); the result
goes to RUN/validation/<iteration>/eval.json (reused when present with the same seeds) and one row per
iteration to RUN/validation.jsonl, which `experiments/bench_rl.py learning` reads to pick a checkpoint
per seed by the same rule as `checkpoints/best` (highest validation success, the later of equals).

    python experiments/validate_checkpoints.py --run outputs/train/drawer --iterations 10 20 30 40 50
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from vla_rl.base.atomic_io import atomic_write_text
from vla_rl.base.validation import seeds_overlap
from vla_rl.run_summary import VALIDATION_FILE


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2 (the project's convention), nothing written."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a `vla-rl train` output directory")
    ap.add_argument("--iterations", type=int, nargs="+", required=True, help="saved checkpoints to validate")
    ap.add_argument("--episodes", type=int, default=30, help="validation episodes per checkpoint")
    ap.add_argument("--seed", type=int, default=20_000, help="first validation seed (train's val_seed default)")
    args = ap.parse_args()
    run = Path(args.run)
    cfg_path = run / "train_config.yaml"
    if not cfg_path.is_file():
        fail(f"{cfg_path}: missing — --run must be a `vla-rl train` output directory")
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    lo, n = int(cfg.get("eval_seed", 10_000)), int(cfg.get("eval_episodes", 30))
    if seeds_overlap(args.seed, args.episodes, lo, n):
        fail(f"--seed {args.seed}: validation seeds {args.seed}-{args.seed + args.episodes - 1} overlap the "
                 f"run's evaluation seeds {lo}-{lo + n - 1} ({cfg_path}) — pick another --seed")
    for it in args.iterations:
        if not (run / "checkpoints" / f"{it:06d}" / "pretrained_model").is_dir():
            fail(f"{run / 'checkpoints' / f'{it:06d}'}: no such checkpoint (saved every save_every)")
    from vla_rl.cli import main as cli

    rows = []
    for it in args.iterations:
        out = run / "validation" / f"{it:06d}"
        result_path = out / "eval.json"
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
        if result is None or (result.get("seed"), result.get("episodes"), result.get("greedy")) != \
                (args.seed, args.episodes, True):
            code = cli(["eval", "--policy", str(run / "checkpoints" / f"{it:06d}" / "pretrained_model"), "--seed",
                        str(args.seed), "--episodes", str(args.episodes), "--videos", "0", "--out", str(out),
                        "--overwrite", "true"])
            if code:
                sys.exit(code)
            result = json.loads(result_path.read_text())
        rows.append({"iteration": it, "val/success_rate": result["success_rate"],
                     "val/success_ci_low": result["success_rate_ci95"][0],
                     "val/success_ci_high": result["success_rate_ci95"][1], "val/return": result["mean_return"],
                     "val/length": result["mean_length"], "val/seed": args.seed,
                     "val/episodes": args.episodes})
    atomic_write_text(run / VALIDATION_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps({"run": str(run), "validation": rows}, indent=1))


if __name__ == "__main__":
    main()
