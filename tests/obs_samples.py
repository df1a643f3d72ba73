"""Random observations in the env contract, shared by the policy and RL tests (a plain module:
conftest names clash across folders)."""

import numpy as np

from envs.instruction import encode_instruction

INSTRUCTIONS = ["touch the red square", "push the block to the green target", "open the drawer"]


def make_obs(b: int, seed: int = 0, image_size: int = 64, state_dim: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (b, image_size, image_size, 3), dtype=np.uint8),
        "state": rng.normal(size=(b, state_dim)).astype(np.float32),
        "instruction": np.stack([encode_instruction(INSTRUCTIONS[i % len(INSTRUCTIONS)], 64) for i in range(b)]),
    }
