import pytest


@pytest.fixture(scope="session")
def touch_demos(tmp_path_factory):
    """8 scripted touch-color episodes (written once per session)."""
    from vla_rl.cli import main

    out = tmp_path_factory.mktemp("demos") / "touch"
    assert main(["collect", "--env", "tabletop/touch-color", "--episodes", "8", "--out", str(out)]) == 0
    return out
