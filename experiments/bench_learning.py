"""Does a train config learn, on every seed, beside a no-credit control? One `vla-rl train` run per seed (and per
control seed), a table per seed, JSON on stdout (issue 22's multi-seed learning benchmark).

Per run, from its metrics.jsonl: greedy success before / at each evaluation / after (Wilson 95 % CI), the sampled
policy's success at the same evaluations, sampled rollout success pooled over the first and last `--window`
iterations (what PPO maximises) with a two-proportion z, token entropy first/last, wall-clock. The verdict applies
issue 22's rule per seed: greedy gain >= `--gain` over the run's own start or an end >= `--reach`, sampled rollouts
up >= `--sampled_gain`, entropy falling; and the no-credit control (`--shuffle_advantages true`, same budget) within
+-`--control_band` of its start on average. No checkpoint is picked: "after" is the last iteration's evaluation.

    python experiments/bench_learning.py --config experiments/train/drawer_open_chunk5.yaml --seeds 0 1 2 \\
        --control_seeds 0 > docs/bench_learning_drawer.json
    python experiments/bench_learning.py --config C --seeds 0 --set temperature=0.7   # a variant, one seed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pooled_success(rows: list[dict]) -> tuple[float | None, int]:
    k = n = 0.0
    for r in rows:
        e, s = r.get("rollout/episodes"), r.get("rollout/success_rate")
        if e and s is not None:
            k, n = k + s * e, n + e
    return (round(k / n, 3) if n else None), int(n)


def two_proportion_z(p0: float | None, n0: int, p1: float | None, n1: int) -> float | None:
    """z of p1 - p0 with the pooled standard error (|z| < 2: indistinguishable from no change)."""
    if p0 is None or p1 is None or not n0 or not n1:
        return None
    p = (p0 * n0 + p1 * n1) / (n0 + n1)
    se = math.sqrt(max(p * (1 - p), 1e-12) * (1 / n0 + 1 / n1))
    return round((p1 - p0) / se, 2)


def seed_summary(rows: list[dict], threshold: float, window: int) -> dict:
    """One run's table from its metrics.jsonl rows."""
    evals = [(r["iteration"], r["eval/success_rate"], r.get("eval/success_ci_low"), r.get("eval/success_ci_high"),
              r.get("eval/sampled_success_rate")) for r in rows if r.get("eval/success_rate") is not None]
    it = [r for r in rows if r.get("iteration", 0) > 0]
    w = min(window, len(it) // 2)  # the first and last windows never overlap (a short run pools fewer iterations)
    first, last = (pooled_success(it[:w]), pooled_success(it[-w:])) if w else ((None, 0), (None, 0))
    ent = [r["policy/entropy"] for r in it if r.get("policy/entropy") is not None]
    reached = next((i for i, s, *_ in evals if i > 0 and s >= threshold), None)
    start = next((e for e in evals if e[0] == 0), None)
    end = next((e for e in reversed(evals) if e[0] > 0), None)  # only an evaluation after training is a result
    return {
        "greedy_before": start[1] if start else None,
        "greedy_after": end[1] if end else None, "greedy_after_ci95": list(end[2:4]) if end else None,
        "sampled_eval_before": start[4] if start else None,
        "sampled_eval_after": end[4] if end else None,
        "greedy_by_iteration": {i: s for i, s, *_ in evals},
        "sampled_eval_by_iteration": {i: s for i, *_, s in evals},
        f"sampled_first_{window}": first[0], "episodes_first": first[1],
        f"sampled_last_{window}": last[0], "episodes_last": last[1],
        "sampled_z": two_proportion_z(first[0], first[1], last[0], last[1]), "window_used": w,
        "entropy_first_last": [round(ent[0], 3), round(ent[-1], 3)] if ent else None,
        "first_iteration_at_threshold": reached, "iterations": len(it),
        "env_steps": sum(int(r.get("rollout/env_steps", 0)) for r in it),
        "passed": end is not None and end[1] >= threshold,
    }


def run_seed(out: Path, seed: int, config: Path, overrides: list[str], policy: Path | None = None) -> float:
    """`vla-rl train` on `config` with `overrides` (KEY=VALUE), one seed, into `out`; returns the wall-clock."""
    cmd = [sys.executable, "-m", "vla_rl.cli", "train", "--config_path", str(config), "--seed", str(seed),
           "--out", str(out), "--overwrite", "true", "--wandb.mode", "disabled", "--eval_before", "true"]
    if policy is not None:
        cmd += ["--policy", str(policy)]
    for item in overrides:
        key, _, value = item.partition("=")
        cmd += [f"--{key}", value]
    t0 = time.perf_counter()
    if subprocess.run(cmd, stdout=sys.stderr).returncode:  # its own one-line error is already on stderr
        raise SystemExit(f"error: vla-rl train failed for seed {seed} (run {out}); see its message above")
    return time.perf_counter() - t0


def finished_wall(out: Path) -> float | None:
    """The recorded wall-clock (`time_s` of the last row) of a run in `out` that reached its configured iterations,
    or None when there is no such finished run (then it is run again)."""
    import yaml

    metrics, config = out / "metrics.jsonl", out / "train_config.yaml"
    if not (metrics.is_file() and config.is_file()):
        return None
    try:
        rows = read_metrics(metrics)
    except json.JSONDecodeError:  # a run killed mid-write: run it again
        return None
    iterations = (yaml.safe_load(config.read_text()) or {}).get("iterations")
    if not rows or rows[-1].get("iteration") != iterations or "eval/success_rate" not in rows[-1] \
            or "eval/success_rate" not in rows[0]:
        return None
    return float(rows[-1].get("time_s", 0.0))


def check_overrides(ap: argparse.ArgumentParser, items: list[str]) -> None:
    """Refuse a --set item that is not KEY=VALUE before any run starts (exit 2, one line)."""
    bad = [item for item in items if "=" not in item or not item.partition("=")[0]]
    if bad:
        ap.error(f"--set {bad[0]!r}: expected KEY=VALUE, e.g. --set temperature=0.5")


def seed_verdict(s: dict, gain: float, reach: float, sampled_gain: float, window: int) -> dict:
    """Issue 22's per-seed rule on one credit run's summary."""
    g0, g1 = s["greedy_before"], s["greedy_after"]
    first, last = s[f"sampled_first_{window}"], s[f"sampled_last_{window}"]
    ent = s["entropy_first_last"]
    gained = g0 is not None and g1 is not None and g1 - g0 >= gain - 1e-9
    return {"greedy_gain": None if g0 is None or g1 is None else round(g1 - g0, 3),
            "greedy_ok": gained or (g1 is not None and g1 >= reach - 1e-9),
            "sampled_gain": None if first is None or last is None else round(last - first, 3),
            "sampled_ok": first is not None and last is not None and last - first >= sampled_gain - 1e-9,
            "entropy_falling": bool(ent) and ent[1] < ent[0]}


def control_mean_change(controls: list[dict]) -> float | None:
    """Mean greedy change (after - before) of the no-credit control runs; None when none ran. Every run evaluates its
    start (`run_seed` passes --eval_before true), so a control without both evaluations is an error, not a skip."""
    if not controls:
        return None
    missing = [i for i, r in enumerate(controls) if r["greedy_before"] is None or r["greedy_after"] is None]
    if missing:
        raise ValueError(f"control runs {missing} have no start or end evaluation: cannot judge the control")
    return round(sum(r["greedy_after"] - r["greedy_before"] for r in controls) / len(controls), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True, help="the train config every run uses")
    ap.add_argument("--policy", type=Path, default=None, help="start policy over the config's (default: the config's)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4],
                    help="train seeds, one run each (none: only the control seeds run)")
    ap.add_argument("--control_seeds", type=int, nargs="*", default=[],
                    help="seeds of the no-credit control (--shuffle_advantages true, same budget); none by default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a train option over the config, e.g. --set temperature=0.5 (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_learning"), help="runs go to OUT/<arm>_s<seed>")
    ap.add_argument("--reuse", action="store_true",
                    help="summarise a run already finished in OUT/<arm>_s<seed> (same config assumed) instead of "
                         "running it again: continues an interrupted benchmark; its wall is the run's own time_s")
    ap.add_argument("--window", type=int, default=5, help="iterations pooled for the first/last sampled success")
    ap.add_argument("--gain", type=float, default=0.20, help="greedy gain over the run's start a seed needs")
    ap.add_argument("--reach", type=float, default=0.90, help="...or the greedy success it may end at instead")
    ap.add_argument("--sampled_gain", type=float, default=0.20, help="sampled rollout gain (last - first window)")
    ap.add_argument("--control_band", type=float, default=0.05, help="the control's mean greedy change must be within")
    args = ap.parse_args(argv)
    check_overrides(ap, args.set)

    runs: dict[str, dict] = {}
    for arm, seeds, extra in (("credit", args.seeds, []), ("control", args.control_seeds,
                                                           ["shuffle_advantages=true"])):
        for seed in seeds:
            out = args.out / f"{arm}_s{seed}"
            wall = finished_wall(out) if args.reuse else None
            reused = wall is not None
            if not reused:
                wall = run_seed(out, seed, args.config, args.set + extra, args.policy)
            row = {**seed_summary(read_metrics(out / "metrics.jsonl"), args.reach, args.window),
                   "wall_s": round(wall, 1), "reused": reused}  # reused: wall is the run's time_s (no Ray start-up)
            if arm == "credit":
                row["verdict"] = seed_verdict(row, args.gain, args.reach, args.sampled_gain, args.window)
            runs[f"{arm}_s{seed}"] = row
            print(f"{arm} seed {seed}: {json.dumps(row)}", file=sys.stderr)
    credit = [r for k, r in runs.items() if k.startswith("credit")]
    control_mean = control_mean_change([r for k, r in runs.items() if k.startswith("control")])
    import torch

    print(json.dumps({
        "benchmark": "learning", "config": str(args.config), "overrides": args.set, "policy": str(args.policy or ""),
        "rule": {"gain": args.gain, "reach": args.reach, "sampled_gain": args.sampled_gain, "window": args.window,
                 "control_band": args.control_band},
        "runs": runs,
        "all_seeds_greedy_ok": bool(credit) and all(r["verdict"]["greedy_ok"] for r in credit),
        "all_seeds_sampled_ok": bool(credit) and all(r["verdict"]["sampled_ok"] for r in credit),
        "control_mean_greedy_change": control_mean,
        "control_ok": None if control_mean is None else abs(control_mean) <= args.control_band,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
