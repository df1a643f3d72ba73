"""Tabletop tasks: a kinematic finger moved in the table plane by actions (dx, dy) in [-1, 1]^2.

Each task defines success, a dense reward and a progress in [0, 1]. The reward is the progress
itself (shaped, 1 at success), so "dense reward" and "progress" agree by construction.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import mujoco
import numpy as np

from envs.backend import TaskBackend, TaskStatus
from envs.render import FastRenderer
from envs.spec import TaskSpec

ASSETS = Path(__file__).parent / "assets"
FAMILY = "tabletop"
MAX_STEP = 0.015  # metres the finger moves per control step at |action| = 1
SUBSTEPS = 10  # physics steps per control step (timestep 5 ms -> 20 Hz control)
FINGER_LIMIT = 0.2  # the finger stays in [-0.2, 0.2]^2
FINGER_RADIUS = 0.02
BLOCK_HALF = 0.025
COLOURS = ("red", "green", "blue", "yellow")


def _clip01(x: float) -> float:
    return float(np.clip(x, 0.0, 1.0))


class TabletopBackend(TaskBackend):
    """Shared machinery: model loading, mocap finger control with interpolation, rendering."""

    xml: str
    default_camera = "top"
    max_step = MAX_STEP  # metres per control step at |action| = 1

    def __init__(self, spec: TaskSpec, image_size: int, camera: str):
        self.spec = spec
        self.model = mujoco.MjModel.from_xml_path(str(ASSETS / self.xml))
        self.data = mujoco.MjData(self.model)
        self._renderer = FastRenderer(self.model, image_size, camera or self.default_camera)
        self.rng = np.random.default_rng()
        self._instruction = spec.instructions[0]

    # --- TaskBackend ---------------------------------------------------------------------------
    def reset(self, seed: int | None) -> TaskStatus:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        self._place(self.rng)
        mujoco.mj_forward(self.model, self.data)
        self._on_reset()
        return self._evaluate()

    def step(self, action: np.ndarray) -> TaskStatus:
        start = self.finger_xy
        goal = np.clip(start + self.max_step * np.asarray(action[:2], dtype=np.float64), -FINGER_LIMIT, FINGER_LIMIT)
        for k in range(1, SUBSTEPS + 1):  # move the kinematic finger smoothly: no deep penetration
            self.data.mocap_pos[0, :2] = start + (goal - start) * k / SUBSTEPS
            mujoco.mj_step(self.model, self.data)
        return self._evaluate()

    def state(self) -> np.ndarray:
        return self.finger_xy.astype(np.float32)

    @property
    def privileged_dim(self) -> int:
        return 2 + 2 * (self.model.nbody - 1) + len(self.spec.instructions)

    def privileged_state(self) -> np.ndarray:
        """Finger xy, every body's xy, and the instruction as a one-hot over the task's instructions (the target)."""
        target = np.zeros(len(self.spec.instructions), dtype=np.float32)
        target[self.spec.instructions.index(self._instruction)] = 1.0
        return np.concatenate([self.finger_xy, self.data.xpos[1:, :2].ravel(), target]).astype(np.float32)

    def render(self) -> np.ndarray:
        return self._renderer.render(self.data)

    @property
    def instruction(self) -> str:
        return self._instruction

    def close(self) -> None:
        self._renderer.close()

    # --- privileged accessors (experts, rewards, tests) ----------------------------------------
    @property
    def finger_xy(self) -> np.ndarray:
        return self.data.mocap_pos[0, :2].copy()

    def body_xy(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos[:2].copy()

    # --- task hooks ----------------------------------------------------------------------------
    @abstractmethod
    def _place(self, rng: np.random.Generator) -> None:
        """Put the objects and the finger at a seeded random initial state."""

    def _on_reset(self) -> None:
        """Record reference distances used by progress (after mj_forward)."""

    @abstractmethod
    def _evaluate(self) -> TaskStatus:
        """Success, dense reward and progress of the current state."""

    def _set_finger(self, xy: np.ndarray) -> None:
        self.data.mocap_pos[0, :2] = xy

    def _set_block(self, xy: np.ndarray) -> None:
        self.data.joint("block_x").qpos[0] = xy[0]
        self.data.joint("block_y").qpos[0] = xy[1]


def _spread_points(rng: np.random.Generator, n: int, limit: float, min_dist: float) -> np.ndarray:
    """n points in [-limit, limit]^2 at least `min_dist` apart (rejection sampling)."""
    for _ in range(10_000):
        pts = rng.uniform(-limit, limit, size=(n, 2))
        gaps = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(n) * 1e9
        if gaps.min() >= min_dist:
            return pts
    raise RuntimeError("could not place objects; the workspace is too small for min_dist")


class TouchColorBackend(TabletopBackend):
    """Four coloured blocks; the instruction names one; touching it (overlap) succeeds."""

    xml = "touch_color.xml"
    TOUCH_DIST = BLOCK_HALF + FINGER_RADIUS  # centre distance at which the finger overlaps

    def _place(self, rng):
        pts = _spread_points(rng, len(COLOURS) + 1, 0.15, 0.09)
        for colour, xy in zip(COLOURS, pts[:-1], strict=True):
            self.model.body(f"block_{colour}").pos[:2] = xy
        self._set_finger(pts[-1])
        self.target = COLOURS[int(rng.integers(len(COLOURS)))]
        self._instruction = f"touch the {self.target} block"

    def _on_reset(self):
        self._d0 = max(self._dist(), 1e-6)

    def _dist(self) -> float:
        return float(np.linalg.norm(self.finger_xy - self.body_xy(f"block_{self.target}")))

    def _evaluate(self):
        d = self._dist()
        success = d <= self.TOUCH_DIST
        progress = 1.0 if success else _clip01(1 - (d - self.TOUCH_DIST) / (self._d0 - self.TOUCH_DIST + 1e-9))
        return TaskStatus(success, progress, progress)


class ReachCornerBackend(TouchColorBackend):
    """The learning sanity task: touch-color with the blocks at their fixed corners (±10 cm) and steps of up to 12 cm,
    so one decision can touch any block. The finger starts a third of the way toward the named block, so the context
    is in the state and the image as well as in the instruction (a policy that does not yet ground colour words, as
    the small VLA after little BC, can still solve it). A contextual bandit over the bins whose optimum is known
    (move toward the finger's own quadrant's corner: 100 % in one decision) and cheap to reach; a uniform policy
    succeeds in ~20 % of its 2-decision episodes. PPO that does not get it near 100 % has a bug in its machinery."""

    max_step = 0.12
    START_FRACTION = 0.35  # of the way from the centre to the target block

    def _place(self, rng):
        self.target = COLOURS[int(rng.integers(len(COLOURS)))]
        self._instruction = f"touch the {self.target} block"
        block = self.model.body(f"block_{self.target}").pos[:2]  # the blocks stay where the XML puts them
        self._set_finger(self.START_FRACTION * block + rng.uniform(-0.01, 0.01, size=2))


class BlockPushBackend(TabletopBackend):
    """A sliding block moved by pushing. Progress = 0.25 * reach (finger to block contact)
    + 0.75 * the task's own score in [0, 1], so it rises during the approach too."""

    CONTACT_DIST = BLOCK_HALF + FINGER_RADIUS

    def _on_reset(self):
        self._reach0 = max(self._reach_gap(), 1e-6)

    def _reach_gap(self) -> float:
        return max(float(np.linalg.norm(self.finger_xy - self.body_xy("block"))) - self.CONTACT_DIST, 0.0)

    def _status(self, success: bool, score: float) -> TaskStatus:
        reach = _clip01(1 - self._reach_gap() / self._reach0)
        progress = 1.0 if success else 0.25 * reach + 0.75 * _clip01(score)
        return TaskStatus(success, progress, progress)


class PushToTargetBackend(BlockPushBackend):
    """Push the red block until its centre is within 3 cm of the green target's centre."""

    xml = "push_to_target.xml"
    SUCCESS_DIST = 0.03

    def _place(self, rng):
        while True:
            block, target, finger = _spread_points(rng, 3, 0.13, 0.1)
            if np.linalg.norm(block - target) >= 0.12:
                break
        self.model.body("target").pos[:2] = target
        self._set_block(block)
        self._set_finger(finger)

    def _on_reset(self):
        super()._on_reset()
        self._push0 = max(self._push_dist(), 1e-6)

    def _push_dist(self) -> float:
        return float(np.linalg.norm(self.body_xy("block") - self.body_xy("target")))

    def _evaluate(self):
        push_dist = self._push_dist()
        score = 1 - (push_dist - self.SUCCESS_DIST) / (self._push0 - self.SUCCESS_DIST)
        return self._status(push_dist <= self.SUCCESS_DIST, score)


class OffCenterBackend(BlockPushBackend):
    """Block on the centre line, finger behind it; |block x| >= 8 cm succeeds (left or right)."""

    xml = "off_center.xml"
    SUCCESS_OFFSET = 0.08

    def _place(self, rng):
        block = np.array([rng.uniform(-0.01, 0.01), rng.uniform(-0.05, 0.05)])
        finger = np.array([rng.uniform(-0.01, 0.01), block[1] - rng.uniform(0.1, 0.13)])
        self._set_block(block)
        self._set_finger(finger)

    def _evaluate(self):
        offset = abs(float(self.body_xy("block")[0]))
        return self._status(offset >= self.SUCCESS_OFFSET, offset / self.SUCCESS_OFFSET)


TABLETOP_TASKS: dict[str, tuple[type[TabletopBackend], tuple[str, ...], int, str]] = {
    "touch-color": (
        TouchColorBackend,
        tuple(f"touch the {c} block" for c in COLOURS),
        30,
        "four coloured blocks; the instruction picks the target (language grounding)",
    ),
    "reach-corner": (
        ReachCornerBackend,
        tuple(f"touch the {c} block" for c in COLOURS),
        2,
        "learning sanity task: four blocks at fixed corners, 12 cm steps, 2 decisions (a contextual bandit)",
    ),
    "push-to-target": (
        PushToTargetBackend,
        ("push the red block onto the green target",),
        100,
        "push a sliding block onto a target disc",
    ),
    "off-center": (
        OffCenterBackend,
        ("move the block off the centre line",),
        40,
        "two equally correct solutions (push left or right): the mode-averaging case",
    ),
}


def tabletop_specs() -> list[TaskSpec]:
    return [
        TaskSpec(
            id=f"{FAMILY}/{name}",
            family=FAMILY,
            instructions=instructions,
            action_dim=2,
            state_dim=2,
            max_episode_steps=steps,
            description=desc,
        )
        for name, (_, instructions, steps, desc) in TABLETOP_TASKS.items()
    ]


def make_tabletop_backend(spec: TaskSpec, image_size: int, camera: str) -> TabletopBackend:
    cls = TABLETOP_TASKS[spec.id.split("/", 1)[1]][0]
    return cls(spec, image_size, camera)
