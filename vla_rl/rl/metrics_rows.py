"""The rows of a run's metrics.jsonl: one flat JSON object per iteration (docs/training.md lists the keys).

`flatten_result` maps one `algo.train()` result onto the documented namespaces, `round_row` makes a row strict JSON,
and `truncate_metrics` drops the rows an interrupted run wrote after the checkpoint it resumes from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def flatten_result(result: dict) -> dict[str, float]:
    """The metrics of one `algo.train()` result under the namespaces of docs/training.md."""
    row: dict[str, float] = {}
    for key, value in (result.get("vla") or {}).items():
        row[key] = float(value)
    learner = (result.get("learners") or {}).get("default_policy", {})
    for key, value in learner.items():
        if "/" in key:
            row[key] = float(value)
    skipped = (result.get("learners") or {}).get("losses/skipped_steps")
    if skipped is None:
        skipped = (result.get("learners") or {}).get("__all_modules__", {}).get("losses/skipped_steps")
    if skipped is not None:
        row["losses/skipped_steps"] = float(skipped)
    return row


def round_row(row: dict) -> dict:
    """6 decimals; a metric with no value this iteration (NaN: e.g. no episode finished) is left out, so every
    row is strict JSON."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()
            if not (isinstance(v, float) and not math.isfinite(v))}


def truncate_metrics(path: Path, iteration: int) -> None:
    """Resuming from checkpoint N: the rows the interrupted run wrote after N are redone, so they go."""
    if not path.is_file():
        return
    from vla_rl.base.atomic_io import atomic_write_text

    def keep(line: str) -> bool:
        try:
            return json.loads(line).get("iteration", 0) <= iteration
        except json.JSONDecodeError:  # a row cut by the kill
            return False

    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and keep(line)]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
