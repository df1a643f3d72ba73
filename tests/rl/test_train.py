"""The RL loop end to end on one real Ray env-runner actor (tiny preset, tabletop/touch-color):
learner and sampler agree, an update changes only LoRA + value head, the reference stays put, the
runners get exactly the learner's trainable tensors, NaN steps are skipped, `vla-rl train`
resumes exactly, and `vla-rl export` loads in peft and in transformers alone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from obs_samples import make_obs
from ray.rllib.core.columns import Columns
from rl_setup import ENV, RUN, SMALL, assert_runner_has_learner_weights, build_algo

from vla_rl.cli import main
from vla_rl.rl.rllib_internals import driver_learner
from vla_rl.rl.run import TrainRun
from vla_rl.train_config import TrainConfig, WandbOptions


@pytest.fixture(scope="module")
def algo(tiny_policy):
    import ray

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    algorithm = build_algo(tiny_policy, lr=1e-3)
    yield algorithm
    algorithm.stop()
    ray.shutdown()


def _obs():
    return {k: torch.as_tensor(v) for k, v in make_obs(4, seed=3, state_dim=2).items()}


def test_one_update_changes_only_lora_and_value_head_and_runners_follow(algo):

    module = algo.policy_module()
    policy = module.policy
    before = {k: v.clone() for k, v in module.state_dict().items()}
    obs = _obs()
    tokens = policy.act(obs, greedy=True).tokens
    with torch.no_grad(), policy.reference():
        ref_before = policy.evaluate(obs, tokens).bin_logp
    with torch.no_grad():
        assert torch.equal(policy.evaluate(obs, tokens).bin_logp, ref_before)  # fresh adapters: KL = 0

    result = algo.train()
    row = result["learners"]["default_policy"]
    assert abs(row["policy/first_ratio_max_dev"]) < 1e-5  # the learner scores the sampled tokens as the sampler did
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k or "value_head" in k for k in changed), sorted(changed)[:5]
    assert any("lora_B" in k for k in changed) and any("value_head" in k for k in changed)
    with torch.no_grad(), policy.reference():
        torch.testing.assert_close(policy.evaluate(obs, tokens).bin_logp, ref_before, atol=0, rtol=0)
        ref_logp = policy.evaluate(obs, tokens).bin_logp
    with torch.no_grad():
        new_logp = policy.evaluate(obs, tokens).bin_logp
    from vla_rl.rl.ppo_math import exact_kl

    assert float(exact_kl(new_logp, ref_logp).mean()) > 0  # the update moved the policy off the reference

    # The runners hold exactly the learner's LoRA tensors, and that is all that was sent.
    sent = assert_runner_has_learner_weights(algo)
    assert all("lora_" in k for k in sent)


def test_critic_warmup_trains_the_value_head_and_keeps_the_policy_still(algo):

    learner, module = driver_learner(algo.learner_group), algo.policy_module()
    settings = learner.settings
    learner.settings = dataclasses.replace(settings, critic_warmup=learner.updates_done + 1)
    try:
        before = {k: v.clone() for k, v in module.state_dict().items()}
        algo.train()
    finally:
        learner.settings = settings
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("value_head" in k for k in changed), sorted(changed)[:5]


def test_target_kl_stops_the_policy_steps_of_an_update_and_the_critic_keeps_training(algo):

    learner, module = driver_learner(algo.learner_group), algo.policy_module()
    # Once stopped, a step leaves LoRA alone and still moves the value head.
    before = {k: v.clone() for k, v in module.state_dict().items()}
    params = {learner.get_param_ref(p): p for p in learner.get_parameters(learner.module["default_policy"])
              if p.requires_grad}
    learner._kl_stopped = True
    try:
        learner.apply_gradients({pid: torch.ones_like(p) for pid, p in params.items()})
    finally:
        learner._kl_stopped = False
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("value_head" in k for k in changed), sorted(changed)[:5]
    # In a real update a target below any KL stops every step after the first (on-policy, KL 0) minibatch.
    settings = learner.settings
    learner.settings = dataclasses.replace(settings, target_kl=1e-12)
    try:
        row = algo.train()["learners"]["default_policy"]
    finally:
        learner.settings = settings
    assert 0.0 < row["policy/kl_stopped_steps"] < 1.0
    row = algo.train()["learners"]["default_policy"]
    assert row["policy/kl_stopped_steps"] == 0.0  # off again: no step stopped


def test_a_nan_gradient_step_is_skipped_not_applied(algo):
    learner = driver_learner(algo.learner_group)
    params = {learner.get_param_ref(p): p for p in learner.get_parameters(learner.module["default_policy"])
              if p.requires_grad}
    before = {pid: p.detach().clone() for pid, p in params.items()}
    opt_before = {name: {k: {kk: (vv.clone() if torch.is_tensor(vv) else vv) for kk, vv in s.items()}
                         for k, s in opt.state_dict()["state"].items()} for name, opt in learner._optimizers()}
    grads = {pid: torch.full_like(p, float("nan")) for pid, p in params.items()}
    learner.apply_gradients(grads)
    for pid, p in params.items():
        assert torch.equal(p.detach(), before[pid])
    for name, opt in learner._optimizers():
        for k, s in opt.state_dict()["state"].items():
            for kk, vv in s.items():
                assert torch.equal(torch.as_tensor(vv), torch.as_tensor(opt_before[name][k][kk]))


def test_group_size_starts_envs_in_groups_and_trains_on_group_advantages(algo, tiny_policy):
    from collections import Counter

    grouped = build_algo(tiny_policy, group_size=2, lr=1e-3)  # beside `algo`, in the same Ray
    try:
        episodes = [e for _, eps, _ in grouped._sample(30 * 4) for e in eps]
        firsts = [e.get_infos(0)["group_seed"] for e in episodes if e.t_started == 0]
        assert len(firsts) == 4 and sorted(Counter(firsts).values()) == [2, 2]  # 4 envs, two starts, two each
        module = grouped.policy_module()
        before = {k: v.clone() for k, v in module.state_dict().items() if "lora_" in k}
        result = grouped.train()
        assert 0.0 <= result["learners"]["default_policy"]["policy/informative_groups"] <= 1.0
        assert any(not torch.equal(module.state_dict()[k], v) for k, v in before.items())
    finally:
        grouped.stop()


def test_the_privileged_critic_trains_on_gae_targets_beside_lora_and_the_vla_value_head_stays(algo, tiny_policy):

    asym = build_algo(tiny_policy, critic="privileged", gae_lambda=0.9, lr=1e-3)  # beside `algo`, in the same Ray
    try:
        module = asym.policy_module()
        before = {k: v.clone() for k, v in module.state_dict().items()}
        row = asym.train()["learners"]["default_policy"]
        changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
        assert any(k.startswith("critic.") for k in changed) and any("lora_B" in k for k in changed)
        assert not any("value_head" in k for k in changed), sorted(changed)[:5]
        assert all(k.startswith("critic.") or "lora_" in k for k in changed), sorted(changed)[:5]
        assert np.isfinite(row["value/explained_variance_batch"])
        assert_runner_has_learner_weights(asym)  # the runners get LoRA, never the critic
    finally:
        asym.stop()


@pytest.mark.parametrize("ratio", ["token", "sequence"])
def test_token_level_ratios_train_from_the_samplers_token_log_probs(algo, tiny_policy, ratio):

    per_token = build_algo(tiny_policy, ratio=ratio, lr=1e-3)  # beside `algo`, in the same Ray
    try:
        module = per_token.policy_module()
        before = {k: v.clone() for k, v in module.state_dict().items() if "lora_" in k}
        row = per_token.train()["learners"]["default_policy"]
        assert row["policy/first_token_logp_max_dev"] < 1e-5 and row["policy/first_ratio_max_dev"] < 1e-5
        assert any(not torch.equal(module.state_dict()[k], v) for k, v in before.items())
    finally:
        per_token.stop()


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


def _real_episode(env, steps: int, seed: int, done: bool):
    """A SingleAgentEpisode of `steps` real env steps (rewards 0.1, 0.2, ... so every row is traceable)."""
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    obs, info = env.reset(seed=seed)
    observations, rewards = [obs], []
    for t in range(steps):
        obs, _, _, _, _ = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(0.1 * (t + 1))
    return SingleAgentEpisode(observations=observations, actions=[env.action_space.sample() for _ in range(steps)],
                              rewards=rewards, infos=[info] * (steps + 1), terminated=done, len_lookback_buffer=0,
                              observation_space=env.observation_space, action_space=env.action_space)


def test_the_learner_pipeline_computes_gae_per_episode_and_whitens_over_the_loss_rows(algo):
    """The real advantage path (the learner's connector pipeline: bootstrap rows, flags, our GAE) on hand-built
    episodes — one terminated, one cut at the rollout boundary — against the textbook recursion per episode."""
    from ray.rllib.evaluation.postprocessing import Postprocessing

    from envs import EnvOptions
    from vla_rl.rl.connectors import VF_PREDS
    from vla_rl.rl.env import build_rl_env

    learner = driver_learner(algo.learner_group)
    gamma, lam = algo.config.gamma, algo.config.lambda_
    tok = learner.module["default_policy"].policy.action_tokenizer
    env = build_rl_env(ENV, EnvOptions(image_size=64), tok, 1, "shaped", seed=0)
    episodes = [_real_episode(env, 3, 1, done=True), _real_episode(env, 2, 2, done=False)]
    env.close()
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={},
                                       metrics=None)["default_policy"]
    # The bootstrap rows (one after each chunk) are gone once advantages exist; their values are not needed any more.
    assert batch[Columns.LOSS_MASK].tolist() == [True] * 5 and len(batch[Columns.ACTIONS]) == 5
    assert all(len(v) == 5 for v in batch[Columns.OBS].values())
    mask = torch.tensor([True, True, True, False, True, True, False])
    values = torch.full((7,), float("nan"))
    values[mask] = batch[VF_PREDS]
    values[~mask] = _bootstrap_values(learner, episodes)
    expected, raw = [], []
    for start, n, terminated in ((0, 3, True), (4, 2, False)):  # per episode: delta_t, then A_t = delta_t + g l A_t+1
        r = [0.1 * (t + 1) for t in range(n)]
        v = values[start:start + n + 1].tolist()  # v[n] = V(final obs): the bootstrap row's value
        boot = 0.0 if terminated else v[n]
        adv, running = [0.0] * n, 0.0
        for t in reversed(range(n)):
            nxt = boot if t == n - 1 else v[t + 1]
            running = r[t] + gamma * nxt - v[t] + gamma * lam * running
            adv[t] = running
        raw += adv
        expected += [a + vv for a, vv in zip(adv, v[:n], strict=True)]
    torch.testing.assert_close(batch[Postprocessing.VALUE_TARGETS], torch.tensor(expected), rtol=1e-5, atol=1e-5)
    raw = torch.tensor(raw)
    torch.testing.assert_close(batch[Postprocessing.ADVANTAGES], (raw - raw.mean()) / raw.std(unbiased=False),
                               rtol=1e-4, atol=1e-4)


def _bootstrap_values(learner, episodes) -> torch.Tensor:
    """V(final observation) of each chunk (the value of its bootstrap row), from the policy directly."""
    policy = learner.module["default_policy"].policy
    last = [e.get_observations(-1) for e in episodes]
    obs = {k: torch.as_tensor(np.stack([o[k] for o in last])) for k in last[0]}
    with torch.no_grad():
        return policy.value(obs)
