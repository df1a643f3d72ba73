"""User-facing environment settings (the `env_options:` block of every config)."""

from __future__ import annotations

from dataclasses import dataclass

from vla_rl.base.validation import check_choice, check_range

# The instruction length of a family that does not set its own (every Meta-World and tabletop instruction fits).
DEFAULT_INSTRUCTION_LENGTH = 64


@dataclass
class EnvOptions:
    # Side of the square camera image in pixels. 64 is the CPU default (RL-VLM-F trains its reward
    # CNN at 64-128 px); use 224 for real VLAs on a GPU (OpenVLA's input size).
    image_size: int = 64
    # Camera name; empty = the task family's default ("corner" for Meta-World, "top" for tabletop).
    camera: str = ""
    # Episode length in policy decisions; 0 = the task's default (listed by `vla-rl envs`).
    max_episode_steps: int = 0
    # Each policy action is applied this many physics control steps (rewards are summed).
    action_repeat: int = 1
    # End the episode at the first success (SimpleVLA-RL and RL4VLA do this for VLA rollouts).
    terminate_on_success: bool = True
    # Reward returned by `step`: "dense" (the task's shaped ground-truth reward) or "sparse"
    # (1.0 on the step that succeeds). The RL loop may relabel it with a learned reward model.
    reward_type: str = "dense"
    # Fixed length of the int64 instruction ids in the observation (UTF-8 bytes, 0-padded); 0 = the task family's
    # (64; LIBERO 96, whose longest instruction is 88 bytes).
    instruction_length: int = 0

    def validate(self, prefix: str = "env_options") -> None:
        check_range(f"{prefix}.image_size", self.image_size, 16, 512)
        check_range(f"{prefix}.max_episode_steps", self.max_episode_steps, 0, 100_000)
        check_range(f"{prefix}.action_repeat", self.action_repeat, 1, 50)
        check_choice(f"{prefix}.reward_type", self.reward_type, ("dense", "sparse"))
        if self.instruction_length:
            check_range(f"{prefix}.instruction_length", self.instruction_length, 8, 4096)
