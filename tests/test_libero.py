"""LIBERO env family (`libero/<suite>/<task>`): the env contract, seeds -> official initial states, success and
progress, bad ids and actions. The env tests skip when the `libero` extra is not installed; one env is shared per
module because building one takes 4-14 s."""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import EnvOptions, decode_instruction, get_spec, make_env, registry
from envs.errors import ActionError

needs_libero = pytest.mark.skipif(find_spec("libero") is None, reason='needs the extra: pip install -e ".[libero]"')

OBJECT_TASK = "pick_up_the_alphabet_soup_and_place_it_in_the_basket"
OBJECT_ID = f"libero/object/{OBJECT_TASK}"


@pytest.fixture(scope="module")
def env():
    env = make_env(OBJECT_ID, EnvOptions(image_size=64))
    yield env
    env.close()


def _teleport(env, fraction: float) -> None:
    """Put the task's object `fraction` of the way from where it is to 5 cm above its target, at rest."""
    backend = env.unwrapped.backend
    (_, obj, target), = backend._goal
    task = backend._task
    joint = task.objects_dict[obj].joints[-1]
    qpos = task.sim.data.get_joint_qpos(joint).copy()
    goal = backend._position(target) + np.array([0.0, 0.0, 0.05])
    qpos[:3] = qpos[:3] + fraction * (goal - qpos[:3])
    task.sim.data.set_joint_qpos(joint, qpos)
    task.sim.data.set_joint_qvel(joint, np.zeros(6))
    task.sim.forward()


@needs_libero
def test_task_table_matches_the_installed_benchmark():
    import contextlib
    import io

    from libero.libero import benchmark

    from envs.libero_backend import SUITES
    from envs.libero_instructions import LIBERO_TASKS

    for suite, name in SUITES.items():
        with contextlib.redirect_stdout(io.StringIO()):
            bench = benchmark.get_benchmark_dict()[name]()
        tasks = [bench.get_task(i) for i in range(bench.n_tasks)]
        assert LIBERO_TASKS[suite] == tuple((t.name, t.language) for t in tasks), suite
    assert sum(s.family == "libero" for s in envs.list_specs()) == 130


@needs_libero
def test_every_instruction_fits_the_default_options_and_an_explicit_length_wins():
    from envs import encode_instruction, resolve_options

    specs = [s for s in envs.list_specs() if s.family == "libero"]
    longest = max(len(t.encode()) for s in specs for t in s.instructions)
    assert longest > 64  # the generic default would refuse these tasks
    for spec in specs:
        length = resolve_options(spec.id, EnvOptions()).instruction_length
        assert length == 96
        for text in spec.instructions:
            encode_instruction(text, length)
    assert resolve_options(OBJECT_ID, EnvOptions(instruction_length=128)).instruction_length == 128
    assert resolve_options("metaworld/drawer-open", EnvOptions()).instruction_length == 64


@needs_libero
def test_observation_contract(env):
    obs, info = env.reset(seed=0)
    assert set(obs) == {"image", "state", "instruction"}
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (64, 64, 3) and obs["image"].std() > 0
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (8,)  # eef xyz, axis-angle, 2 finger joints
    assert obs["instruction"].dtype == np.int64 and obs["instruction"].shape == (96,)  # the family's default length
    assert env.observation_space.contains(obs)
    assert decode_instruction(obs["instruction"]) == info["instruction"] == "pick up the alphabet soup and place it in the basket"
    assert info["success"] is False and 0.0 <= info["progress"] < 0.1 and info["gt_reward"] == info["progress"]
    assert env.action_space.shape == (7,) and env.action_space.low.min() == -1 and env.action_space.high.max() == 1
    assert env.max_episode_steps == 280 and env.task_spec.max_episode_steps == 280
    assert 0.03 < obs["state"][6] < 0.05 and -0.05 < obs["state"][7] < -0.03  # the gripper is open after the waits
    backend = env.unwrapped.backend
    privileged = backend.privileged_state()
    assert privileged.shape == (backend.privileged_dim,) and np.all(np.isfinite(privileged))


@needs_libero
def test_a_seed_picks_an_official_initial_state(env):
    backend = env.unwrapped.backend
    first, _ = env.reset(seed=7)
    assert backend.init_index == 7 and len(backend.init_states) == 50
    for action in np.random.default_rng(0).uniform(-1, 1, size=(3, 7)):
        env.step(action)  # move the arm and close the gripper: nothing may carry over into the next episode
    for seed in (7, 57, 10007):  # seed % 50
        again, _ = env.reset(seed=seed)
        assert backend.init_index == 7
        assert np.array_equal(again["image"], first["image"]) and np.array_equal(again["state"], first["state"])
    other, _ = env.reset(seed=8)
    assert not np.array_equal(other["image"], first["image"])


@needs_libero
def test_actions_of_the_wrong_size_are_refused_on_one_line(env):
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.array([0.5, 0, 0, 0, 0, 0, -1], dtype=np.float32))
    assert np.isfinite(reward) and not terminated and not truncated
    with pytest.raises(ActionError) as err:
        env.step(np.zeros(4, dtype=np.float32))  # a Meta-World-sized action
    assert OBJECT_ID in str(err.value) and "(7,)" in str(err.value) and "\n" not in str(err.value)


@needs_libero
def test_progress_rises_toward_the_target_and_success_ends_the_episode(env):
    env.reset(seed=1)
    _teleport(env, 0.5)
    _, _, terminated, _, info = env.step(np.zeros(7, np.float32))
    assert not terminated and 0.2 < info["progress"] < 0.9  # halfway (in the air): the place term is about 0.5
    env.reset(seed=1)
    _teleport(env, 1.0)
    for _ in range(30):  # the object drops into the basket
        _, reward, terminated, _, info = env.step(np.zeros(7, np.float32))
        if terminated:
            break
    assert terminated and info["success"] and info["progress"] == 1.0 and reward == 1.0


def _key_error(env_id: str) -> str:
    with pytest.raises(KeyError) as err:
        make_env(env_id)
    message = err.value.args[0]
    assert "\n" not in message
    return message


@needs_libero
def test_unknown_suite_or_task_names_close_matches():
    assert f"did you mean ['{OBJECT_ID}'" in _key_error("libero/object/pick_up_the_alphabet_soup")
    assert "'libero/object/pick_up_the_ketchup_and_place_it_in_the_basket'" in _key_error(
        "libero/objct/pick_up_the_ketchup_and_place_it_in_the_basket")
    assert "did you mean ['libero/90/KITCHEN_SCENE1_open_the_bottom_drawer_of_the_cabinet'" in _key_error(
        "libero/100/KITCHEN_SCENE1_open_the_bottom_drawer_of_the_cabinet")
    assert "no ids start with 'libero/100/', did you mean one under ['libero/10/'" in _key_error("libero/100/x")


@needs_libero
def test_gymnasium_ids_of_nested_task_names_resolve():
    spec = get_spec(OBJECT_ID)
    assert spec.gym_id == f"vla_rl/libero.object.{OBJECT_TASK}" and spec.gym_id in gym.registry
    assert get_spec(spec.gym_id) is spec


def test_a_libero_id_without_the_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", {k: v for k, v in registry._FAMILIES.items() if k != "libero"})
    monkeypatch.setattr(registry, "_SPECS", {k: v for k, v in registry._SPECS.items() if not k.startswith("libero/")})
    assert "optional family 'libero', which is not installed: pip install -e \".[libero]\"" in _key_error(OBJECT_ID)


def test_importing_envs_does_not_import_libero():
    code = "import sys, envs; print(sorted(m for m in sys.modules if m.split('.')[0] in ('libero', 'robosuite')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
