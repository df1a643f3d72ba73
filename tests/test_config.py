import pytest

from envs import EnvOptions
from vla_rl.base.errors import ConfigError
from vla_rl.config import CollectConfig, load_config, parse_config, save_config


def test_overrides_and_yaml(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("env: tabletop/off-center\nepisodes: 7\nenv_options:\n  image_size: 96\n")
    cfg = parse_config(CollectConfig, ["--config_path", str(yaml), "--episodes", "3"], prog="t")
    assert (cfg.env, cfg.episodes, cfg.env_options.image_size) == ("tabletop/off-center", 3, 96)


def test_save_load_round_trip(tmp_path):
    cfg = CollectConfig(env="metaworld/drawer-open", episodes=4, noise=0.2, env_options=EnvOptions(camera="corner2"))
    path = save_config(cfg, tmp_path / "c.yaml")
    assert load_config(CollectConfig, path) == cfg


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env_options.image_size", "8"], r"env_options.image_size=8 is out of range.*\[16, 512\]"),
        (["--env_options.reward_type", "shaped"], r"env_options.reward_type='shaped'.*\['dense', 'sparse'\]"),
        (["--noise", "-0.5"], r"noise=-0.5 is out of range"),
        (["--env", "nope/task"], r"env: unknown env id 'nope/task'"),
        (["--episodes", "many"], r"episodes.*many"),
        (["--unknown_key", "1"], r"unrecognized arguments: --unknown_key"),
    ],
)
def test_bad_values_name_field_and_range(args, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(CollectConfig, args, prog="t")


def test_unknown_yaml_key_is_named(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("episodes: 3\nepisdoes: 4\n")
    with pytest.raises(ConfigError, match="episdoes"):
        load_config(CollectConfig, yaml)


def test_shipped_experiment_configs_validate():
    from pathlib import Path

    paths = sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))
    assert paths, "experiments/*.yaml missing"
    for path in paths:
        load_config(CollectConfig, path)
    from vla_rl.config import PretrainConfig

    pretrain = sorted((Path(__file__).parents[1] / "experiments" / "pretrain").glob("*.yaml"))
    assert pretrain, "experiments/pretrain/*.yaml missing"
    for path in pretrain:
        load_config(PretrainConfig, path)
    from vla_rl.train_config import TrainConfig

    train = sorted((Path(__file__).parents[1] / "experiments" / "train").glob("*.yaml"))
    assert len(train) >= 4, "experiments/train/*.yaml missing"
    for path in train:
        cfg = load_config(TrainConfig, path)
        cfg.validate()
        if cfg.reward == "preference":
            assert cfg.preference.queries_per_round > 0 and not cfg.env_options.terminate_on_success
