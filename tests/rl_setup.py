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
