"""`vla-rl reward label`: sample candidate pairs, select queries, label them, append to a pair dataset.

Prints a JSON line: requested / answered / valid (labelled) / abstained / unanswered counts, the
label source, the causes of unanswered pairs (`errors`: message -> count, e.g. the server's reason
for an HTTP 400, or a reply cut at max_tokens) and — when privileged ground truth exists —
`teacher_accuracy` (labels agreeing with the ground-truth preference, ties and abstains excluded).
Unanswered pairs are stored "unlabeled" (nothing is lost; `--retry_unlabeled true` asks again).
When not one pair was answered the run fails (exit code 2) with the most common cause.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np

from reward_models.config import RewardLabelConfig
from vla_rl.base.errors import VLARLError


class LabelingError(VLARLError):
    """Not one query was answered: the labeler (server, model) is unusable as configured."""


def teacher_accuracy(pairs, results) -> float | None:
    hits = n = 0
    for p, r in zip(pairs, results, strict=True):
        if r.status != "labeled" or r.label == 0.5 or p.gt_return is None or p.gt_return[0] == p.gt_return[1]:
            continue
        n += 1
        hits += (r.label == 1.0) == (p.gt_return[1] > p.gt_return[0])
    return hits / n if n else None


def run(cfg: RewardLabelConfig) -> int:
    from reward_models.pairs import PairDataset
    from reward_models.segments import load_episodes, sample_candidates, select_pairs
    from vla_rl.base.outputs import PAIRS, prepare_output

    prepare_output(cfg.out, PAIRS, append=True)
    rng = np.random.default_rng(cfg.seed)
    ds = PairDataset(cfg.out, create=True)
    if cfg.retry_unlabeled:
        queries = [ds.load(i) for i, e in enumerate(ds.entries) if e["status"] == "unlabeled"][:cfg.pairs]
    else:
        episodes = load_episodes(cfg.data)
        model = None
        if cfg.model:
            from reward_models.reward_model import RewardEnsemble

            model = RewardEnsemble.load(cfg.model)
        pool = cfg.pairs * (cfg.pool_factor if cfg.selection != "uniform" else 1)
        candidates = sample_candidates(episodes, pool, cfg.segment_length, rng)
        queries = select_pairs(candidates, cfg.pairs, cfg.selection, model, rng)
    from pathlib import Path

    from reward_models.labelers import make_labeler

    labeler = make_labeler(cfg, cfg.cache_dir or Path(cfg.out) / "vlm_cache", seed=cfg.seed)
    results = labeler.label(queries)
    for p, r in zip(queries, results, strict=True):
        p.provenance = r.provenance  # a failed call keeps its error message
        if r.status != "unlabeled":
            p.status, p.label, p.label_source = r.status, r.label, r.source
    if cfg.retry_unlabeled:
        ds.set_labels((p.id, p.status, p.label, p.label_source, p.provenance) for p in queries)
        added = 0
    else:
        added = ds.add(queries)  # failed calls are stored "unlabeled": nothing is lost, retry later
    counts = {s: sum(r.status == s for r in results) for s in ("labeled", "abstain", "unlabeled")}
    summary = {"requested": len(queries), "answered": counts["labeled"] + counts["abstain"], "valid": counts["labeled"],
               "abstained": counts["abstain"], "unanswered": counts["unlabeled"], "added": added,
               "duplicates": 0 if cfg.retry_unlabeled else len(queries) - added, "labeler": labeler.name,
               "teacher_accuracy": teacher_accuracy(queries, results), "total_pairs": len(ds), "out": cfg.out}
    errors = Counter(r.provenance.get("error", "no answer") for r in results if r.status == "unlabeled")
    summary["errors"] = dict(errors.most_common(5))
    print(f"labelled {counts['labeled']} of {len(queries)} pairs with {labeler.name}", file=sys.stderr)
    for message, n in errors.most_common(3):
        print(f"  {n} unanswered: {message}", file=sys.stderr)
    print(json.dumps(summary))
    if queries and summary["answered"] == 0:
        cause, n = errors.most_common(1)[0]
        raise LabelingError(f"labeler {labeler.name}: none of {len(queries)} pairs was answered ({n} x {cause}); "
                            f"they are kept 'unlabeled' in {cfg.out} — fix the cause, then rerun with "
                            "--retry_unlabeled true")
    return 0
