"""`read_state_json`: the one reader of a checkpoint's JSON state (BC and RL), each defect named in one line."""

import json

import pytest

from vla_rl.base.errors import CheckpointError
from vla_rl.checkpoints import read_state_json


def test_a_good_state_is_returned_and_each_defect_is_named(tmp_path):
    path = tmp_path / "state.json"
    with pytest.raises(CheckpointError, match=r"state.json: missing — the checkpoint is incomplete"):
        read_state_json(path, ("step",))
    path.write_text('{"step": 3')
    with pytest.raises(CheckpointError, match=r"state.json: not valid JSON"):
        read_state_json(path, ("step",))
    path.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"state.json: not a JSON object"):
        read_state_json(path, ("step",))
    path.write_text(json.dumps({"step": 3}))
    with pytest.raises(CheckpointError, match=r"state.json: field 'rng' is missing"):
        read_state_json(path, ("step", "rng"))
    assert read_state_json(path, ("step",)) == {"step": 3}
