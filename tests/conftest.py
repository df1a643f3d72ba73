import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest

TABLETOP_IDS = ["tabletop/touch-color", "tabletop/push-to-target", "tabletop/off-center"]
# One Meta-World task per contract test keeps the suite fast; all 50 are swept by bench_envs.py.
CONTRACT_IDS = TABLETOP_IDS + ["metaworld/drawer-open"]


@pytest.fixture
def make():
    """Build envs and close them (EGL renderers) at teardown."""
    from envs import EnvOptions, make_env

    built = []

    def _make(env_id, **options):
        env = make_env(env_id, EnvOptions(**options))
        built.append(env)
        return env

    yield _make
    for env in built:
        env.close()
