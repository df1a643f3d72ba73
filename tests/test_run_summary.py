"""Summaries of train runs over seeds, on hand-built metrics files."""

import json

import pytest

from vla_rl.run_summary import (
    before_after_fields,
    before_after_line,
    evaluations,
    gain_ratio,
    mean_interval,
    parse_run_spec,
    pick_by_validation,
    read_rows,
    read_validation,
    seed_summary,
    selection_summary,
    start_success,
)


def _run(tmp_path, name, successes):
    rows = [{"iteration": i, "env_steps": 100 * i, "time_s": 60.0 * i, "eval/success_rate": s, "eval/success_ci_low": 0.0,
             "eval/success_ci_high": 1.0} for i, s in successes] + [{"iteration": 99, "env_steps": 1, "time_s": 1.0}]
    (tmp_path / name).mkdir()
    (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / name


def test_seed_summary_pools_seeds_per_group_and_iteration(tmp_path):
    a, b = _run(tmp_path, "s0", [(0, 0.3), (10, 0.6)]), _run(tmp_path, "s1", [(0, 0.3), (10, 0.4)])
    runs = []
    for spec in (f"C={a}", f"C={b}", str(a)):
        group, run = parse_run_spec(spec)
        runs.append({"group": group, "evals": evaluations(read_rows(run))})
    assert [e["iteration"] for e in runs[0]["evals"]] == [0, 10] and runs[0]["evals"][1]["minutes"] == 10.0
    out = seed_summary(runs, before=0.3)
    assert out["C"]["10"].pop("mean_ci95_over_seeds") == [0.0, 1.0]  # 0.5 +- t(0.975, 1) 0.1414 / sqrt(2), cut
    assert out["C"]["10"] == {"seeds": 2, "mean": 0.5, "min": 0.4, "max": 0.6, "std": 0.1414, "mean_gain_points": 20.0}
    assert out["s0"]["10"]["seeds"] == 1 and out["s0"]["10"]["std"] is None


def test_start_success_is_the_runs_common_iteration_0_evaluation(tmp_path):
    runs = [{"run": str(r), "evals": evaluations(read_rows(r))} for r in
            (_run(tmp_path, "a", [(0, 0.3), (10, 0.6)]), _run(tmp_path, "b", [(0, 0.3), (10, 0.4)]))]
    assert start_success(runs) == 0.3
    late = _run(tmp_path, "c", [(10, 0.5)])  # no --eval_before: no starting value
    with pytest.raises(ValueError, match="runs without one"):
        start_success(runs + [{"run": str(late), "evals": evaluations(read_rows(late))}])
    other = _run(tmp_path, "d", [(0, 0.2)])  # a different start: not comparable
    with pytest.raises(ValueError, match=r"values \[0.2, 0.3\]"):
        start_success(runs + [{"run": str(other), "evals": evaluations(read_rows(other))}])


def test_gain_ratio_only_against_a_reference_that_gained():
    assert gain_ratio(0.49, 0.48, 0.30) == round(0.19 / 0.18, 3)
    assert gain_ratio(0.20, 0.50, 0.30) == -0.5  # the preference run lost what the reference gained
    assert gain_ratio(0.0, 0.0, 0.12) is None  # both lost 12 points: not "a ratio of 1"
    assert gain_ratio(0.4, 0.3, 0.3) is None


def test_validation_picks_the_best_checkpoint_ties_to_the_later_and_reports_its_test_success(tmp_path):
    a = _run(tmp_path, "a", [(0, 0.3), (10, 0.6), (20, 0.2), (30, 0.5)])
    b = _run(tmp_path, "b", [(10, 0.4), (20, 0.7)])
    # a: validated after the fact (validation.jsonl); b: by the run itself (val/ in its rows) — the row wins.
    (a / "validation.jsonl").write_text("".join(json.dumps({"iteration": i, "val/success_rate": v}) + "\n"
                                                for i, v in ((0, 0.9), (10, 0.5), (20, 0.6), (30, 0.6))))
    rows = read_rows(b)
    rows[0]["val/success_rate"], rows[1]["val/success_rate"] = 0.5, 0.3
    (b / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (b / "validation.jsonl").write_text(json.dumps({"iteration": 10, "val/success_rate": 0.0}) + "\n")
    assert read_validation(b) == {10: 0.5, 20: 0.3}
    runs = [{"run": str(r), "group": "F", "evals": evaluations(read_rows(r), read_validation(r))} for r in (a, b)]
    # a: iteration 0 (the start) is no candidate; 20 and 30 tie on validation -> the later, 30 (test 0.5).
    assert pick_by_validation(runs[0]["evals"])["iteration"] == 30
    assert pick_by_validation(runs[0]["evals"], up_to=20)["iteration"] == 20  # test 0.2: the pick never sees it
    out = selection_summary(runs, before=0.3)["F"]
    assert [(s["iteration"], s["val_success"], s["success"]) for s in out["seeds"]] == [(30, 0.6, 0.5), (10, 0.5, 0.4)]
    assert out["mean"] == 0.45 and out["mean_gain_points"] == 15.0 and (out["min"], out["max"]) == (0.4, 0.5)
    assert out["mean_ci95_over_seeds"] == [0.0, 1.0]  # two seeds: 0.45 +- 0.635, cut to [0, 1]
    assert pick_by_validation(evaluations(read_rows(_run(tmp_path, "c", [(10, 0.5)])))) is None  # nothing validated


def test_mean_interval_is_the_student_t_interval_over_seeds():
    # std 0.1, t(0.975, 2 dof) = 4.3027: half-width 4.3027 * 0.1 / sqrt(3) = 0.2484
    assert mean_interval([0.5, 0.6, 0.7]) == pytest.approx([0.6 - 0.2484, 0.6 + 0.2484], abs=1e-4)
    assert mean_interval([0.6]) is None and mean_interval([0.3, 0.3]) == [0.3, 0.3]


def test_before_after_fields_and_line_of_the_greedy_and_the_sampled_policy():
    before = {"success_rate": 0.12, "success_rate_ci95": (0.06, 0.24), "sampled_success_rate": 0.16,
              "sampled_success_rate_ci95": (0.08, 0.29)}
    after = {"success_rate": 0.68, "success_rate_ci95": (0.54, 0.79)}  # evaluated without --eval_sampled
    assert before_after_fields(before, after) == {
        "success_rate_before": 0.12, "success_rate_before_ci95": (0.06, 0.24), "sampled_success_rate_before": 0.16,
        "sampled_success_rate_before_ci95": (0.08, 0.29), "success_rate": 0.68, "success_rate_ci95": (0.54, 0.79)}
    assert before_after_fields({}, {}) == {}
    assert before_after_line(before, after, "success_rate", "greedy success on 50 unseen seeds",
                             "after 10 iterations") == ("greedy success on 50 unseen seeds: 12% before RL "
                                                        "(95% CI 6%-24%) -> 68% after 10 iterations (95% CI 54%-79%)")
