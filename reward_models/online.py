"""The online preference loop: rollout frames → queries → labeler actor → pair dataset → Bradley–Terry updates.

`PreferenceLoop.step(iteration, frames)` runs in the driver between sampling and the PPO update, on the batch's
frames (`EpisodeFrames`; the RL side converts RLlib's episodes once, `vla_rl.rl.episodes.episode_frames`):

1. **Queries** (every `query_every` iterations, until `max_queries`): a candidate pool of
   `pool_factor × n` uniform pairs of frames (or segments) of *this* batch's episodes with the same
   instruction; the `n = queries_per_round` most informative (uniform / disagreement / entropy under
   the current ensemble; uniform until one exists) are written to the run's pair dataset as
   "unlabeled" and sent to the labeler actor. Nothing waits for the answer.
2. **Answers** are due `label_lag` iterations later (1 by default: labelling overlaps the next
   iteration's sampling and learning; the driver blocks at the due iteration only if they are
   late, at most `label_wait_s`). Answers go into the pair dataset; pairs whose call failed stay
   "unlabeled" and are asked again with the next round's queries; an abstain is final.
3. **Reward-model update** when new labels arrived: the ensemble is trained on every labelled pair
   of the run (warm start from the current weights, fresh Adam per update, early stopping on the
   held-out accuracy), its normalisation is refreshed on the training frames and then frozen until
   the next update. Runs in the driver: it takes seconds for the RL-VLM-F CNN (measured in
   `perf/time_reward_model`); a second actor would only compete with sampling for the same cores.
4. The new model is returned; the RL side scores the batch with it once (`reward_models.scoring.score_frames`):
   the scores become the actions' rewards and feed the audit `reward_model/spearman_vs_progress`.

The labeler itself sits behind a small client (`reward_models/labeler_actor.py`): a Ray actor in training,
in-process in unit tests.

Before the first model exists, the first round's answers are awaited at once (`label_lag` 0), so
iteration 1 already has a learned reward; if no label arrives at all the loop returns no model and
the caller skips the update (`reward_model/version` stays 0), never training on a reward of zeros.

Determinism and resume: candidate sampling uses the loop's own RNG, a scripted teacher is reseeded
per round, and answers are consumed at fixed iterations, so a run is a function of its seed. The
state (`state()`) holds counters, the RNG, the ids of labelled pairs in the order they were used and
the pending rounds; the pair dataset is append-only. After a resume from an earlier checkpoint the
same queries come round again: those the dataset already holds answers for are taken from it — no
query is asked twice — and pending rounds are sent again (nothing is lost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reward_models.config import PreferenceOptions
from reward_models.labelers.base import LabelResult
from reward_models.pairs import PairDataset
from reward_models.reward_model import RewardEnsemble, RewardModelConfig
from reward_models.segments import EpisodeFrames, sample_candidates, select_pairs


# --- the loop ------------------------------------------------------------------------------------
@dataclass
class _Round:
    ids: list[str]  # every pair of the round
    due: int  # the iteration its answers are consumed at
    seed: int  # the scripted teacher's seed for this round
    asked: list[str] = field(default_factory=list)  # the ids actually sent (those without a stored answer)
    handle: Any = None


@dataclass
class LoopState:
    iterations: int = 0  # the last iteration stepped
    version: int = 0
    rounds: int = 0
    requested: int = 0  # distinct queries asked (a retry of a failed call is not a new query)
    answered: int = 0
    valid: int = 0
    abstained: int = 0
    from_dataset: int = 0  # queries answered from the dataset after a resume (not asked again)
    used: list[str] = field(default_factory=list)  # labelled pair ids, in the order they were answered
    retry: list[str] = field(default_factory=list)  # ids whose call failed: asked again next round
    pending: list[dict] = field(default_factory=list)  # [{"ids", "due", "seed"}]
    rng: dict = field(default_factory=dict)
    last_report: dict = field(default_factory=dict)


class PreferenceLoop:
    def __init__(self, opts: PreferenceOptions, pairs_dir: str | Path, seed: int, labelers,
                 model: RewardEnsemble | None = None, state: dict | None = None):
        self.opts, self.seed, self.labelers = opts, int(seed), labelers
        self.pairs = PairDataset(pairs_dir, create=True)
        self.model = model
        self.state = LoopState(**state) if state else LoopState()
        self.rng = np.random.default_rng(seed + 7_000_003)
        if self.state.rng:
            self.rng.bit_generator.state = self.state.rng
        if state is None and opts.init_pairs:
            self._adopt(opts.init_pairs)
        self.rounds = [_Round(r["ids"], r["due"], r["seed"]) for r in self.state.pending]
        for r in self.rounds:  # after a resume: ask the pending rounds again (answers already stored are reused)
            self._send(r)

    def _adopt(self, path: str | Path) -> None:
        """Copy the labelled pairs of another dataset into the run's; the first update trains on them too."""
        source = PairDataset(path)
        labelled = [p for p in source if p.status == "labeled"]
        for p in labelled:
            p.provenance = {**p.provenance, "copied_from": str(path)}
        self.pairs.add(labelled)
        self.state.used += [p.id for p in labelled if p.id not in set(self.state.used)]

    # --- one iteration ----------------------------------------------------------------------------
    def step(self, iteration: int, frames: EpisodeFrames) -> tuple[dict[str, float], RewardEnsemble | None]:
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        s = self.state
        s.iterations = iteration
        if (iteration - 1) % self.opts.query_every == 0 and s.requested < self.opts.max_queries:
            self._ask(iteration, frames)
        new_ids = self._collect(iteration, metrics)
        t1 = time.perf_counter()
        new_model = None
        if new_ids or (self.model is None and s.used):  # new labels, or adopted pairs and no model yet
            new_model = self._update(metrics)
        t2 = time.perf_counter()
        metrics.update({
            "labels/requested": s.requested, "labels/answered": s.answered, "labels/valid": s.valid,
            "labels/abstained": s.abstained, "labels/pending": sum(len(r.ids) for r in self.rounds) + len(s.retry),
            "labels/from_dataset": s.from_dataset, "labels/actor_restarts": self.labelers.restarts,
            "reward_model/version": s.version, "perf/time_label": t1 - t0, "perf/time_reward_model": t2 - t1})
        for k, v in s.last_report.items():
            metrics.setdefault(k, v)
        return metrics, new_model

    def _ask(self, iteration: int, frames: EpisodeFrames) -> None:
        s, o = self.state, self.opts
        n = min(o.queries_per_round, o.max_queries - s.requested)
        if not frames.image:
            return
        candidates = sample_candidates([frames], n * o.pool_factor, o.segment_length, self.rng)
        method = o.selection if self.model is not None else "uniform"
        queries = select_pairs(candidates, n, method, self.model, self.rng)
        fresh, seen = [], set()
        for q in queries:
            if q.id in seen:
                continue
            seen.add(q.id)
            q.provenance = {"asked_at_iteration": iteration}
            fresh.append(q)
        s.requested += len(fresh)
        self.pairs.add(fresh)  # stored "unlabeled" before anything is asked: nothing can be lost
        ids = [q.id for q in fresh] + s.retry
        s.retry = []
        s.rounds += 1
        lag = o.label_lag if (self.model is not None or s.version > 0) else 0
        r = _Round(ids, iteration + lag, self.seed * 100_003 + s.rounds)
        self.rounds.append(r)
        self._send(r)

    def _send(self, r: _Round) -> None:
        """Ask the labeler for the pairs of `r` that the dataset holds no answer for."""
        r.asked = [i for i in r.ids if self.pairs.entry(i)["status"] == "unlabeled"]
        self.state.from_dataset += len(r.ids) - len(r.asked)
        r.handle = self.labelers.submit([self.pairs.load_id(i) for i in r.asked], r.seed) if r.asked else None

    def _poll(self, iteration: int, metrics: dict, wait_all: bool = False) -> None:
        """Store every answer that has arrived (at once: a crash must not lose it); wait only for rounds due now
        (or for all, before a checkpoint: a resumed run then finds their answers instead of asking again)."""
        for r in self.rounds:
            if r.handle is None:
                continue
            if not self.labelers.wait(r.handle, self.opts.label_wait_s if wait_all or r.due <= iteration else 0.0):
                if r.due <= iteration:
                    metrics["labels/late_rounds"] = metrics.get("labels/late_rounds", 0) + 1
                continue
            results = self.labelers.result(r.handle)
            r.handle = None
            if isinstance(results, str):  # the whole round failed: its pairs stay unlabeled, asked again
                metrics["labels/failed_rounds"] = metrics.get("labels/failed_rounds", 0) + 1
                results = [LabelResult("unlabeled", None, "", {"error": results})] * len(r.asked)
            updates = []
            for pid, res in zip(r.asked, results, strict=True):
                prov = {**(self.pairs.entry(pid).get("provenance") or {}), **res.provenance}
                if res.status == "unlabeled":
                    updates.append((pid, "unlabeled", None, None, prov))  # keeps the failure's cause
                else:
                    updates.append((pid, res.status, res.label, res.source, prov))
            if updates:
                self.pairs.set_labels(updates)

    def _collect(self, iteration: int, metrics: dict) -> list[str]:
        """Consume the answers of the rounds due by `iteration` (fixed iterations: the run stays a function of
        its seed however fast the labeler is); returns the newly labelled ids."""
        self._poll(iteration, metrics)
        s = self.state
        new_ids: list[str] = []
        keep, accuracy, used = [], [], set(s.used)
        for r in self.rounds:
            if r.due > iteration or r.handle is not None:  # not due, or late: the run goes on with the last model
                keep.append(r)
                continue
            for pid in r.ids:
                entry = self.pairs.entry(pid)
                if entry["status"] == "unlabeled":
                    s.retry.append(pid)
                    continue
                s.answered += 1
                if entry["status"] == "abstain":
                    s.abstained += 1
                    continue
                s.valid += 1
                if pid in used:  # the same pair drawn again in a later round: train on it once
                    continue
                used.add(pid)
                s.used.append(pid)
                new_ids.append(pid)
                gt, label = entry.get("gt_return"), entry["label"]
                if label != 0.5 and gt is not None and gt[0] != gt[1] and np.isfinite(gt).all():
                    accuracy.append((label == 1.0) == (gt[1] > gt[0]))
        if accuracy:
            metrics["labels/teacher_accuracy"] = float(np.mean(accuracy))
        self.rounds = keep
        return new_ids

    def _update(self, metrics: dict) -> RewardEnsemble:
        from reward_models.training import train_ensemble

        s, o = self.state, self.opts
        pairs = [self.pairs.load_id(i) for i in s.used]
        shape = tuple(pairs[0].first.shape[1:])
        cfg = (self.model.cfg if self.model is not None else
               RewardModelConfig(image_shape=shape, ensemble_size=o.ensemble_size, seed=self.seed))
        model, report = train_ensemble(pairs, cfg, epochs=o.epochs, batch_size=o.rm_batch_size, lr=o.rm_lr,
                                       holdout=o.holdout, patience=o.patience, seed=self.seed * 1000 + s.version,
                                       show_progress=False, init=self.model)
        self.model = model
        s.version += 1
        s.last_report = {"reward_model/pairs": float(report["pairs"])}
        if "heldout" in report:
            s.last_report["reward_model/heldout_accuracy"] = float(report["heldout"]["pairwise_accuracy"])
        metrics.update(s.last_report)
        return model

    # --- persistence (a checkpoint's preference/ directory) ---------------------------------------
    def state_dict(self) -> dict[str, Any]:
        import dataclasses

        self.state.rng = self.rng.bit_generator.state
        self.state.pending = [{"ids": r.ids, "due": r.due, "seed": r.seed} for r in self.rounds]
        return dataclasses.asdict(self.state)

    def save(self, path: str | Path) -> None:
        """Write the loop's state into `path` (a directory inside a checkpoint being assembled)."""
        from vla_rl.base.atomic_io import atomic_write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._poll(self.state.iterations, {}, wait_all=True)
        if self.model is not None:
            self.model.save(path / "reward_model")
        atomic_write_json(path / "preference_state.json", self.state_dict())

    @staticmethod
    def load_state(path: str | Path) -> tuple[dict, RewardEnsemble | None]:
        import json

        from vla_rl.base.errors import CheckpointError

        path = Path(path)
        f = path / "preference_state.json"
        if not f.is_file():
            raise CheckpointError(f"{f}: missing — the checkpoint has no preference-loop state (was the run started "
                                  "with --reward preference?)")
        try:
            state = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{f}: not valid JSON ({e})") from None
        unknown = set(state) - set(LoopState.__dataclass_fields__)
        if unknown:
            raise CheckpointError(f"{f}: unknown fields {sorted(unknown)}")
        model = RewardEnsemble.load(path / "reward_model") if (path / "reward_model").is_dir() else None
        return state, model
