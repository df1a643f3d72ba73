"""The learner's settings come from TrainConfig alone: one default per knob, and a dict that does not fit is refused."""

import dataclasses

import pytest

from vla_rl.rl.algorithm import build_config
from vla_rl.rl.learner_settings import LearnerSettings
from vla_rl.train_config import TrainConfig


def test_every_user_knob_comes_from_train_config_without_a_second_default():
    user_fields = [f for f in dataclasses.fields(LearnerSettings) if f.default is dataclasses.MISSING]
    benchmark_only = {f.name for f in dataclasses.fields(LearnerSettings)} - {f.name for f in user_fields}
    assert benchmark_only == {"kl_horizon", "ref_chunk", "kl_reference", "ref_log_rows"}
    cfg = TrainConfig(policy="p", ratio="token", lr=3e-4, vf_lr=3e-3, beta=0.02, target_kl=0.003, critic_warmup=2,
                      temperature=0.5, group_size=4, shuffle_advantages=True, seed=7)
    s = LearnerSettings.from_train_config(cfg)
    assert (s.ratio, s.lr, s.vf_lr, s.beta, s.target_kl, s.critic_warmup, s.temperature, s.group_size,
            s.shuffle_advantages, s.seed) == ("token", 3e-4, 3e-3, 0.02, 0.003, 2, 0.5, 4, True, 7)
    for f in user_fields:  # a value equal to TrainConfig's default, field by field (where the names agree)
        if hasattr(TrainConfig, f.name):
            assert getattr(LearnerSettings.from_train_config(TrainConfig(policy="p")), f.name) == getattr(
                TrainConfig(policy="p"), f.name), f.name


def test_rllib_fields_carry_the_coefficients_and_value_clipping_is_off():
    cfg = TrainConfig(policy="p", vf_coef=0.25, entropy_coef=0.01, clip=0.28, gamma=0.97, gae_lambda=0.9)
    config = build_config(cfg, env_config={}, policy_dir="p")
    assert (config.vf_loss_coeff, config.entropy_coeff, config.clip_param, config.gamma, config.lambda_) == (
        0.25, 0.01, 0.28, 0.97, 0.9)
    assert config.vf_clip_param == float("inf")
    assert LearnerSettings.of(config) == LearnerSettings.from_train_config(cfg)


def test_a_learner_dict_with_a_missing_or_unknown_key_is_refused():
    class Config:
        learner_config_dict = {**LearnerSettings.from_train_config(TrainConfig(policy="p")).as_dict(), "vf_coef": 1.0}

    with pytest.raises(ValueError, match=r"unknown keys \['vf_coef'\], missing keys \[\]"):
        LearnerSettings.of(Config)
    del Config.learner_config_dict["vf_coef"], Config.learner_config_dict["beta"]
    with pytest.raises(ValueError, match=r"unknown keys \[\], missing keys \['beta'\]"):
        LearnerSettings.of(Config)


def test_lora_dropout_that_would_never_act_is_refused():
    from vla_rl.base.errors import ConfigError

    TrainConfig(policy="p", lora_dropout=0.0).validate()
    with pytest.raises(ConfigError, match=r"lora_dropout=0.1 has no effect: .* leave it 0"):
        TrainConfig(policy="p", lora_dropout=0.1).validate()


def test_module_settings_come_from_train_config_and_a_dict_that_does_not_fit_is_refused():
    from vla_rl.policy import PolicyError
    from vla_rl.rl.module_settings import ModuleSettings

    cfg = TrainConfig(policy="p", lora_r=8, lora_alpha=16, lora_target_modules="", temperature=0.5, seed=3,
                      value_detach=True, critic="privileged")
    s = ModuleSettings.from_train_config("/x/pretrained_model", cfg)
    assert (s.policy_dir, s.lora_r, s.lora_alpha, s.lora_target_modules, s.temperature, s.seed, s.value_detach,
            s.critic, s.base_dtype) == ("/x/pretrained_model", 8, 16, "", 0.5, 3, True, "privileged", "float32")
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(ModuleSettings))  # no second default
    config = build_config(cfg, env_config={}, policy_dir="/x/pretrained_model")
    assert ModuleSettings.of(config.rl_module_spec.model_config) == s
    # what a runner's module receives: RLlib merges its own model_config keys in (tests/rl/test_train.py runs it)
    assert ModuleSettings.of({**config.model_config, **config.rl_module_spec.model_config}) == s
    with pytest.raises(PolicyError, match=r"missing keys \['seed'\]"):
        ModuleSettings.of({k: v for k, v in s.as_dict().items() if k != "seed"})
    with pytest.raises(PolicyError, match=r"unknown keys \['lora_dropout'\]"):
        ModuleSettings.of({**s.as_dict(), "lora_dropout": 0.0})


def test_the_kl_enters_the_loss_with_a_positive_or_adaptive_beta_only():
    def settings(**kw):
        return LearnerSettings.from_train_config(TrainConfig(policy="p", **kw))

    assert not settings(beta=0.0).kl_in_loss  # the reference pass then scores a log-only subsample
    assert settings(beta=0.01).kl_in_loss and settings(beta=0.0, kl_target=0.01).kl_in_loss
