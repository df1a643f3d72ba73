"""What the RL tests share: the env, a small run's options, and a tiny random policy for it."""

from __future__ import annotations

from pathlib import Path

ENV = "tabletop/touch-color"
RUN = ["--envs_per_runner", "4", "--rollout_length", "30", "--minibatch_size", "60", "--epochs", "1", "--lora_r", "4",
       "--lora_alpha", "8", "--eval_every", "-1", "--wandb.mode", "disabled", "--save_every", "2", "--lr", "1e-3"]


def build_tiny_policy(path: Path) -> Path:
    from envs import get_spec
    from vla_rl.policy import ActionTokenizer, build_policy

    spec = get_spec(ENV)
    policy = build_policy(ActionTokenizer((-1.0,) * spec.action_dim, (1.0,) * spec.action_dim),
                          state_dim=spec.state_dim, image_size=(64, 64), family="llava", preset="tiny", seed=0)
    policy.spec.train_env, policy.spec.train_env_options = ENV, {"image_size": 64}
    policy.save_pretrained(path)
    return path


# The small run's options as TrainConfig fields (the RUN flags above), for algorithms built in-process.
SMALL = {"envs_per_runner": 4, "rollout_length": 30, "minibatch_size": 60, "epochs": 1, "lora_r": 4, "lora_alpha": 8}


def build_algo(policy_dir: Path, **options):
    """VLAPPO for the tiny policy on ENV, built in-process (Ray must be initialised): SMALL options + `options`."""
    from vla_rl.policy import VLAPolicy
    from vla_rl.rl.algorithm import build_config
    from vla_rl.rl.env import RLEnvSettings
    from vla_rl.train_config import TrainConfig

    cfg = TrainConfig(policy=str(policy_dir), **{**SMALL, **options})
    env_config = RLEnvSettings(
        env_id=ENV, env_options={"image_size": 64}, chunk_size=1, reward="shaped", seed=0,
        action_tokenizer=VLAPolicy.from_pretrained(policy_dir).action_tokenizer.to_dict(), bootstrap_time_limit=False,
        privileged_obs=cfg.critic == "privileged", envs_per_runner=cfg.envs_per_runner,
        group_size=cfg.group_size).as_dict()
    return build_config(cfg, env_config, str(policy_dir)).build_algo()


def assert_runner_has_learner_weights(algo) -> dict:
    """The (first) runner holds exactly the learner's LoRA tensors, and that is all a sync sends; returns them."""
    import torch

    sent = algo.policy_module().get_state(inference_only=True)
    got = algo.env_runner_group.foreach_env_runner(lambda r: r.module.get_state(inference_only=True),
                                                  local_env_runner=False)[0]
    assert sent and set(got) == set(sent)
    for k, v in sent.items():
        assert torch.equal(torch.as_tensor(got[k]), v), k
    return sent
