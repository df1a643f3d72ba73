"""The RL loop end to end on one real Ray env-runner actor (tiny preset, tabletop/touch-color):
learner and sampler agree, an update changes only LoRA + value head, the reference stays put, the
runners get exactly the learner's trainable tensors, NaN steps are skipped, and the learner's advantage pipeline
equals `ppo_math`. `vla-rl train` as a user runs it (resume, export, best checkpoint): test_train_runs.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from obs_samples import make_obs
from ray.rllib.core.columns import Columns
from rl_setup import ENV, assert_runner_has_learner_weights, build_algo

from vla_rl.rl.rllib_internals import driver_learner


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
    from vla_rl.rl.connectors import VF_PREDS, take_rows
    from vla_rl.rl.env import build_rl_env

    learner = driver_learner(algo.learner_group)
    gamma, lam = algo.config.gamma, algo.config.lambda_
    tok = learner.module["default_policy"].policy.action_tokenizer
    env = build_rl_env(ENV, EnvOptions(image_size=64), tok, 1, "shaped", seed=0)
    episodes = [_real_episode(env, 3, 1, done=True), _real_episode(env, 2, 2, done=False)]
    env.close()
    learner._row_shuffle.update_index = 0  # fixed here (update() sets it), so the permutation below is not by chance
    shuffled = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={},
                                          metrics=None)["default_policy"]
    # The last piece permutes the rows (the first epoch's minibatches then sample the batch); undo it to compare.
    order = learner._row_shuffle.permutation(5)
    assert order.tolist() != list(range(5))
    batch = take_rows(shuffled, torch.argsort(order))
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


def test_a_log_only_reference_scores_a_spread_subset_of_the_loss_rows_and_the_kl_reads_only_those(algo):
    """With beta fixed at 0 the reference feeds only the logs: `max_rows` rows, evenly spaced, scored exactly as the
    reference scores them alone; the other rows stay zero and the KL statistics leave them out."""
    from envs import EnvOptions
    from vla_rl.rl.connectors import REF_BIN_LOGP, REF_ROWS, ReferenceBinLogp
    from vla_rl.rl.env import build_rl_env
    from vla_rl.rl.learner import VLAPPOLearner

    learner = driver_learner(algo.learner_group)
    policy = learner.module["default_policy"].policy
    env = build_rl_env(ENV, EnvOptions(image_size=64), policy.action_tokenizer, 1, "shaped", seed=0)
    episodes = [_real_episode(env, 3, 1, done=True), _real_episode(env, 2, 2, done=False)]
    env.close()
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={},
                                       metrics=None)["default_policy"]
    mb = {k: v for k, v in batch.items() if k not in (REF_BIN_LOGP, REF_ROWS)}
    out = ReferenceBinLogp(chunk=2, max_rows=3)(rl_module=learner.module, batch={"default_policy": mb},
                                                episodes=episodes)["default_policy"]
    assert out[REF_ROWS].tolist() == [True, False, True, False, True]  # rows 0, 2, 4 of 5
    rows = torch.tensor([0, 2, 4])
    obs = {k: v[rows] for k, v in mb[Columns.OBS].items()}
    tokens = learner.module["default_policy"]._tokens(mb[Columns.ACTIONS])[rows]
    with torch.no_grad(), policy.reference():
        expected = policy.evaluate(obs, tokens).bin_logp
    torch.testing.assert_close(out[REF_BIN_LOGP][rows], expected, atol=1e-6, rtol=0)
    assert not out[REF_BIN_LOGP][[1, 3]].any()

    mask = torch.ones(5)
    kl_mask = VLAPPOLearner._kl_rows_mask(out, mask)
    assert kl_mask.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert VLAPPOLearner._kl_rows_mask({}, mask) is mask  # every loss row scored: the loss mask itself
    assert VLAPPOLearner._kl_stats(learner, torch.tensor(0.3), 2, 5, torch.zeros(5)) == {}  # no scored row: no log
