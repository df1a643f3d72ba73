import pytest
from obs_samples import INSTRUCTIONS, make_obs  # noqa: F401 - re-exported for the policy tests


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
