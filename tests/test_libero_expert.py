"""LIBERO scripted expert (envs/libero_expert.py): one expert episode per scripted suite succeeds within the suite's
time limit, its actions are 7-D in [-1, 1], `vla-rl collect` writes a LIBERO dataset that loads, and the suites
without an expert say so. The episode tests skip when the `libero` extra is not installed; each builds one env
(4-14 s) and runs one episode (60-110 decisions)."""

from __future__ import annotations

import contextlib
import io
import json
from importlib.util import find_spec
from types import SimpleNamespace

import numpy as np
import pytest

from envs import DemoDataset, ScriptedExpert
from envs.collect import rollout_expert
from envs.libero_expert import _gripper_orientation, libero_expert
from vla_rl.base.errors import ConfigError
from vla_rl.cli import main

needs_libero = pytest.mark.skipif(find_spec("libero") is None, reason='needs the extra: pip install -e ".[libero]"')

OBJECT_ID = "libero/object/pick_up_the_alphabet_soup_and_place_it_in_the_basket"
SPATIAL_ID = "libero/spatial/pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"


@pytest.fixture(scope="module")
def object_demos(tmp_path_factory):
    """`vla-rl collect` of one expert episode (seed 0) of a LIBERO-Object task."""
    out = tmp_path_factory.mktemp("libero_demos") / "object"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["collect", "--env", OBJECT_ID, "--episodes", "1", "--out", str(out),
                     "--env_options.image_size", "32"])
    assert code == 0
    return DemoDataset(out), json.loads(stdout.getvalue().strip().splitlines()[-1])


@needs_libero
def test_collect_writes_a_libero_object_dataset_that_loads(object_demos):
    ds, summary = object_demos
    assert len(ds) == 1 and summary["episodes"] == 1 and summary["steps"] == ds.num_steps
    assert ds.env["action_dim"] == 7 and ds.env["state_dim"] == 8
    episode = ds[0]
    assert episode.image.shape == (episode.length + 1, 32, 32, 3) and episode.state.shape == (episode.length + 1, 8)
    assert episode.instruction_text == "pick up the alphabet soup and place it in the basket" and episode.seed == 0


@needs_libero
def test_object_expert_succeeds_within_the_time_limit(object_demos):
    ds, summary = object_demos
    episode = ds[0]
    assert episode.succeeded and summary["success_rate"] == 1.0
    assert episode.length < 280  # the suite's episode length; success ends the episode early
    assert episode.action.shape == (episode.length, 7) and np.abs(episode.action).max() <= 1.0
    assert set(np.unique(episode.action[:, 6])) <= {-1.0, 1.0}  # the gripper is commanded open or closed


@needs_libero
def test_spatial_expert_grasps_the_bowl_by_its_rim_and_places_it_on_the_plate(make):
    env = make(SPATIAL_ID, image_size=16, instruction_length=96)
    episode = rollout_expert(env, ScriptedExpert(env), seed=0)
    assert episode.succeeded and episode.length < 220
    assert episode.action.shape == (episode.length, 7) and np.abs(episode.action).max() <= 1.0


def test_suites_without_an_expert_say_which_have_one():
    spec = SimpleNamespace(id="libero/goal/open_the_middle_drawer_of_the_cabinet")
    backend = SimpleNamespace(suite="goal", spec=spec)
    with pytest.raises(ConfigError, match=r"LIBERO-goal has no scripted expert.*object, spatial"):
        libero_expert(backend)


@pytest.mark.parametrize("yaw", [0.0, 0.7, -1.2])
def test_a_leaned_grasp_closes_the_fingers_along_the_sloping_walls_normal(yaw):
    tilt = 0.25
    radial = np.array([-np.sin(yaw), np.cos(yaw), 0.0])  # the fingers' closing axis before leaning (world y at yaw 0)
    tangent = np.cross([0.0, 0.0, 1.0], radial)
    orientation = _gripper_orientation(yaw, tilt, tangent)
    np.testing.assert_allclose(orientation @ orientation.T, np.eye(3), atol=1e-12)
    normal = radial * np.cos(tilt) - np.array([0.0, 0.0, np.sin(tilt)])  # outward and down, as a flaring wall's
    np.testing.assert_allclose(orientation[:, 0], normal, atol=1e-12)  # the grip site's x axis: the closing axis
    np.testing.assert_allclose(_gripper_orientation(yaw)[:, 2], [0.0, 0.0, -1.0], atol=1e-12)  # upright: down
