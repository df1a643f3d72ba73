"""The metrics.jsonl rows: flattening an RLlib result, strict-JSON rounding, truncation on resume."""

import json
import math

from vla_rl.rl.metrics_rows import flatten_result, round_row, truncate_metrics


def test_flatten_result_keeps_namespaced_learner_metrics_and_the_driver_block():
    result = {"vla": {"rollout/success_rate": 0.5, "perf/sample_s": 2},
              "learners": {"default_policy": {"losses/policy": -0.1, "num_module_steps_trained": 7},
                           "__all_modules__": {"losses/skipped_steps": 3}}}
    row = flatten_result(result)
    assert row == {"rollout/success_rate": 0.5, "perf/sample_s": 2.0, "losses/policy": -0.1,
                   "losses/skipped_steps": 3.0}
    assert all(isinstance(v, float) for v in row.values())


def test_round_row_drops_non_finite_values_and_rounds_to_6_decimals():
    row = round_row({"iteration": 3, "a": 0.123456789, "b": math.nan, "c": math.inf, "d": "x"})
    assert row == {"iteration": 3, "a": 0.123457, "d": "x"}
    json.loads(json.dumps(row, allow_nan=False))


def test_truncate_metrics_keeps_rows_up_to_the_checkpoint_and_drops_a_cut_row(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in range(5)) + '{"iteration": 5, "a"')
    truncate_metrics(path, 2)
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [0, 1, 2]
    before = path.read_text()
    truncate_metrics(path, 9)  # nothing to drop: the file is left as it is
    assert path.read_text() == before
    truncate_metrics(tmp_path / "missing.jsonl", 1)  # no file: nothing happens
    assert not (tmp_path / "missing.jsonl").exists()
