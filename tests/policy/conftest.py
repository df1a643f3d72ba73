import numpy as np
import pytest

from envs.instruction import encode_instruction

INSTRUCTIONS = ["touch the red square", "push the block to the green target", "open the drawer"]


def make_obs(b: int, seed: int = 0, image_size: int = 64, state_dim: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (b, image_size, image_size, 3), dtype=np.uint8),
        "state": rng.normal(size=(b, state_dim)).astype(np.float32),
        "instruction": np.stack([encode_instruction(INSTRUCTIONS[i % len(INSTRUCTIONS)], 64) for i in range(b)]),
    }


@pytest.fixture
def tiny_policy():
    """A tiny from-config policy factory (LLaVA by default)."""
    from vla_rl.policy import ActionTokenizer, build_policy

    def _build(family="llava", chunk_size=1, use_state=True, seed=0):
        at = ActionTokenizer((-1.0, -0.5), (1.0, 0.5))
        return build_policy(at, state_dim=2, image_size=(64, 64), family=family, preset="tiny",
                            chunk_size=chunk_size, use_state=use_state, seed=seed)

    return _build


@pytest.fixture
def obs_batch():
    """Random observations in the env contract: obs_batch(B, seed=0)."""
    return make_obs
