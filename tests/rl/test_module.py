"""The RLModule around VLAPolicy: sampler/learner log-prob equality, trainable-only state, strict sync."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from obs_samples import make_obs
from ray.rllib.core.columns import Columns

from vla_rl.policy import PolicyError
from vla_rl.rl.module import BIN_LOGP, VLARLModule
from vla_rl.rl.module_settings import ModuleSettings

OBS_SPACE = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (64, 64, 3), np.uint8),
                             "state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
                             "instruction": gym.spaces.Box(0, 256, (64,), np.int64)})
ACTION_SPACE = gym.spaces.MultiDiscrete([256] * 4)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """The model_config of a tiny chunk-2 policy directory (2 x 2 action tokens), as `vla-rl train` builds it."""
    from vla_rl.policy import ActionTokenizer, build_policy

    policy = build_policy(ActionTokenizer((-1.0, -0.5), (1.0, 0.5)), state_dim=2, image_size=(64, 64), family="llava",
                          preset="tiny", chunk_size=2, seed=0)
    path = tmp_path_factory.mktemp("policy") / "pretrained_model"
    policy.save_pretrained(path)
    return ModuleSettings(policy_dir=str(path), lora_r=4, lora_alpha=8, lora_target_modules="", temperature=1.0,
                          seed=0, value_detach=False, activation_checkpointing=False, base_dtype="float32",
                          critic="vla").as_dict()


def make_module(config, inference_only=False, **overrides):
    return VLARLModule(observation_space=OBS_SPACE, action_space=ACTION_SPACE, inference_only=inference_only,
                       model_config={**config, **overrides})


def _obs(b=6, seed=0):
    return {k: torch.as_tensor(v) for k, v in make_obs(b, seed).items()}


def _perturb(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_learner_logp_equals_sampler_logp(config):
    module = make_module(config)
    _perturb(module)  # non-zero LoRA, so the adapters take part
    batch = {Columns.OBS: _obs()}
    out = module.forward_exploration(batch)
    bins = out[Columns.ACTIONS]
    assert bins.shape == (6, 4) and int(bins.min()) >= 0 and int(bins.max()) < 256
    train = module.forward_train({Columns.OBS: batch[Columns.OBS], Columns.ACTIONS: bins.to(torch.int32)})
    torch.testing.assert_close(train[Columns.ACTION_LOGP], out[Columns.ACTION_LOGP], atol=1e-5, rtol=0)
    ratio = torch.exp(train[Columns.ACTION_LOGP] - out[Columns.ACTION_LOGP])
    torch.testing.assert_close(ratio, torch.ones(6), atol=1e-5, rtol=0)  # the first PPO ratio
    assert train[BIN_LOGP].shape == (6, 4, 256) and train[Columns.ACTION_LOGP].requires_grad
    torch.testing.assert_close(module.compute_values(batch), train[Columns.EMBEDDINGS].detach(), atol=1e-5, rtol=0)


def test_sampling_follows_the_seed_and_greedy_is_deterministic(config):
    a, b, c = make_module(config, seed=3), make_module(config, seed=3), make_module(config, seed=4)
    batch = {Columns.OBS: _obs()}
    sa, sb, sc = (m.forward_exploration(batch)[Columns.ACTIONS] for m in (a, b, c))
    assert torch.equal(sa, sb) and not torch.equal(sa, sc)
    assert torch.equal(a.forward_inference(batch)[Columns.ACTIONS], c.forward_inference(batch)[Columns.ACTIONS])


def test_state_is_trainable_tensors_only_and_round_trips(config):
    learner, runner = make_module(config), make_module(config, inference_only=True)
    state = learner.get_state()
    assert state and all(".lora_" in n or n.startswith("policy.value_head.") for n in state)
    assert any(n.startswith("policy.value_head.") for n in state)
    n_state = sum(v.numel() for v in state.values())
    n_all = sum(p.numel() for p in learner.parameters())
    assert n_state < 0.5 * n_all  # the frozen base is never in the state
    _perturb(learner)
    sync = learner.get_state(inference_only=True)
    assert not any(n.startswith("policy.value_head.") for n in sync)  # runners need no value head
    runner.set_state(sync)
    for name, value in runner.get_state().items():
        assert torch.equal(value, learner.get_state()[name]), name
    batch = {Columns.OBS: _obs()}
    assert torch.equal(runner.forward_inference(batch)[Columns.ACTIONS], learner.forward_inference(batch)[Columns.ACTIONS])


def test_a_wrong_or_missing_key_in_a_synced_state_raises(config):
    module = make_module(config)
    state = module.get_state()
    bad = dict(state)
    bad["policy.model.not_a_weight"] = torch.zeros(1)
    with pytest.raises(PolicyError, match="unknown"):
        module.set_state(bad)
    missing = dict(state)
    missing.pop(next(iter(missing)))
    with pytest.raises(PolicyError, match="missing"):
        module.set_state(missing)


def test_action_space_must_fit_the_policy(config):
    with pytest.raises(PolicyError, match="does not fit the policy"):
        VLARLModule(observation_space=OBS_SPACE, action_space=gym.spaces.MultiDiscrete([256] * 3), model_config=config)


def test_value_detach_keeps_the_value_loss_out_of_lora(config):
    for detach, lora_gets_grad in ((False, True), (True, False)):
        module = make_module(config, value_detach=detach)
        _perturb(module)
        obs = _obs()
        bins = module.forward_exploration({Columns.OBS: obs})[Columns.ACTIONS]
        values = module.forward_train({Columns.OBS: obs, Columns.ACTIONS: bins})[Columns.EMBEDDINGS]
        values.pow(2).sum().backward()
        lora = [p.grad for n, p in module.named_parameters() if "lora_" in n]
        head = [p.grad for n, p in module.named_parameters() if "value_head" in n]
        assert all(g is not None and g.abs().sum() > 0 for g in head)
        assert any(g is not None and g.abs().sum() > 0 for g in lora) == lora_gets_grad


def test_a_few_surrogate_steps_on_one_batch_move_each_decision_the_way_of_its_advantage(config):
    """The sign convention end to end (module, decision log-prob, clipped surrogate, LoRA gradients): Adam steps
    on one fixed batch raise the log-prob of positive-advantage decisions, lower the negative ones, and raise the
    surrogate objective."""
    from vla_rl.rl import ppo_math

    module = make_module(config)
    _perturb(module)
    obs = _obs(b=8, seed=2)
    sampled = module.forward_exploration({Columns.OBS: obs})
    bins, logp_old = sampled[Columns.ACTIONS].to(torch.int32), sampled[Columns.ACTION_LOGP]
    advantages = torch.tensor([1.0, -1.0] * 4)
    lora = [p for n, p in module.named_parameters() if p.requires_grad and "value_head" not in n]
    optim = torch.optim.Adam(lora, lr=1e-3)
    objective = []
    for _ in range(4):
        logp = module.forward_train({Columns.OBS: obs, Columns.ACTIONS: bins})[Columns.ACTION_LOGP]
        loss, _, _ = ppo_math.clipped_surrogate(logp, logp_old, advantages, clip=0.2)
        objective.append(-float(loss))
        optim.zero_grad()
        loss.backward()
        optim.step()
    with torch.no_grad():
        moved = module.forward_train({Columns.OBS: obs, Columns.ACTIONS: bins})[Columns.ACTION_LOGP] - logp_old
    assert objective[-1] > objective[0]
    assert bool((moved[advantages > 0] > 0).all()) and bool((moved[advantages < 0] < 0).all()), moved


PRIV_SPACE = gym.spaces.Dict({**OBS_SPACE.spaces, "privileged": gym.spaces.Box(-np.inf, np.inf, (7,), np.float32)})


def test_the_privileged_critic_reads_only_the_simulators_state_and_trains_alone(config):
    module = VLARLModule(observation_space=PRIV_SPACE, action_space=ACTION_SPACE, inference_only=False,
                         model_config={**config, "critic": "privileged"})
    _perturb(module)
    obs = {**_obs(), "privileged": torch.randn(6, 7, generator=torch.Generator().manual_seed(0))}
    bins = module.forward_exploration({Columns.OBS: obs})[Columns.ACTIONS]
    train = module.forward_train({Columns.OBS: obs, Columns.ACTIONS: bins.to(torch.int32)})
    values = train[Columns.EMBEDDINGS]
    torch.testing.assert_close(values, module.critic(obs["privileged"]), atol=0, rtol=0)
    torch.testing.assert_close(module.compute_values({Columns.OBS: obs}), values.detach(), atol=0, rtol=0)
    other = {**obs, "image": torch.zeros_like(obs["image"])}  # V does not depend on what the policy sees
    torch.testing.assert_close(module.compute_values({Columns.OBS: other}), values.detach(), atol=0, rtol=0)
    values.sum().backward()  # the value loss reaches the critic only
    grads = {n for n, p in module.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    assert grads and all(n.startswith("critic.") for n in grads), sorted(grads)[:3]
    names = set(module.get_state())
    assert any(n.startswith("critic.") for n in names) and not any("value_head" in n for n in names)
    runner = VLARLModule(observation_space=PRIV_SPACE, action_space=ACTION_SPACE, inference_only=True,
                         model_config={**config, "critic": "privileged"})
    assert not any(n.startswith("critic.") for n in runner.get_state())  # the sync sends LoRA only
    runner.set_state(module.get_state())  # a full state fits an inference-only module (the critic is skipped)


def test_the_privileged_critic_without_its_observation_is_refused(config):
    with pytest.raises(PolicyError, match="privileged"):
        make_module(config, critic="privileged")
    with pytest.raises(PolicyError, match="critic="):
        make_module(config, critic="oracle")
