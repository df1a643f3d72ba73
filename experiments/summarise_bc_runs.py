"""Summarise BC runs (`vla-rl pretrain` output directories) into one JSON: per run and evaluated step, the greedy
success on the evaluation seeds (Wilson 95 % CI), on the validation seeds, both pooled, and the loss.

Used for the BC-start stability comparisons in docs/learning.md (sections 17-18): the spread of the start over BC
seeds is read from the pooled figure (60 episodes when both evaluations have 30).

    python experiments/summarise_bc_runs.py outputs/metaworld/drawer-open/pretrain_chunk5_cos1500_s{0,1,2} \
        --label "full cosine, 1500 steps" > docs/bench_bc_start_drawer.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from vla_rl.evaluation import wilson_interval


def summarise(run: Path) -> dict:
    config = yaml.safe_load((run / "pretrain_config.yaml").read_text())
    val_n = int(config.get("val_episodes", 0))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    loss = {r["step"]: r["loss"] for r in rows if "loss" in r}
    steps: dict[int, dict] = {}
    for r in rows:
        if "eval/success_rate" in r:
            n, k = r["eval/episodes"], r["eval/successes"]
            steps.setdefault(r["step"], {}).update(
                {"eval_success_rate": round(k / n, 3), "eval_episodes": n, "eval_successes": k,
                 "eval_ci95": [round(x, 3) for x in wilson_interval(k, n)]})
        if "val/success_rate" in r:
            steps.setdefault(r["step"], {})["val_success_rate"] = round(r["val/success_rate"], 3)
    out = []
    for step, s in sorted(steps.items()):
        s = {"step": step, **s, "loss": loss.get(step)}
        if "val_success_rate" in s and "eval_episodes" in s:
            s["val_episodes"] = val_n
            n, k = s["eval_episodes"] + val_n, s["eval_successes"] + round(s["val_success_rate"] * val_n)
            s["pooled_success_rate"] = round(k / n, 3)
            s["pooled_ci95"] = [round(x, 3) for x in wilson_interval(k, n)]
        out.append(s)
    keys = ("seed", "steps", "lr", "batch_size", "ema_decay", "stop_after")
    return {"run": str(run), "options": {k: config.get(k) for k in keys}, "steps": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    json.dump({"benchmark": "bc_start", "label": args.label, "runs": [summarise(r) for r in args.runs]}, sys.stdout,
              indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
