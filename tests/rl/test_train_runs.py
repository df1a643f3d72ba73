"""`vla-rl train` as a user runs it (tiny preset, one real Ray env runner): every metric namespace logged, a
2 + 2 resume equal to 4 iterations in one go, the best validation checkpoint, export loaded by peft and by
transformers alone, refused resume changes, and training on a saved reward model's rewards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from obs_samples import make_obs
from rl_setup import ENV, RUN, SMALL

from vla_rl.cli import main
from vla_rl.rl.run import TrainRun
from vla_rl.train_config import TrainConfig, WandbOptions


@pytest.fixture(scope="module")
def runs(tiny_policy, tmp_path_factory):
    """`vla-rl train` 4 iterations in one go, and 2 + 2 with a resume in between."""
    root = tmp_path_factory.mktemp("runs")
    # Validation + evaluation (2 episodes each) at iterations 2 and 4, saves at 3 and 4 (and 2: an evaluated
    # iteration is saved, it may become `best`); `best` must survive the resume too.
    base = ["train", "--policy", str(tiny_policy), *RUN, "--iterations", "4", "--eval_every", "2", "--eval_episodes",
            "2", "--val_episodes", "2", "--val_seed", "500", "--save_every", "3"]
    # The 4-iteration run goes through the Python API, the 2 + 2 through the CLI: the same run either way.
    summary = TrainRun(TrainConfig(
        policy=str(tiny_policy), **SMALL, eval_every=2, wandb=WandbOptions(mode="disabled"), save_every=3, lr=1e-3,
        iterations=4, eval_episodes=2, val_episodes=2, val_seed=500, out=str(root / "four"))).run()
    assert summary["iteration"] == 4 and summary["env_steps"] == 480 and summary["best"]["iteration"] in (2, 4)
    assert main([*base, "--stop_after", "2", "--out", str(root / "two")]) == 0
    assert json.loads((root / "two/checkpoints/last/train_state.json").read_text())["iteration"] == 2
    assert main([*base, "--resume", "true", "--out", str(root / "two")]) == 0
    return root


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_end_to_end_logs_every_namespace(runs):
    rows = _rows(runs / "four/metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert [r["env_steps"] for r in rows] == [120, 240, 360, 480]
    for key in ("rollout/success_rate", "rollout/return", "rollout/env_return", "losses/policy", "losses/value",
                "policy/entropy", "policy/clipfrac", "policy/approx_kl", "policy/first_ratio_max_dev",
                "value/explained_variance", "value/explained_variance_batch", "kl/ref_per_token", "kl/k3_per_token",
                "kl/beta", "perf/sample_s",
                "perf/learn_s", "perf/sync_s", "perf/env_steps_per_s", "perf/sync_fraction"):
        assert all(key in r for r in rows), key
    assert all(abs(r["policy/first_ratio_max_dev"]) < 1e-5 for r in rows)
    # success counts each env's first episode of the iteration: 4 envs, 4 first episodes (finished or cut)
    assert all(r["rollout/episodes"] + r["rollout/first_episodes_cut"] == 4 <= r["rollout/episodes_all"] + r[
        "rollout/first_episodes_cut"] for r in rows)
    evaluated = [r for r in rows if "eval/success_rate" in r]
    assert evaluated and all(0 <= r["eval/sampled_success_rate"] <= 1 for r in evaluated)  # greedy and sampled
    assert 0 <= rows[0]["kl/ref_per_token"] < rows[-1]["kl/ref_per_token"]  # the policy drifts from the reference
    last = runs / "four/checkpoints/last"
    assert last.is_symlink() and (last / "pretrained_model/adapter").is_dir() and (last / "rllib").is_dir()
    # the frozen base is stored once per run; each checkpoint references it (and loads through `last`)
    assert (runs / "four/checkpoints/base_model/base.json").is_file() and not (last / "pretrained_model/base").exists()


def test_resume_2_plus_2_equals_4(runs):
    from safetensors.torch import load_file

    a, b = _rows(runs / "four/metrics.jsonl"), _rows(runs / "two/metrics.jsonl")
    keys = ("iteration", "env_steps", "rollout/return", "rollout/env_return", "losses/policy", "kl/ref_per_token")
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]
    wa = load_file(str(runs / "four/checkpoints/last/pretrained_model/adapter/adapter_model.safetensors"))
    wb = load_file(str(runs / "two/checkpoints/last/pretrained_model/adapter/adapter_model.safetensors"))
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    ha = load_file(str(runs / "four/checkpoints/last/pretrained_model/heads.safetensors"))
    hb = load_file(str(runs / "two/checkpoints/last/pretrained_model/heads.safetensors"))
    assert all(torch.equal(ha[k], hb[k]) for k in ha)


def test_best_checkpoint_is_the_best_validation_success_with_ties_to_the_later(runs):
    from vla_rl.checkpoints import is_better

    assert is_better(0.5, None) and is_better(0.5, {"success_rate": 0.5}) and not is_better(0.4, {"success_rate": 0.5})
    for run in ("four", "two"):
        rows = [r for r in _rows(runs / run / "metrics.jsonl") if "val/success_rate" in r]
        assert [r["iteration"] for r in rows] == [2, 4] and all("eval/success_rate" in r for r in rows)
        # The rule applied to the logged validation history by hand: the highest, the later of equals.
        top = max(r["val/success_rate"] for r in rows)
        expected = max(r["iteration"] for r in rows if r["val/success_rate"] == top)
        assert rows[-1]["val/best_iteration"] == expected
        best = runs / run / "checkpoints/best"
        assert best.is_symlink() and best.resolve().name == f"{expected:06d}"
        state = json.loads((best / "train_state.json").read_text())["best"]
        assert state["iteration"] == expected and state["success_rate"] == top
        assert state["test_success_rate"] == next(r["eval/success_rate"] for r in rows if r["iteration"] == expected)
    assert (runs / "four/checkpoints/000002/pretrained_model").is_dir()  # evaluated, so saved (save_every is 3)


def test_validating_checkpoints_after_the_fact_reproduces_the_runs_own_validation(runs):
    """experiments/validate_checkpoints.py on the run's checkpoints with the run's validation seeds gives the same
    greedy returns the run logged; a second call reuses the evaluations; seeds overlapping the run's evaluation
    seeds are refused."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "experiments" / "validate_checkpoints.py"
    argv = [sys.executable, str(script), "--run", str(runs / "four"), "--iterations", "2", "4", "--episodes", "2"]
    assert subprocess.run([*argv, "--seed", "500"], capture_output=True, text=True).returncode == 0
    after = [json.loads(line) for line in (runs / "four/validation.jsonl").read_text().splitlines()]
    logged = {r["iteration"]: r for r in _rows(runs / "four/metrics.jsonl") if "val/success_rate" in r}
    assert [r["iteration"] for r in after] == [2, 4]
    for r in after:
        assert r["val/success_rate"] == pytest.approx(logged[r["iteration"]]["val/success_rate"])
        assert r["val/return"] == pytest.approx(logged[r["iteration"]]["val/return"], abs=1e-5)
    stamp = (runs / "four/validation/000004/eval.json").stat().st_mtime_ns
    assert subprocess.run([*argv, "--seed", "500"], capture_output=True, text=True).returncode == 0
    assert (runs / "four/validation/000004/eval.json").stat().st_mtime_ns == stamp
    refused = subprocess.run([*argv, "--seed", "10001"], capture_output=True, text=True)
    assert refused.returncode != 0 and "overlap the run's evaluation seeds 10000-10001" in refused.stderr


def test_resume_with_changed_options_is_refused(runs, tiny_policy, capsys):
    before = (runs / "two/metrics.jsonl").read_text()
    argv = ["train", "--policy", str(tiny_policy), *RUN, "--iterations", "6", "--beta", "0.2", "--resume", "true",
            "--out", str(runs / "two")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "options differ" in err and "beta: 0.05 -> beta: 0.2" in err
    assert (runs / "two/metrics.jsonl").read_text() == before


def test_export_loads_in_peft_and_merged_in_transformers_alone(runs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from vla_rl.policy import VLAPolicy

    ckpt = runs / "four/checkpoints/last"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "adapter")]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--merge", "true", "--out", str(tmp_path / "merged")]) == 0
    assert not (tmp_path / "merged/adapter").exists()
    assert all(p.suffix in (".json", ".safetensors", ".txt", ".model", ".jinja") or p.is_dir()
               for p in (tmp_path / "merged").rglob("*")), "safetensors + JSON only"
    ids = torch.arange(5)[None] + 3
    base = AutoModelForImageTextToText.from_pretrained(tmp_path / "adapter/base", local_files_only=True).eval()
    peft_model = PeftModel.from_pretrained(base, tmp_path / "adapter/adapter").eval()
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged/base", local_files_only=True).eval()
    lm = lambda m: m.get_decoder() if hasattr(m, "get_decoder") else m.language_model  # noqa: E731
    with torch.no_grad():
        h_peft = peft_model.base_model.model.model.language_model(input_ids=ids).last_hidden_state
        h_merged = lm(merged.model if hasattr(merged, "model") else merged)(input_ids=ids).last_hidden_state
        base_only = AutoModelForImageTextToText.from_pretrained(tmp_path / "adapter/base", local_files_only=True)
        h_base = base_only.model.language_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(h_merged, h_peft, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(h_base, h_peft, atol=1e-7)  # the adapter is not a no-op
    # Both exports are policies `vla-rl eval` runs, and they act alike.
    a, m = VLAPolicy.from_pretrained(tmp_path / "adapter"), VLAPolicy.from_pretrained(tmp_path / "merged")
    obs = make_obs(3, seed=1, state_dim=2)
    torch.testing.assert_close(m.evaluate(obs, a.act(obs, greedy=True).tokens).logp,
                               a.evaluate(obs, a.act(obs, greedy=True).tokens).logp, atol=1e-4, rtol=1e-4)
    assert np.isfinite(a.act(obs, greedy=True).actions).all()


def test_train_with_a_saved_reward_model_relabels_rewards(tiny_policy, tmp_path, capsys):
    """--reward model: PPO optimises the reward model's rewards; the env's return is still logged."""
    assert main(["collect", "--env", ENV, "--episodes", "3", "--out", str(tmp_path / "demos")]) == 0
    assert main(["reward", "label", "--data", f"[{tmp_path / 'demos'}]", "--pairs", "20",
                 "--out", str(tmp_path / "pairs")]) == 0
    assert main(["reward", "train", "--pairs", f"[{tmp_path / 'pairs'}]", "--epochs", "1", "--ensemble_size", "1",
                 "--out", str(tmp_path / "rm")]) == 0
    argv = ["train", "--policy", str(tiny_policy), *RUN, "--iterations", "1", "--reward", "model",
            "--reward_model", str(tmp_path / "rm"), "--eval_before", "true", "--eval_every", "0", "--eval_episodes", "2"]
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    zero, row = _rows(tmp_path / "run/metrics.jsonl")
    # --eval_before: the starting policy's greedy success is row 0 and the summary's "before".
    assert zero["iteration"] == 0 and zero["env_steps"] == 0 and "eval/success_rate" in zero and "eval/success_rate" in row
    assert summary["success_rate_before"] == zero["eval/success_rate"] and summary["success_rate"] == row["eval/success_rate"]
    # ... and the sampled policy's (what PPO optimises) on the same seeds, printed beside the greedy line.
    assert summary["sampled_success_rate_before"] == zero["eval/sampled_success_rate"]
    assert summary["sampled_success_rate"] == row["eval/sampled_success_rate"]
    assert "before RL" in captured.err and "sampled (temperature 1, what PPO optimises)" in captured.err
    assert np.isfinite(row["losses/value"]) and "rollout/env_return" in row
    # The reward-hacking monitor: learned and ground-truth rewards of the same rows, and their correlation.
    assert np.isfinite(row["reward/learned_mean"]) and np.isfinite(row["reward/gt_mean"]) and -1 <= row["reward/gt_corr"] <= 1
    assert json.loads((tmp_path / "run/checkpoints/last/train_state.json").read_text())["iteration"] == 1
