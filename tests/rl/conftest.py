from pathlib import Path

import pytest
from rl_setup import build_tiny_policy


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> Path:
    return build_tiny_policy(tmp_path_factory.mktemp("policy") / "pretrained_model")
