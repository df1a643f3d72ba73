"""`vla-rl train --reward preference` end to end on one real env-runner actor (tiny preset, tabletop/touch-color):
pairs of this run's rollouts go to the run's pair dataset with provenance, the reward model advances, the learner
scores batches with the newest model, resume asks no query twice and continues exactly, a killed labeler actor is
restarted, and an endpoint that only fails leaves pairs pending while the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from chat_server import Server
from rl_setup import RUN, build_algo

from reward_models.pairs import PairDataset
from vla_rl.cli import main

PREF = ["--reward", "preference", "--preference.queries_per_round", "8", "--preference.max_queries", "40",
        "--preference.ensemble_size", "1", "--preference.epochs", "3", "--preference.patience", "3"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tiny_policy, tmp_path_factory):
    """3 iterations in one go, and 2 + 1 with a resume in between."""
    root = tmp_path_factory.mktemp("pref_runs")
    base = ["train", "--policy", str(tiny_policy), *RUN, *PREF, "--iterations", "3"]
    assert main([*base, "--out", str(root / "three")]) == 0
    assert main([*base, "--stop_after", "2", "--out", str(root / "two")]) == 0
    assert main([*base, "--resume", "true", "--out", str(root / "two")]) == 0
    return root


def test_pairs_of_the_rollouts_are_labelled_and_the_reward_model_advances(runs):
    rows = _rows(runs / "three/metrics.jsonl")
    assert [r["reward_model/version"] for r in rows] == [1, 1, 2]  # answers of iteration 2 are consumed at 3
    assert [r["labels/requested"] for r in rows] == [8, 16, 24]
    assert rows[0]["labels/answered"] == 8 and rows[1]["labels/pending"] == 8 and rows[2]["labels/answered"] == 16
    assert all(r["labels/teacher_accuracy"] == 1.0 for r in (rows[0], rows[2]))  # oracle vs privileged progress
    for key in ("reward/learned_mean", "reward/gt_mean", "reward/gt_corr", "reward_model/spearman_vs_progress",
                "perf/time_label", "perf/time_reward_model", "losses/policy", "kl/ref_per_token"):
        assert all(np.isfinite(r[key]) for r in rows), key
    ds = PairDataset(runs / "three/pairs")
    assert len(ds) == 24 and ds.counts()["unlabeled"] == 0
    e = ds.entries[0]
    assert e["label_source"] == "scripted:oracle" and e["provenance"]["asked_at_iteration"] == 1
    assert e["first"]["source"] == "rollout:iteration 1" and e["progress"] is not None
    ckpt = runs / "three/checkpoints/last/preference"
    assert (ckpt / "reward_model/weights.safetensors").is_file()
    assert json.loads((ckpt / "preference_state.json").read_text())["version"] == 2


def test_resume_continues_exactly_and_asks_no_query_twice(runs):
    from safetensors.torch import load_file

    a, b = _rows(runs / "three/metrics.jsonl"), _rows(runs / "two/metrics.jsonl")
    keys = ("iteration", "env_steps", "rollout/return", "losses/policy", "reward/learned_mean", "labels/requested",
            "labels/valid", "reward_model/version", "reward_model/spearman_vs_progress")
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]
    # The round asked at iteration 2 was answered before the checkpoint: the resumed run took it from the dataset.
    assert b[2]["labels/from_dataset"] == 8 and a[2]["labels/from_dataset"] == 0
    assert len(PairDataset(runs / "two/pairs")) == 24
    for name in ("pretrained_model/adapter/adapter_model.safetensors", "preference/reward_model/weights.safetensors"):
        wa = load_file(str(runs / "three/checkpoints/last" / name))
        wb = load_file(str(runs / "two/checkpoints/last" / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


@pytest.fixture
def pref_algo(tiny_policy, tmp_path):
    import ray

    from reward_models.config import PreferenceOptions
    from reward_models.labeler_actor import RayLabelers
    from reward_models.online import PreferenceLoop
    from vla_rl.rl.episodes import LearnedRewardSettings

    torch.set_num_threads(1)
    opts = PreferenceOptions(queries_per_round=8, max_queries=80, ensemble_size=1, epochs=2, patience=2)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    algo = build_algo(tiny_policy, reward="preference", preference=opts)
    labelers = RayLabelers(opts, tmp_path / "cache")
    algo.attach_preference(PreferenceLoop(opts, tmp_path / "pairs", 0, labelers),
                           LearnedRewardSettings(scale=1.0, form="score", gamma=0.99))
    yield algo, labelers
    labelers.close()
    algo.stop()
    ray.shutdown()


def test_each_batch_is_scored_once_by_the_newest_model_and_a_killed_labeler_is_restarted(pref_algo, monkeypatch):
    import ray

    from reward_models import scoring

    algo, labelers = pref_algo
    scored = []  # the model of each score_frames call
    real = scoring.score_frames
    monkeypatch.setattr(scoring, "score_frames", lambda model, frames: scored.append(model) or real(model, frames))
    algo.train()
    loop = algo.preference
    assert scored == [loop.model] and loop.state.version == 1
    pid = ray.get(labelers.actor.pid.remote())
    ray.kill(labelers.actor, no_restart=False)  # the labeler process dies; Ray starts a new one
    algo.train()  # asks round 2 on the restarted actor
    algo.train()  # consumes it: version 2
    assert labelers.restarts == 1 and ray.get(labelers.actor.pid.remote()) != pid
    assert loop.state.version == 2 and len(scored) == 3 and scored[-1] is loop.model and scored[0] is not loop.model
    # Rounds 1 and 2 answered and used; round 3 (asked at iteration 3) is due at 4: its answers may already be
    # stored (they are written as they arrive) but are not used yet.
    counts = PairDataset(loop.pairs.path).counts()
    assert counts["unlabeled"] + counts["labeled"] == 24 and counts["labeled"] >= 16 and counts["abstain"] == 0
    assert loop.state.valid == 16 and len(loop.state.used) == 16 and len(loop.rounds) == 1


def test_an_endpoint_that_only_fails_leaves_pairs_pending_and_the_run_going(tiny_policy, tmp_path):
    server = Server()
    server.fail_with = [500] * 10_000
    try:
        # Start from a saved reward model so that PPO has a reward while no answer comes back.
        assert main(["collect", "--env", "tabletop/touch-color", "--episodes", "2", "--out", str(tmp_path / "demos")]) == 0
        assert main(["reward", "label", "--data", f"[{tmp_path / 'demos'}]", "--pairs", "12",
                     "--out", str(tmp_path / "pairs")]) == 0
        assert main(["reward", "train", "--pairs", f"[{tmp_path / 'pairs'}]", "--epochs", "1", "--ensemble_size", "1",
                     "--out", str(tmp_path / "rm")]) == 0
        argv = ["train", "--policy", str(tiny_policy), *RUN, *PREF, "--iterations", "2", "--preference.labeler", "openai",
                "--preference.vlm_model", "m", "--preference.base_url", server.url, "--preference.max_attempts", "1",
                "--preference.swap_check", "false", "--preference.init_reward_model", str(tmp_path / "rm"),
                "--preference.label_wait_s", "30", "--out", str(tmp_path / "run")]
        assert main(argv) == 0
    finally:
        server.close()
    rows = _rows(tmp_path / "run/metrics.jsonl")
    assert [r["labels/answered"] for r in rows] == [0, 0] and rows[-1]["labels/pending"] == 16
    assert all(r["reward_model/version"] == 0 and np.isfinite(r["losses/policy"]) for r in rows)  # PPO went on
    ds = PairDataset(tmp_path / "run/pairs")
    assert ds.counts()["unlabeled"] == 16
    assert "HTTP 500" in ds.entries[0]["provenance"]["error"]
