"""`vla-rl reward label`: sample candidate pairs, select queries, label them, append to a pair dataset.

Prints a JSON line: requested / answered / valid (labelled) / abstained / unanswered counts, the
label source, and — when privileged ground truth exists — `teacher_accuracy` (labels agreeing with
the ground-truth preference, ties and abstains excluded).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from reward_models.config import RewardLabelConfig


def make_labeler(cfg: RewardLabelConfig):
    from reward_models.labelers import ScriptedLabeler

    return ScriptedLabeler(cfg.teacher, seed=cfg.seed)


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

    rng = np.random.default_rng(cfg.seed)
    episodes = load_episodes(cfg.data)
    model = None
    if cfg.model:
        from reward_models.reward_model import RewardEnsemble

        model = RewardEnsemble.load(cfg.model)
    pool = cfg.pairs * (cfg.pool_factor if cfg.selection != "uniform" else 1)
    candidates = sample_candidates(episodes, pool, cfg.segment_length, rng)
    queries = select_pairs(candidates, cfg.pairs, cfg.selection, model, rng)
    labeler = make_labeler(cfg)
    results = labeler.label(queries)
    for p, r in zip(queries, results, strict=True):
        if r.status != "unlabeled":
            p.status, p.label, p.label_source, p.provenance = r.status, r.label, r.source, r.provenance
    ds = PairDataset(cfg.out, create=True)
    added = ds.add(queries)
    counts = {s: sum(r.status == s for r in results) for s in ("labeled", "abstain", "unlabeled")}
    summary = {"requested": len(queries), "answered": counts["labeled"] + counts["abstain"], "valid": counts["labeled"],
               "abstained": counts["abstain"], "unanswered": counts["unlabeled"], "added": added,
               "duplicates": len(queries) - added, "labeler": labeler.name,
               "teacher_accuracy": teacher_accuracy(queries, results), "total_pairs": len(ds), "out": cfg.out}
    print(f"labelled {counts['labeled']} of {len(queries)} pairs with {labeler.name}", file=sys.stderr)
    print(json.dumps(summary))
    return 0
