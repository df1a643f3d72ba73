"""`vla-rl reward label | train | eval` end to end on scripted touch-color demos."""

import json

from reward_models.pairs import PairDataset
from vla_rl.cli import main


def test_label_train_eval(tmp_path, capsys):
    demos = tmp_path / "demos"
    assert main(["collect", "--env", "tabletop/push-to-target", "--episodes", "4", "--out", str(demos)]) == 0
    capsys.readouterr()
    pairs = tmp_path / "pairs"
    assert main(["reward", "label", "--data", f"[{demos}]", "--pairs", "60", "--teacher", "oracle", "--out", str(pairs)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["requested"] == 60 and summary["valid"] + summary["abstained"] == 60
    assert summary["teacher_accuracy"] == 1.0
    ds = PairDataset(pairs)
    assert len(ds) == summary["added"] and ds.entries[0]["label_source"] == "scripted:oracle"
    assert ds.entries[0]["provenance"]["teacher"] == "oracle"
    # Appending again with another seed adds new pairs; dedup skips identical content.
    assert main(["reward", "label", "--data", f"[{demos}]", "--pairs", "20", "--seed", "1", "--out", str(pairs)]) == 0
    capsys.readouterr()
    rm = tmp_path / "rm"
    assert main(["reward", "train", "--pairs", f"[{pairs}]", "--out", str(rm), "--epochs", "2",
                 "--ensemble_size", "2", "--output", "tanh"]) == 0
    assert json.loads((rm / "reward_model.json").read_text())["config"]["output"] == "tanh"
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["pairs"] == len(PairDataset(pairs)) - PairDataset(pairs).counts()["abstain"]
    assert len(report["members"]) == 2
    assert main(["reward", "eval", "--model", str(rm), "--pairs", f"[{pairs}]", "--episodes", f"[{demos}]",
                 "--out", str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    for key in ("pairwise_accuracy", "nll", "ece", "spearman_progress", "teacher_accuracy", "reward_frames_per_s"):
        assert key in result
    # disagreement selection uses the trained ensemble
    assert main(["reward", "label", "--data", f"[{demos}]", "--pairs", "10", "--selection", "disagreement",
                 "--model", str(rm), "--out", str(tmp_path / "pairs2")]) == 0


def test_reward_cli_errors(tmp_path, capsys):
    assert main(["reward", "label", "--selection", "entropy", "--out", str(tmp_path)]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert main(["reward", "train", "--pairs", f"[{tmp_path / 'none'}]"]) == 2
    assert "pairs.json: not found" in capsys.readouterr().err
    assert main(["reward", "eval", "--model", str(tmp_path / "none"), "--pairs", "[x]"]) == 2
    assert "reward_model.json: not found" in capsys.readouterr().err
    assert main(["reward", "train", "--output", "sigmoid"]) == 2
    assert "output" in capsys.readouterr().err
    assert main(["reward", "label", "--labeler", "hf", "--vlm_model", "m", "--vlm_batch_size", "0"]) == 2
    assert "vlm_batch_size" in capsys.readouterr().err
