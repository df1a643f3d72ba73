"""Re-read rollout success from metrics.jsonl logs written before `rollout/success_rate` counted each env's first
episode only (issue 22): JSON per run on stdout.

Those logs pooled every finished episode of an iteration. With `n_envs` envs whose rollout window equals the time
limit (Meta-World K = 5: 40 decisions, 200 env steps), a failure fills the window, so every finished episode beyond
each env's first one ended early, i.e. succeeded. The first-episode rate is therefore exact to recover:
(success_rate * episodes - (episodes - n_envs)) / n_envs. Logs written since carry it directly.

    python experiments/reread_first_episodes.py docs/rl_runs/button_press_k5_critic_*_metrics.jsonl \\
        > docs/reread_first_episodes.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learning import read_metrics, two_proportion_z  # noqa: E402


def first_episode_rates(rows: list[dict], n_envs: int) -> list[float]:
    out = []
    for r in rows:
        e, s = r.get("rollout/episodes"), r.get("rollout/success_rate")
        if r.get("iteration", 0) > 0 and e and s is not None:
            if e < n_envs:
                raise ValueError(f"iteration {r['iteration']}: {e} episodes from {n_envs} envs — the window does not "
                                 "cover the time limit, the first-episode rate cannot be recovered")
            out.append((s * e - (e - n_envs)) / n_envs)
    return out


def reread(path: Path, n_envs: int, window: int) -> dict:
    rates = first_episode_rates(read_metrics(path), n_envs)
    w = min(window, len(rates) // 2)
    p0, p1 = sum(rates[:w]) / w, sum(rates[-w:]) / w
    return {"run": str(path), "n_envs": n_envs, "first_episode_success": [round(x, 3) for x in rates],
            "first": round(p0, 3), "last": round(p1, 3), "episodes_per_window": w * n_envs,
            "delta": round(p1 - p0, 3), "z": two_proportion_z(p0, w * n_envs, p1, w * n_envs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+", type=Path, help="metrics.jsonl files of runs with one runner")
    ap.add_argument("--n_envs", type=int, default=32, help="envs per iteration (env_runners x envs_per_runner)")
    ap.add_argument("--window", type=int, default=5, help="iterations pooled at the start and at the end")
    args = ap.parse_args(argv)
    print(json.dumps([reread(p, args.n_envs, args.window) for p in args.logs], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
