"""Reading `vla-rl train` runs back: their greedy evaluations and a summary over seeds (benchmarks use it)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def read_rows(run: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl (one per iteration; row 0 = the starting policy with --eval_before)."""
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]


VALIDATION_FILE = "validation.jsonl"


def read_validation(run: str | Path) -> dict[int, float]:
    """Validation success by iteration: `val/success_rate` of the run's own rows (--val_episodes) or, for a run
    trained without, of RUN/validation.jsonl (experiments/validate_checkpoints.py, after the fact)."""
    found = {int(r["iteration"]): float(r["val/success_rate"]) for r in read_rows(run) if "val/success_rate" in r}
    path = Path(run) / VALIDATION_FILE
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                found.setdefault(int(r["iteration"]), float(r["val/success_rate"]))
    return found


def evaluations(rows: list[dict], validation: dict[int, float] | None = None) -> list[dict]:
    """Greedy evaluations of a run: iteration, env steps, minutes, success, Wilson CI, KL to the reference, and the
    validation success of the same checkpoint where one was measured."""
    evals = [{"iteration": r["iteration"], "env_steps": r["env_steps"], "minutes": round(r["time_s"] / 60, 1),
              "success": r["eval/success_rate"], "ci95": [r["eval/success_ci_low"], r["eval/success_ci_high"]],
              "kl_per_token": r.get("kl/ref_per_token")} for r in rows if "eval/success_rate" in r]
    for e in evals:
        if validation and e["iteration"] in validation:
            e["val_success"] = validation[e["iteration"]]
    return evals


def pick_by_validation(evals: list[dict], up_to: int | None = None) -> dict | None:
    """The evaluation `vla-rl train --val_episodes` would make `checkpoints/best` (highest validation success, the
    later of equals; the start, iteration 0, is no candidate), among iterations <= up_to."""
    from vla_rl.checkpoints import is_better

    best = None
    for e in sorted(evals, key=lambda e: e["iteration"]):
        if "val_success" in e and e["iteration"] > 0 and (up_to is None or e["iteration"] <= up_to) and \
                is_better(e["val_success"], None if best is None else {"success_rate": best["val_success"]}):
            best = e
    return best


def mean_interval(xs: list[float], level: float = 0.95) -> list[float] | None:
    """Student-t interval of the mean success over seeds (a seed is the unit of variation), cut to [0, 1]; None for
    one seed. With 3-4 seeds it is wide: t(0.975) is 4.3 for 3 seeds, 3.2 for 4."""
    if len(xs) < 2:
        return None
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5
    return [round(max(0.0, statistics.fmean(xs) - half), 4), round(min(1.0, statistics.fmean(xs) + half), 4)]


def selection_summary(runs: list[dict], before: float | None, up_to: int | None = None) -> dict:
    """Per group: each seed's validation-picked checkpoint (iteration, validation and test success) and the mean
    test success over seeds — the figure a user gets who keeps `checkpoints/best` (test seeds never seen by the pick)."""
    out: dict = {}
    for r in runs:
        pick = pick_by_validation(r["evals"], up_to)
        if pick is not None:
            out.setdefault(r["group"], {"seeds": []})["seeds"].append(
                {"run": r.get("run"), "iteration": pick["iteration"], "minutes": pick["minutes"],
                 "val_success": pick["val_success"], "success": pick["success"], "ci95": pick["ci95"]})
    for group in out.values():
        xs = [s["success"] for s in group["seeds"]]
        group.update({"mean": round(statistics.fmean(xs), 4), "min": min(xs), "max": max(xs),
                      "std": round(statistics.stdev(xs), 4) if len(xs) > 1 else None,
                      "mean_ci95_over_seeds": mean_interval(xs)})
        if before is not None:
            group["mean_gain_points"] = round(100 * (group["mean"] - before), 1)
    return out


def seed_summary(runs: list[dict], before: float | None) -> dict:
    """Per group (one setting run with several seeds) and evaluated iteration: mean, sample std, min and max of the
    greedy success over the seeds. The evaluation seeds are the same for every run, so a training seed — not an
    episode — is the unit of variation."""
    groups: dict[str, dict[int, list[float]]] = {}
    for r in runs:
        for e in r["evals"]:
            groups.setdefault(r["group"], {}).setdefault(e["iteration"], []).append(e["success"])
    out: dict = {}
    for name, by_it in groups.items():
        out[name] = {}
        for it, xs in sorted(by_it.items()):
            row = {"seeds": len(xs), "mean": round(statistics.fmean(xs), 4), "min": min(xs), "max": max(xs),
                   "std": round(statistics.stdev(xs), 4) if len(xs) > 1 else None, "mean_ci95_over_seeds": mean_interval(xs)}
            if before is not None:
                row["mean_gain_points"] = round(100 * (row["mean"] - before), 1)
            out[name][str(it)] = row
    return out


def gain_ratio(success: float, reference_success: float, before: float) -> float | None:
    """(success − before) ÷ (reference_success − before): the share of the reference's gain reached. None when the
    reference did not gain (a ratio of two losses, or of anything to zero, says nothing)."""
    if reference_success <= before:
        return None
    return round((success - before) / (reference_success - before), 3)


def start_success(runs: list[dict]) -> float:
    """The starting policy's greedy success from the runs' iteration-0 evaluations (written with eval_before). Every
    run starts from the same policy on the same evaluation seeds, so they must agree; ValueError otherwise."""
    befores = {e["success"] for r in runs for e in r["evals"] if e["iteration"] == 0}
    missing = [str(r.get("run", r.get("group"))) for r in runs if not any(e["iteration"] == 0 for e in r["evals"])]
    if missing or len(befores) != 1:
        raise ValueError(f"the runs' iteration-0 evaluations give no single value (values {sorted(befores)}, runs "
                         f"without one {missing}): pass the starting policy's success")
    return befores.pop()


def parse_run_spec(spec: str) -> tuple[str, Path]:
    """GROUP=DIR (or DIR: the group is the directory's name)."""
    group, _, run = spec.rpartition("=")
    return group or Path(run).name, Path(run)


# The evaluated policies of a train run, by their key in an evaluation result: greedy, and sampled (--eval_sampled).
EVALUATED_POLICIES = ("success_rate", "sampled_success_rate")


def before_after_fields(before: dict, after: dict) -> dict:
    """The train summary's `<key>_before[_ci95]` (the start's evaluation) and `<key>[_ci95]` (the last one) for each
    evaluated policy the two results hold."""
    out = {}
    for key in EVALUATED_POLICIES:
        if key in before:
            out.update({f"{key}_before": before[key], f"{key}_before_ci95": before[f"{key}_ci95"]})
    for key in EVALUATED_POLICIES:
        if key in after:
            out.update({key: after[key], f"{key}_ci95": after[f"{key}_ci95"]})
    return out


def before_after_line(before: dict, after: dict, key: str, head: str, after_words: str = "after") -> str:
    """'HEAD: A% before RL (95% CI a%-b%) -> B% AFTER_WORDS (95% CI c%-d%)' for one evaluated policy."""
    (lo0, hi0), (lo1, hi1) = before[f"{key}_ci95"], after[f"{key}_ci95"]
    return (f"{head}: {before[key]:.0%} before RL (95% CI {lo0:.0%}-{hi0:.0%}) -> {after[key]:.0%} {after_words} "
            f"(95% CI {lo1:.0%}-{hi1:.0%})")
