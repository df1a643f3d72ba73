"""`vla-rl train`: PPO fine-tuning of a pretrained VLA's LoRA adapters on RLlib env runners.

Each iteration: every env runner resets its envs and samples `rollout_length` decisions per env
with the current adapters (temperature sampling), the learner runs `epochs` passes of minibatch
PPO with β·KL to the reference, and the new LoRA weights go to the runners. Every `eval_every`
iterations the learner's policy is evaluated greedily on fixed unseen seeds through the same code
as `vla-rl eval` (with `val_episodes`, also on separate validation seeds, whose best checkpoint becomes
`checkpoints/best`). One JSON row per iteration goes to OUT/metrics.jsonl (and to wandb): the
metric names and their healthy ranges are listed in docs/training.md ("Training metrics").

With --suite / --envs: one language-conditioned policy on several tasks, the runners' envs spread over them
round-robin (vla_rl.rl.multitask), rollout and evaluation metrics also per task (docs/commands.md, "vla-rl train").

The run itself is `vla_rl.rl.run.TrainRun`, which Python users can drive directly; this verb only parses.
"""

from __future__ import annotations

from vla_rl.train_config import TrainConfig


def run(cfg: TrainConfig) -> int:
    from vla_rl.rl.run import TrainRun

    TrainRun(cfg).run()
    return 0
