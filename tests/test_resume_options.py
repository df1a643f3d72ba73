"""`--resume` compares the run's saved options with the new ones: a run saved when `env_options.instruction_length`
defaulted to 64 resumes under the new default 0 (= the task family's length) where that length is also 64, and is
still refused where the family's length differs or the user changed it."""

import dataclasses

import pytest

from envs import EnvFamily, TaskSpec, registry
from vla_rl.base.errors import ConfigError
from vla_rl.checkpoints import check_same_options
from vla_rl.config import save_config
from vla_rl.train_config import TrainConfig


def _saved(tmp_path, cfg):
    return save_config(cfg, tmp_path / "train_config.yaml")


def _with_length(cfg, n):
    return dataclasses.replace(cfg, env_options=dataclasses.replace(cfg.env_options, instruction_length=n))


def test_a_run_saved_with_the_old_default_resumes_under_the_new_one(tmp_path):
    cfg = TrainConfig(env="tabletop/touch-color", policy="outputs/some_policy")
    path = _saved(tmp_path, _with_length(cfg, 64))
    check_same_options(TrainConfig, _with_length(cfg, 0), path, ("resume",), "a train run")  # no error
    with pytest.raises(ConfigError, match="instruction_length: 64 -> instruction_length: 80"):
        check_same_options(TrainConfig, _with_length(cfg, 80), path, ("resume",), "a train run")


def test_where_the_familys_length_is_not_64_the_old_default_is_a_change(tmp_path, monkeypatch):
    spec = TaskSpec("longtext/reach", "longtext", ("reach the point",), 2, 2, 10)
    family = EnvFamily("longtext", lambda: [spec], lambda *a: None, reward_max=1.0, instruction_length=128)
    monkeypatch.setitem(registry._FAMILIES, "longtext", family)
    monkeypatch.setitem(registry._SPECS, spec.id, spec)
    cfg = TrainConfig(env=spec.id, policy="outputs/some_policy")
    path = _saved(tmp_path, _with_length(cfg, 64))
    with pytest.raises(ConfigError, match="instruction_length: 64 -> instruction_length: 0"):
        check_same_options(TrainConfig, _with_length(cfg, 0), path, ("resume",), "a train run")
