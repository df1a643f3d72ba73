import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest


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
