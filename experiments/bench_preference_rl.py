"""Online preference RL against ground-truth-reward RL, from the same BC policy and budget (JSON out).

    python experiments/bench_preference_rl.py --before 0.30 \\
        --gt C=/work/runs/drawer_c C=/work/runs/drawer_c_s1 --pref oracle=/work/runs/drawer_pref_s0

Runs are `vla-rl train` directories (experiments/train/drawer_open.yaml for the ground-truth reward,
experiments/train/drawer_open_preference.yaml for the learned one, same seeds and iterations), each given as
GROUP=DIR so that seeds of one setting pool. Reports, per group and evaluated iteration, the greedy success over
seeds (mean, std, min, max) and, for every preference group, the **gain ratio** = (mean success − before) ÷
(ground-truth mean success − before) at the same iteration (goal ≥ 0.9 with the oracle teacher), the queries used
and labels per env step, the reward model's quality at each update (held-out accuracy, Spearman vs progress,
correlation of learned and env reward per batch), and the wall-clock share of labelling and reward-model updates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.bench_rl import machine  # noqa: E402
from vla_rl.run_summary import (  # noqa: E402
    evaluations,
    gain_ratio,
    parse_run_spec,
    read_rows,
    seed_summary,
    start_success,
)


def preference_stats(rows: list[dict]) -> dict:
    train = [r for r in rows if r["iteration"] > 0]
    if not train:
        return {}
    last = train[-1]
    updates, version = [], 0.0
    for r in train:
        if r.get("reward_model/version", 0) != version:  # this iteration trained a new version
            version = r["reward_model/version"]
            updates.append({"iteration": r["iteration"], "version": r["reward_model/version"],
                            "pairs": r.get("reward_model/pairs"),
                            "heldout_accuracy": r.get("reward_model/heldout_accuracy"),
                            "spearman_vs_progress": r.get("reward_model/spearman_vs_progress"),
                            "reward_gt_corr": r.get("reward/gt_corr")})
    loop_s = sum(r.get("perf/time_label", 0) + r.get("perf/time_reward_model", 0) for r in train)
    train_s = sum(r.get("perf/sample_s", 0) + r.get("perf/learn_s", 0) + r.get("perf/sync_s", 0)
                  + r.get("perf/time_label", 0) + r.get("perf/time_reward_model", 0) for r in train)
    label_s = sum(r.get("perf/time_label", 0) for r in train)
    rm_s = sum(r.get("perf/time_reward_model", 0) for r in train)
    teacher = [r["labels/teacher_accuracy"] for r in train if isinstance(r.get("labels/teacher_accuracy"), float)
               and r["labels/teacher_accuracy"] == r["labels/teacher_accuracy"]]
    return {"queries": last.get("labels/requested"), "labels_valid": last.get("labels/valid"),
            "env_steps": last["env_steps"],
            "labels_per_env_step": round(last.get("labels/requested", 0) / max(last["env_steps"], 1), 5),
            "teacher_accuracy_mean": round(statistics.fmean(teacher), 4) if teacher else None,
            "share_label": round(label_s / train_s, 4) if train_s else None,
            "share_reward_model": round(rm_s / train_s, 4) if train_s else None,
            "share_preference_loop": round(loop_s / train_s, 4) if train_s else None,
            "reward_model_updates": updates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", nargs="+", required=True, help="ground-truth-reward runs, GROUP=DIR")
    ap.add_argument("--pref", nargs="+", required=True, help="preference-reward runs, GROUP=DIR (e.g. oracle=..., mistake=...)")
    ap.add_argument("--before", type=float, default=None,
                    help="greedy success of the starting policy (default: the runs' own iteration-0 evaluation, "
                         "written with eval_before; they must agree)")
    args = ap.parse_args()

    runs, pref_runs = [], []
    for kind, specs in (("gt", args.gt), ("pref", args.pref)):
        for spec in specs:
            group, run = parse_run_spec(spec)
            rows = read_rows(run)
            entry = {"run": str(run), "group": group, "kind": kind, "evals": evaluations(rows)}
            if kind == "pref":
                entry["preference"] = preference_stats(rows)
                pref_runs.append(entry)
            runs.append(entry)
    if args.before is None:
        try:
            args.before = start_success(runs)
        except ValueError as e:
            raise SystemExit(f"--before: {e}") from None
    groups = seed_summary(runs, args.before)
    gt_groups = {r["group"] for r in runs if r["kind"] == "gt"}
    if len(gt_groups) != 1:
        raise SystemExit(f"--gt: give one ground-truth group (got {sorted(gt_groups)})")
    gt = groups[gt_groups.pop()]
    ratios = {}
    for name in sorted({r["group"] for r in pref_runs}):
        ratios[name] = {}
        for it, row in groups.get(name, {}).items():
            if it in gt and it != "0":
                ratios[name][it] = gain_ratio(row["mean"], gt[it]["mean"], args.before)
    result = {"benchmark": "preference_rl", "machine": machine(), "command": " ".join(sys.argv), "before": args.before,
              "groups": groups, "gain_ratio_vs_ground_truth": ratios, "runs": runs}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
