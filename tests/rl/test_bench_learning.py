"""The multi-seed learning benchmark's table and verdict (experiments/bench_learning.py) on hand-built metrics rows:
the figures a learning claim rests on are computed as the docs say."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "experiments" / "bench_learning.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_learning", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(successes, episodes, entropies, evals, eval_before=True):
    """metrics.jsonl rows: iteration 0 = the start's evaluation (if any), then one row per iteration."""
    start = {"iteration": 0, "eval/success_rate": evals[0][0], "eval/sampled_success_rate": evals[0][1]}
    out = [start] if eval_before else []
    for i, (s, e, h) in enumerate(zip(successes, episodes, entropies, strict=True), start=1):
        out.append({"iteration": i, "rollout/episodes": e, "rollout/success_rate": s, "policy/entropy": h,
                    "rollout/env_steps": 100})
    out[-1].update({"eval/success_rate": evals[1][0], "eval/sampled_success_rate": evals[1][1]})
    return out


def test_summary_pools_the_first_and_last_window_by_episodes(bench):
    r = rows([0.2, 0.4, 0.5, 0.5, 0.7, 0.9], [10, 30, 10, 10, 30, 10], [3.0, 2.9, 2.8, 2.7, 2.6, 2.5],
             [(0.5, 0.3), (0.8, 0.6)])
    s = bench.seed_summary(r, threshold=0.9, window=2)
    p0, p1 = (2 + 12) / 40, (21 + 9) / 40  # episode-weighted, not the mean of the rates (0.3 and 0.8)
    assert s["sampled_first_2"] == pytest.approx(p0) and s["episodes_first"] == 40
    assert s["sampled_last_2"] == pytest.approx(p1) and s["episodes_last"] == 40
    p = (p0 + p1) / 2
    assert s["sampled_z"] == pytest.approx(round((p1 - p0) / math.sqrt(p * (1 - p) * (2 / 40)), 2))
    evaluations = (s["greedy_before"], s["greedy_after"], s["sampled_eval_before"], s["sampled_eval_after"])
    assert evaluations == (0.5, 0.8, 0.3, 0.6)
    assert s["entropy_first_last"] == [3.0, 2.5] and s["env_steps"] == 600 and not s["passed"]


def test_short_runs_never_compare_overlapping_windows(bench):
    s = bench.seed_summary(rows([0.2, 0.4, 0.9], [10, 10, 10], [3.0, 2.9, 2.8], [(0.5, 0.3), (0.8, 0.6)]), 0.9, 5)
    assert s["window_used"] == 1 and s["sampled_first_5"] == 0.2 and s["sampled_last_5"] == 0.9
    one = bench.seed_summary(rows([0.4], [10], [3.0], [(0.5, 0.3), (0.8, 0.6)]), 0.9, 5)
    assert one["window_used"] == 0 and one["sampled_first_5"] is None and one["sampled_z"] is None


def test_only_an_evaluation_after_training_is_the_result(bench):
    r = [{"iteration": 0, "eval/success_rate": 0.95},
         {"iteration": 1, "rollout/episodes": 4, "rollout/success_rate": 0.5}]
    s = bench.seed_summary(r, threshold=0.9, window=5)
    assert s["greedy_before"] == 0.95 and s["greedy_after"] is None and not s["passed"]


def test_verdict_applies_the_gain_or_reach_rule(bench):
    base = {"sampled_first_5": 0.3, "sampled_last_5": 0.55, "entropy_first_last": [3.0, 2.0]}
    gained = bench.seed_verdict({**base, "greedy_before": 0.5, "greedy_after": 0.7}, 0.2, 0.9, 0.2, 5)
    assert gained == {"greedy_gain": 0.2, "greedy_ok": True, "sampled_gain": 0.25, "sampled_ok": True,
                      "entropy_falling": True}
    reached = bench.seed_verdict({**base, "greedy_before": 0.8, "greedy_after": 0.9}, 0.2, 0.9, 0.2, 5)
    assert reached["greedy_ok"] and reached["greedy_gain"] == pytest.approx(0.1)
    no_start = bench.seed_verdict({**base, "greedy_before": None, "greedy_after": 0.92}, 0.2, 0.9, 0.2, 5)
    assert no_start["greedy_ok"] and no_start["greedy_gain"] is None  # an end >= reach needs no start
    short = bench.seed_verdict({**base, "greedy_before": 0.5, "greedy_after": 0.63, "sampled_last_5": 0.45,
                                "entropy_first_last": [3.0, 3.1]}, 0.2, 0.9, 0.2, 5)
    assert not short["greedy_ok"] and not short["sampled_ok"] and not short["entropy_falling"]


def test_control_mean_change(bench):
    assert bench.control_mean_change([]) is None
    runs = [{"greedy_before": 0.6, "greedy_after": 0.5}, {"greedy_before": 0.6, "greedy_after": 0.8}]
    assert bench.control_mean_change(runs) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="no start or end"):
        bench.control_mean_change([{"greedy_before": None, "greedy_after": 0.5}])


def test_a_malformed_set_is_refused_before_any_run(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--config", "c.yaml", "--seeds", "0", "--set", "temperature", "--out", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    assert "--set 'temperature': expected KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_reread_recovers_first_episode_success_from_pooled_logs():
    import sys

    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("reread_first_episodes", BENCH.parent / "reread_first_episodes.py")
    reread = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reread)
    # 4 envs: 2 first episodes succeed and 3 quick second ones finish (successes): pooled 5/7, first episodes 2/4
    rows = [{"iteration": 0}, {"iteration": 1, "rollout/episodes": 7, "rollout/success_rate": 5 / 7},
            {"iteration": 2, "rollout/episodes": 4, "rollout/success_rate": 0.25}]
    assert reread.first_episode_rates(rows, 4) == pytest.approx([0.5, 0.25])
    with pytest.raises(ValueError, match="does not cover the time limit"):
        reread.first_episode_rates([{"iteration": 1, "rollout/episodes": 3, "rollout/success_rate": 0.0}], 4)


def test_reuse_takes_only_a_run_that_reached_its_iterations_and_final_evaluation(bench, tmp_path):
    import json

    def write(run, iterations, metric_rows):
        run.mkdir()
        (run / "train_config.yaml").write_text(f"iterations: {iterations}\n")
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metric_rows))

    done = [{"iteration": 0, "time_s": 0.0, "eval/success_rate": 0.1},
            {"iteration": 1, "time_s": 50.0}, {"iteration": 2, "time_s": 101.5, "eval/success_rate": 0.4}]
    write(tmp_path / "done", 2, done)
    write(tmp_path / "cut", 3, done)  # stopped before its configured 3 iterations
    write(tmp_path / "no_eval", 2, done[:2] + [{"iteration": 2, "time_s": 99.0}])  # killed during the last evaluation
    assert bench.finished_wall(tmp_path / "done") == 101.5
    assert bench.finished_wall(tmp_path / "cut") is None
    assert bench.finished_wall(tmp_path / "no_eval") is None
    assert bench.finished_wall(tmp_path / "missing") is None
