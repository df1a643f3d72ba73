"""`vla-rl pretrain`: the loss falls, checkpoints are whole, resume is exact, bad options are named."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vla_rl.bc_data import BCData
from vla_rl.cli import main
from vla_rl.policy import VLAPolicy
from vla_rl.schedules import warmup_cosine


def _args(demos, out, *extra):
    return ["pretrain", "--demos", f"[{demos}]", "--out", str(out), "--policy.preset", "tiny", "--steps", "6",
            "--batch_size", "8", "--warmup_steps", "2", "--save_every", "3", "--eval_every", "-1",
            "--log_every", "1", *extra]


def test_bc_chunks_pad_with_the_last_action(touch_demos):
    from envs import DemoDataset

    data = BCData.load([touch_demos], chunk_size=3, max_episodes=2)
    ep = DemoDataset(touch_demos)[0]
    t = ep.length
    assert data.episodes == 2 and len(data) == t + DemoDataset(touch_demos)[1].length
    np.testing.assert_array_equal(data.actions[0], ep.action[:3])
    np.testing.assert_array_equal(data.actions[t - 1], np.repeat(ep.action[t - 1:t], 3, axis=0))
    np.testing.assert_array_equal(data.image[:t], ep.image[:t])


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 1.0, warmup=10, final_fraction=0.1) == pytest.approx(0.1)
    assert warmup_cosine(55, 100, 1.0, warmup=10, final_fraction=0.0) == pytest.approx(0.5)


def test_warmup_cosine_equals_transformers_after_the_warmup_and_leads_it_by_one_step_within():
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, 10, 100, min_lr_rate=0.1)
    theirs = []
    for _ in range(100):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [warmup_cosine(i, 100, 1.0, warmup=10, final_fraction=0.1) for i in range(100)]
    np.testing.assert_allclose(ours[10:], theirs[10:], atol=1e-12)
    np.testing.assert_allclose(ours[:9], theirs[1:10], atol=1e-12)  # warm-up: theirs at step s + 1 is ours at s
    assert theirs[0] == 0.0


def test_pretrain_lowers_the_loss_and_writes_checkpoints(touch_demos, tmp_path, capsys):
    assert main(_args(touch_demos, tmp_path / "run", "--steps", "30", "--save_every", "10", "--lr", "1e-3")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] > rows[-1]["loss"] + 0.5, (rows[0], rows[-1])
    assert summary["step"] == 30
    ckpts = tmp_path / "run/checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["000010", "000020", "000030", "last"]
    assert (ckpts / "last").resolve().name == "000030"
    policy = VLAPolicy.from_pretrained(ckpts / "last/pretrained_model")
    assert policy.spec.train_env == "tabletop/touch-color"
    assert (tmp_path / "run/pretrain_config.yaml").is_file()


def _assert_same_checkpoint(a, b, *state_files) -> dict:
    """Checkpoints `a` and `b` hold equal policies and equal training-state tensor files; returns a's weights."""
    pa = VLAPolicy.from_pretrained(a / "pretrained_model").state_dict()
    pb = VLAPolicy.from_pretrained(b / "pretrained_model").state_dict()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    for name in state_files:
        ta, tb = (load_file(str(d / "training_state" / name)) for d in (a, b))
        assert set(ta) == set(tb)
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (name, k)
    return pa


def test_resume_gives_the_same_state_as_an_uninterrupted_run(touch_demos, tmp_path):
    assert main(_args(touch_demos, tmp_path / "a")) == 0
    assert main(_args(touch_demos, tmp_path / "b", "--stop_after", "3")) == 0
    assert (tmp_path / "b/checkpoints/last").resolve().name == "000003"
    saved = (tmp_path / "b/pretrain_config.yaml").read_text()  # the run's options, not this invocation's
    assert "stop_after: 0" in saved and "resume: false" in saved
    assert main(_args(touch_demos, tmp_path / "b", "--resume", "true")) == 0
    pa = _assert_same_checkpoint(tmp_path / "a/checkpoints/000006", tmp_path / "b/checkpoints/000006",
                                 "optimizer.safetensors")
    # The run really changed the weights (the comparison above is not between two untrained models).
    first = VLAPolicy.from_pretrained(tmp_path / "b/checkpoints/000003/pretrained_model").state_dict()
    assert any(not torch.equal(first[k], pa[k]) for k in pa)


def test_resume_refuses_changed_options_and_fresh_runs_refuse_old_dirs(touch_demos, tmp_path, capsys):
    assert main(_args(touch_demos, tmp_path / "r", "--stop_after", "3")) == 0
    capsys.readouterr()
    assert main(_args(touch_demos, tmp_path / "r", "--resume", "true", "--lr", "0.1")) == 2
    assert "lr: 0.0003 -> lr: 0.1" in capsys.readouterr().err
    assert main(_args(touch_demos, tmp_path / "r")) == 2
    assert "--resume true" in capsys.readouterr().err
    assert main(_args(touch_demos, tmp_path / "none", "--resume", "true")) == 2
    assert "pretrain_config.yaml: missing" in capsys.readouterr().err


def test_overwrite_replaces_a_pretrain_run_and_nothing_else(touch_demos, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(_args(touch_demos, run, "--stop_after", "3")) == 0
    assert main(_args(touch_demos, run, "--overwrite", "true", "--steps", "4", "--save_every", "4")) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["000004", "last"]  # the old run is gone
    assert "steps: 4" in (run / "pretrain_config.yaml").read_text()
    (run / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(_args(touch_demos, run, "--overwrite", "true")) == 2
    assert "holds ['notes.txt'], which vla-rl pretrain did not write" in capsys.readouterr().err
    assert (run / "checkpoints/000004").is_dir() and (run / "notes.txt").read_text() == "mine"


def test_corrupt_checkpoint_is_named_on_resume(touch_demos, tmp_path, capsys):
    assert main(_args(touch_demos, tmp_path / "c", "--stop_after", "3")) == 0
    (tmp_path / "c/checkpoints/000003/training_state/optimizer.safetensors").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(_args(touch_demos, tmp_path / "c", "--resume", "true")) == 2
    assert "optimizer.safetensors: cannot read" in capsys.readouterr().err


def test_bad_pretrain_options_are_named(touch_demos, tmp_path, capsys):
    assert main(_args(touch_demos, tmp_path / "x", "--policy.family", "gpt")) == 2
    assert "policy.family='gpt'" in capsys.readouterr().err
    assert main(_args(tmp_path / "missing", tmp_path / "x")) == 2
    assert "dataset.json: not found" in capsys.readouterr().err


def test_random_shift_crops_a_window_of_the_edge_padded_image():
    from vla_rl.bc_data import random_shift

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    assert random_shift(images, 0, rng) is images
    shifted = random_shift(images, 2, np.random.default_rng(1))
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    for i in range(6):
        windows = [padded[i, y:y + 8, x:x + 8] for y in range(5) for x in range(5)]
        assert any(np.array_equal(shifted[i], w) for w in windows)
    assert any(not np.array_equal(shifted[i], images[i]) for i in range(6))


def _scripted_validation(monkeypatch, successes: list[float]):
    """Replace the rollouts of BC's evaluations: validation seeds (20000..) return `successes` in order, the
    evaluation seeds 0.0 — so the stopping rule is tested on a known sequence."""
    import vla_rl.evaluation as evaluation

    calls = {"val": 0, "eval_seeds": []}

    def fake(policy, env_id, episodes, seed=0, **kwargs):
        if seed >= 20_000:
            rate, calls["val"] = successes[calls["val"]], calls["val"] + 1
        else:
            rate = 0.0
            calls["eval_seeds"].append(seed)
        return {"success_rate": rate, "success_rate_ci95": [0.0, 1.0], "per_episode": []}

    monkeypatch.setattr(evaluation, "evaluate_policy", fake)
    return calls


def test_validation_picks_best_and_patience_stops_bc(touch_demos, tmp_path, capsys, monkeypatch):
    calls = _scripted_validation(monkeypatch, [0.5, 0.5, 0.25, 0.25, 1.0])
    run = tmp_path / "v"
    assert main(_args(touch_demos, run, "--steps", "12", "--eval_every", "2", "--val_episodes", "4",
                      "--val_patience", "2", "--save_every", "100")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 0.5 (step 2: best), 0.5 (step 4: a tie goes to the later checkpoint, not a new high), 0.25 (step 6: two
    # validations without a higher success) -> stop at step 6; best = step 4.
    assert (summary["step"], summary["best_step"], summary["best_val_success_rate"]) == (6, 4, 0.5)
    assert summary["stopped_early"] is True and calls["val"] == 3
    assert calls["eval_seeds"] == [10_000] * 3
    assert (run / "checkpoints/best").resolve().name == "000004"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["000002", "000004", "000006", "best", "last"]
    state = json.loads((run / "checkpoints/000006/training_state/state.json").read_text())
    assert state["extra"]["best"] == {"step": 4, "success_rate": 0.5} and state["extra"]["since_best"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val/success_rate"], r["val/best_step"]) for r in rows if "val/success_rate" in r] == \
        [(2, 0.5, 2), (4, 0.5, 4), (6, 0.25, 4)]


def test_validation_state_survives_resume(touch_demos, tmp_path, capsys, monkeypatch):
    calls = _scripted_validation(monkeypatch, [0.75, 0.25, 0.5, 0.5])
    run = tmp_path / "r"
    opts = ("--steps", "8", "--eval_every", "2", "--val_episodes", "4", "--val_patience", "3", "--save_every", "100")
    assert main(_args(touch_demos, run, *opts, "--stop_after", "4")) == 0
    assert main(_args(touch_demos, run, *opts, "--resume", "true")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 0.75 at step 2 stays the best; 0.25, 0.5 and 0.5 are three validations without a higher success, the count
    # carried over the resume (steps 4 | 6, 8) -> stop at step 8, the run's end anyway.
    assert calls["val"] == 4 and (summary["best_step"], summary["step"], summary["stopped_early"]) == (2, 8, True)
    assert (run / "checkpoints/best").resolve().name == "000002"


@pytest.mark.parametrize("extra, message", [
    (("--val_patience", "3"), "val_patience=3 without validation"),
    (("--val_episodes", "5", "--eval_every", "0"), "val_episodes=5 with eval_every=0"),
    (("--val_episodes", "5", "--eval_every", "2", "--eval_episodes", "20", "--val_seed", "10010"),
     "overlap the evaluation seeds 10000-10019"),
])
def test_validation_options_are_checked_before_anything_is_written(touch_demos, tmp_path, capsys, extra, message):
    assert main(_args(touch_demos, tmp_path / "bad", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_weight_average_follows_the_ramped_decay_and_swaps_back():
    from vla_rl.weight_average import WeightAverage, ema_decay_at

    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema_decay_at(0.999, 90) == pytest.approx(0.91)
    assert ema_decay_at(0.9, 10**6) == 0.9
    p = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    avg = WeightAverage([("w", p)], decay=0.5)
    expected = torch.tensor([0.0, 10.0])
    for t, value in enumerate([1.0, 2.0, 4.0]):
        with torch.no_grad():
            p.fill_(value)
        avg.update(t)
        d = min(0.5, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * value
    torch.testing.assert_close(avg.average[0], expected)
    with avg.applied() as raw:
        torch.testing.assert_close(p.detach(), expected)
        assert torch.equal(raw["w"], torch.tensor([4.0, 4.0]))
    assert torch.equal(p.detach(), torch.tensor([4.0, 4.0]))  # the raw weights are back


def test_ema_run_saves_the_average_and_resumes_exactly(touch_demos, tmp_path, capsys):
    ema = ("--ema_decay", "0.9")
    assert main(_args(touch_demos, tmp_path / "a", *ema)) == 0
    assert main(_args(touch_demos, tmp_path / "b", *ema, "--stop_after", "3")) == 0
    assert main(_args(touch_demos, tmp_path / "b", *ema, "--resume", "true")) == 0
    a = tmp_path / "a/checkpoints/000006"
    pa = _assert_same_checkpoint(a, tmp_path / "b/checkpoints/000006", "optimizer.safetensors", "raw_weights.safetensors")
    ra = load_file(str(a / "training_state/raw_weights.safetensors"))
    # The saved policy is the average, not the raw weights training continues from.
    key = next(k for k in ra if k in pa and ra[k].ndim >= 2)
    assert not torch.equal(pa[key], ra[key])
    # Without the raw weights the run cannot continue: named, nothing changed.
    assert main(_args(touch_demos, tmp_path / "c", *ema, "--stop_after", "3")) == 0
    (tmp_path / "c/checkpoints/000003/training_state/raw_weights.safetensors").unlink()
    before = sorted(str(p) for p in (tmp_path / "c").rglob("*")), (tmp_path / "c/metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(_args(touch_demos, tmp_path / "c", *ema, "--resume", "true")) == 2
    assert "raw_weights.safetensors: missing" in capsys.readouterr().err
    assert (sorted(str(p) for p in (tmp_path / "c").rglob("*")), (tmp_path / "c/metrics.jsonl").read_text()) == before
    assert main(_args(touch_demos, tmp_path / "x", "--ema_decay", "1.5")) == 2
    assert "ema_decay=1.5 is out of range" in capsys.readouterr().err
    assert main(_args(touch_demos, tmp_path / "x", *ema, "--policy.dtype", "bfloat16")) == 2
    assert "would not move in low precision" in capsys.readouterr().err


def test_ema_after_one_step_is_the_ramped_mix_of_the_initial_and_the_trained_weights(touch_demos, tmp_path):
    from vla_rl.config import PretrainConfig, load_config
    from vla_rl.pretrain_run import build_initial_policy

    run = tmp_path / "one"
    assert main(_args(touch_demos, run, "--ema_decay", "0.9", "--steps", "1", "--warmup_steps", "0")) == 0
    cfg = load_config(PretrainConfig, run / "pretrain_config.yaml")
    torch.manual_seed(cfg.seed)  # the run's own initialisation, rebuilt
    init = dict(build_initial_policy(cfg, BCData.load(cfg.demos, cfg.policy.chunk_size, 0)).named_parameters())
    raw = load_file(str(run / "checkpoints/000001/training_state/raw_weights.safetensors"))
    saved = dict(VLAPolicy.from_pretrained(run / "checkpoints/000001/pretrained_model").named_parameters())
    moved = 0
    for name, r in raw.items():  # decay at the first update: min(0.9, 1 / 10) = 0.1
        torch.testing.assert_close(saved[name].detach(), init[name].detach().lerp(r, 0.9), rtol=0, atol=1e-6)
        moved += not torch.equal(r, init[name].detach())
    assert moved > 0  # the step changed the weights, so the mix is not trivially the init
