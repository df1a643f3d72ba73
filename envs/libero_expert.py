"""Scripted pick-and-place expert for LIBERO-Object and LIBERO-Spatial (`EnvFamily.expert` of the libero family).

Both suites have one goal predicate that moves one object: LIBERO-Object `(in <obj>_1 basket_1_contain_region)`,
LIBERO-Spatial `(on akita_black_bowl_1 plate_1)` (docs/libero_probe.md). The expert reads the objects' poses and
collision boxes from the simulator and drives the OSC_POSE controller with a small state machine:

    approach (above the grasp point) -> descend -> close -> lift -> carry (above the target) -> lower -> release
    -> retreat

Position actions are proportional, `clip((goal - eef) / 0.05 * GAIN, -1, 1)`; the gripper points straight down and
turns about the vertical only to grasp an object across its narrow side (P-control on the orientation error).
Objects are grasped across their middle. A bowl (wider than the open gripper) is pinched by its rim, on the side with
room for the fingers and the hand and the least reach, with the gripper leaned by the wall's slope so that the pads
lie flat on it. On the way to the grasp and while carrying, the grip site (or the held object) stays above everything
under its path (ray casts). After the lift and while carrying, the grasp is checked (fingers not shut on nothing, the
object still at its grasp offset from the gripper); if it slipped, the expert opens, rises and starts again from the
object's new pose. The gripper action is always exactly OPEN or CLOSE (robosuite's gripper only reads its sign).

Per-episode memory (the phase, the grasp plan) lives in `backend.expert_memory`, which `LiberoBackend.reset`
clears. The other suites (goal, 10, 90: opening drawers, turning knobs, two-object tasks) have no expert.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.libero_backend import LiberoBackend
from vla_rl.base.errors import ConfigError

SCRIPTED_SUITES = ("object", "spatial")
MAX_DELTA = 0.05  # m per step at action 1 (OSC_POSE output_max)
MAX_ROT = 0.5  # rad per step at action 1
GAIN = 1.5  # position action = GAIN * error / MAX_DELTA: full speed beyond 3.3 cm of error
ROT_GAIN = 1.0
OPEN, CLOSE = -1.0, 1.0
HOVER = 0.08  # m above the grasp point before descending
CLEARANCE = 0.06  # m between the carried object's bottom and anything on its way (the target included)
HAND_CLEARANCE = 0.08  # m between the grip site and anything under the way to the grasp (fingertips: 0.013 below)
PATH_STEP, PATH_WIDTH = 0.02, 0.24  # m: spacing of the ray casts along a way, and the width of the band they cover
# (the hand is 0.21 m wide along the finger axis)
RAY_START_Z = 2.0  # m: ray casts start above everything on the table
DROP = 0.01  # m between the object's bottom and the target's top when the gripper opens
CLOSE_STEPS = 12  # steps with the gripper closing before the lift
RELEASE_STEPS = 10
EMPTY_GAP = 0.003  # finger opening (m) below which a closed gripper holds nothing (0.002 shut; on a bowl wall: 0.004)
SLIP = 0.03  # m the object may move from its grasp offset to the gripper before the grasp counts as lost
# m from the grip site up to where the fingertips stay clear of the surface under the object (their collision
# meshes reach 0.013 m below the grip site; the pads span -0.005..+0.012 m)
FINGER_CLEARANCE = 0.016
RIM_INSET = 0.006  # m from a bowl's outer radius to where the fingers straddle its wall
MAX_TILT = 0.4  # rad: the most the gripper leans to lie flat on a bowl's sloping wall
FAR_SIDE = -0.3  # cosine between a rim side and the way to the robot below which the gripper stays upright
RIM_CANDIDATES = 12  # rim grasp directions tried around a bowl
CLEAR_ENOUGH = 0.005  # m: more room than this under the fingers and hand does not make a rim side better
# The gripper's footprint in its own frame when open: (bottom relative to the grip site, offsets along the finger axis
# away from the bowl's centre, offsets across it) for the outer finger and the hand (collision boxes, measured).
FOOTPRINT = (
    (-0.013, (0.032, 0.045, 0.058), (-0.012, 0.0, 0.012)),
    (0.024, tuple(np.linspace(-0.1, 0.1, 9)), (-0.03, 0.0, 0.035)),
)
# The grip site's orientation at the start, pointing straight down (its z axis is world -z, its x axis world y); the
# fingers then close along world y. Measured at reset: within 4 degrees of this in both suites.
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix of `angle` radians about the unit vector `axis` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _gripper_orientation(yaw: float, tilt: float = 0.0, tangent: np.ndarray | None = None) -> np.ndarray:
    """DOWN turned by `yaw` about the vertical, then leaned by `tilt` about the horizontal `tangent`."""
    turned = _rotation(np.array([0.0, 0.0, 1.0]), yaw) @ DOWN
    return turned if tangent is None else _rotation(tangent, tilt) @ turned


def _rotvec(mat: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(mat).reshape(9))
    if quat[0] < 0:
        quat = -quat
    sin_half = np.linalg.norm(quat[1:])
    if sin_half < 1e-9:
        return np.zeros(3)
    return quat[1:] * (2.0 * np.arctan2(sin_half, quat[0]) / sin_half)


def _subtree_bodies(model, root: int) -> list[int]:
    return [b for b in range(model.nbody) if b == root or _has_ancestor(model, b, root)]


def _has_ancestor(model, body: int, root: int) -> bool:
    while body > 0:
        body = int(model.body_parentid[body])
        if body == root:
            return True
    return False


def object_box(backend: LiberoBackend, name: str) -> tuple[np.ndarray, np.ndarray]:
    """World-axis-aligned (low, high) corners of the object's collision geoms."""
    task = backend._task
    model, data = task.sim.model._model, task.sim.data._data
    bodies = set(_subtree_bodies(model, task.obj_body_id[name]))
    low, high = np.full(3, np.inf), np.full(3, -np.inf)
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    for g in range(model.ngeom):
        if int(model.geom_bodyid[g]) not in bodies or (model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0):
            continue
        center, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        corners = (center + signs * half) @ data.geom_xmat[g].reshape(3, 3).T + data.geom_xpos[g]
        low, high = np.minimum(low, corners.min(0)), np.maximum(high, corners.max(0))
    return low, high


def _target_box(backend: LiberoBackend, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the goal's target: an object's collision box, or a region site's box."""
    task = backend._task
    if name in task.objects_dict:
        return object_box(backend, name)
    site = task.object_sites_dict[name]
    center = np.asarray(task.sim.data.get_site_xpos(name), dtype=np.float64)
    half = np.abs(np.asarray(task.sim.data.get_site_xmat(name)) @ np.asarray(site.size, dtype=np.float64))
    return center - half, center + half


class _Plan:
    """One episode's memory: the phase and the grasp chosen for the object."""

    def __init__(self):
        self.phase = "approach"
        self.timer = 0
        self.grasp: np.ndarray | None = None  # where the grip site goes to grasp
        self.orientation = DOWN  # the grip site's target orientation for this grasp
        self.offset = np.zeros(3)  # object position minus grip site position, measured after closing
        self.start_low = 0.0  # the object's bottom before the grasp (the surface it stands on)
        self.retries = 0
        self.last_z = np.inf  # the grip site's height at the previous step
        self.travel_z = 0.0  # grip site height that clears everything on the way to the grasp
        self.carry_z = 0.0  # grip site height while carrying: the object clears everything on the way


def _surface_height(backend: LiberoBackend, xy: np.ndarray, start_z: float, skip: set[int]) -> float:
    """Height of the highest collision geom under `xy` below `start_z`, ignoring the bodies in `skip`."""
    task = backend._task
    model, data = task.sim.model._model, task.sim.data._data
    groups = np.zeros(6, dtype=np.uint8)
    groups[0] = 1  # collision geoms
    geom = np.zeros(1, dtype=np.int32)
    z = start_z
    while True:
        dist = mujoco.mj_ray(model, data, np.array([xy[0], xy[1], z]), np.array([0.0, 0.0, -1.0]), groups, 1, -1,
                             geom)
        if dist < 0:
            return -np.inf
        z -= dist
        if int(model.geom_bodyid[geom[0]]) not in skip:
            return z
        z -= 1e-4


def _rim_points(backend: LiberoBackend, bodies: set[int], low: np.ndarray, high: np.ndarray) -> list[tuple]:
    """(angle, radius, tilt) around the object's centre of where the fingers can pinch its wall: the centres of the
    box geoms of its upper half (a bowl's wall is a ring of thin boxes; pinching the seam between two slips), with
    the wall's slope from the vertical, else RIM_CANDIDATES directions at the box's radius less RIM_INSET, upright."""
    task = backend._task
    model, data = task.sim.model._model, task.sim.data._data
    center = (low + high) / 2
    points = []
    for g in range(model.ngeom):
        if (int(model.geom_bodyid[g]) in bodies and model.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX
                and model.geom_contype[g] != 0 and data.geom_xpos[g, 2] > center[2]):
            rel = data.geom_xpos[g, :2] - center[:2]
            normal = data.geom_xmat[g].reshape(3, 3)[:, int(np.argmin(model.geom_size[g]))]  # the wall's thin axis
            tilt = min(float(np.arcsin(min(abs(normal[2]), 1.0))), MAX_TILT)
            points.append((float(np.arctan2(rel[1], rel[0])), float(np.linalg.norm(rel)), tilt))
    if len(points) >= 4:
        return points
    radius = max(high[0] - low[0], high[1] - low[1]) / 2 - RIM_INSET
    return [(theta, radius, 0.0) for theta in np.arange(RIM_CANDIDATES) * (2 * np.pi / RIM_CANDIDATES)]


def _rim_grasp(backend: LiberoBackend, obj: str, low: np.ndarray, high: np.ndarray,
               destination: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grip site position, orientation) to pinch the wall of a bowl that goes to `destination`.

    The side: room around the outer finger and the hand (ray casts over their footprint), then the least reach of the
    arm at the grasp and at the placing, then the finger axis along the way (the contacts have no torsional friction:
    a bowl carried sideways to the finger axis swings about it). The fingers close along the wall's normal (the
    gripper leans by the wall's slope, except on the far side), so that the pads lie flat on it: an upright pinch of
    the sloping wall slips."""
    task = backend._task
    skip = set(_subtree_bodies(task.sim.model._model, task.obj_body_id[obj]))
    center = (low + high) / 2
    grasp_z = high[2] - 0.015
    base = np.asarray(task.robots[0].base_pos, dtype=np.float64)
    way_end = destination[:2]
    way = destination[:2] - center[:2]
    way = way / np.linalg.norm(way) if np.linalg.norm(way) > 1e-6 else None
    best = None
    for theta, radius, tilt in _rim_points(backend, skip, low, high):
        radial, tangent = np.array([np.cos(theta), np.sin(theta)]), np.array([-np.sin(theta), np.cos(theta)])
        site = center[:2] + radius * radial
        to_base = (base[:2] - center[:2]) / max(float(np.linalg.norm(base[:2] - center[:2])), 1e-6)
        if float(radial @ to_base) < FAR_SIDE:  # leaning the wrist away from the robot would stretch past its reach
            tilt = 0.0
        clearance = np.inf
        for part_bottom, rs, ts in FOOTPRINT:
            for r in rs:
                for t in ts:
                    xy = site + r * radial + t * tangent
                    bottom = grasp_z + part_bottom * np.cos(tilt) - r * np.sin(tilt)  # leaning: outer side lower
                    clearance = min(clearance, bottom - _surface_height(backend, xy, high[2] + 0.04, skip))
        # Enough room counts the same (up to CLEAR_ENOUGH); then the least reach, at the grasp or at the placing
        # (the far side of a bowl stretches the arm to the end of its reach); then the finger axis along the carry.
        placed = site - center[:2] + way_end  # the grip site when the bowl is over `destination`
        reach = max(float(np.linalg.norm(site - base[:2])), float(np.linalg.norm(placed - base[:2])))
        along = abs(float(radial @ way)) if way is not None else 0.0
        score = (min(clearance, CLEAR_ENOUGH), -round(reach, 2), along)
        if best is None or score > best[0]:
            yaw = theta % np.pi - np.pi / 2  # fingers along `radial`: (-sin yaw, cos yaw) = +-radial
            # Leaning about the tangent turns the finger axis from `radial` to radial cos(tilt) - z sin(tilt).
            orientation = _gripper_orientation(yaw, tilt, np.array([tangent[0], tangent[1], 0.0]))
            best = (score, np.array([site[0], site[1], grasp_z]), orientation)
    return best[1], best[2]


def _plan_grasp(backend: LiberoBackend, plan: _Plan, obj: str, target: str) -> None:
    low, high = object_box(backend, obj)
    center = (low + high) / 2
    size = high - low
    plan.start_low = float(low[2])
    if max(size[0], size[1]) > 0.085 or "bowl" in obj:  # wider than the open gripper: grasp the rim
        t_low, t_high = _target_box(backend, target)
        plan.grasp, plan.orientation = _rim_grasp(backend, obj, low, high, (t_low + t_high) / 2)
    else:
        long_in_y = size[1] > size[0] + 0.005  # the fingers close along world y at yaw 0: then turn them to x
        plan.orientation = _gripper_orientation(np.pi / 2 if long_in_y else 0.0)
        plan.grasp = np.array([center[0], center[1], max(center[2], high[2] - 0.03, low[2] + FINGER_CLEARANCE)])


def _move(eef: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """P-control toward `goal`, each axis clipped to [-1, 1]."""
    return np.clip((goal - eef) / MAX_DELTA * GAIN, -1.0, 1.0)


def _rotate(backend: LiberoBackend, orientation: np.ndarray) -> np.ndarray:
    """P-control of the grip site's orientation (OSC_POSE takes the rotation delta in the world frame)."""
    task = backend._task
    current = task.sim.data._data.site_xmat[task.robots[0].eef_site_id].reshape(3, 3)
    error = _rotvec(orientation @ current.T)
    return np.clip(error / MAX_ROT * ROT_GAIN, -1.0, 1.0)


def _path_height(backend: LiberoBackend, start: np.ndarray, end: np.ndarray, skip: set[int]) -> float:
    """Height of the highest collision geom in a band PATH_WIDTH wide along the straight line `start` -> `end` (xy),
    ignoring the bodies in `skip` (the robot, the held object)."""
    length = float(np.linalg.norm(end[:2] - start[:2]))
    across = np.array([0.0, 0.0]) if length < 1e-6 else np.array([start[1] - end[1], end[0] - start[0]]) / length
    top = -np.inf
    for f in np.linspace(0.0, 1.0, max(2, int(length / PATH_STEP) + 1)):
        for side in (-1.0, 0.0, 1.0):
            xy = start[:2] + f * (end[:2] - start[:2]) + side * PATH_WIDTH / 2 * across
            top = max(top, _surface_height(backend, xy, RAY_START_Z, skip))
    return top


def _travel(eef: np.ndarray, goal: np.ndarray, height: float) -> np.ndarray:
    """Waypoint toward `goal` that keeps the grip site at `height` or above until it is over `goal`: rise first, then
    cross, then descend."""
    if np.linalg.norm((goal - eef)[:2]) < 0.02:
        return goal
    if eef[2] < height - 0.02:
        return np.array([eef[0], eef[1], height])
    return np.array([goal[0], goal[1], max(height, goal[2])])


def libero_expert(backend: LiberoBackend) -> np.ndarray:
    """The clean 7-D action in [-1, 1] for the backend's current state (see the module docstring)."""
    if backend.suite not in SCRIPTED_SUITES:
        raise ConfigError(f"{backend.spec.id}: LIBERO-{backend.suite} has no scripted expert (envs/libero_expert.py "
                          f"scripts the suites {', '.join(SCRIPTED_SUITES)}); collect demos from libero/object/... "
                          "or libero/spatial/... tasks")
    plan: _Plan = backend.expert_memory.setdefault("plan", _Plan())
    (_, obj, target), = backend._goal
    task = backend._task
    eef = np.asarray(backend._obs["robot0_eef_pos"], dtype=np.float64)
    fingers = np.asarray(backend._obs["robot0_gripper_qpos"], dtype=np.float64)
    gap = float(fingers[0] - fingers[1])
    obj_pos = backend._position(obj)
    model = task.sim.model._model
    robot = set(_subtree_bodies(model, model.body(task.robots[0].robot_model.root_body).id))
    held = set(_subtree_bodies(model, task.obj_body_id[obj]))
    if plan.grasp is None:
        _plan_grasp(backend, plan, obj, target)
        plan.travel_z = _path_height(backend, eef, plan.grasp, robot | held) + HAND_CLEARANCE
    plan.timer += 1
    last_z, plan.last_z = plan.last_z, float(eef[2])
    gripper = OPEN
    goal = eef

    def switch(phase: str) -> None:
        plan.phase, plan.timer = phase, 0

    if plan.phase == "approach":
        hover = plan.grasp + np.array([0.0, 0.0, HOVER])
        goal = _travel(eef, hover, plan.travel_z)
        if np.linalg.norm((hover - eef)[:2]) < 0.01 and abs(hover[2] - eef[2]) < 0.03:
            switch("descend")
    if plan.phase == "descend":
        goal = plan.grasp
        if np.linalg.norm(goal - eef) < 0.008 or plan.timer > 25:
            switch("close")
    if plan.phase == "close":
        goal, gripper = plan.grasp, CLOSE
        if plan.timer >= CLOSE_STEPS:
            plan.offset = obj_pos - eef
            switch("lift")
    if plan.phase in ("lift", "carry", "lower"):
        gripper = CLOSE
    if plan.phase in ("lift", "carry"):  # (lowering onto the target may push the object in the hand)
        lost = gap < EMPTY_GAP or np.linalg.norm(obj_pos - eef - plan.offset) > SLIP
        if lost and plan.timer > 3:
            switch("regrasp")
    if plan.phase in ("lift", "carry", "lower"):
        low, high = object_box(backend, obj)
        t_low, t_high = _target_box(backend, target)
        t_center = (t_low + t_high) / 2
        place = np.array([t_center[0] - plan.offset[0], t_center[1] - plan.offset[1], eef[2]])
        if plan.phase == "lift":
            # The object's bottom clears everything between here and the target by CLEARANCE.
            obstacles = max(_path_height(backend, eef, place, robot | held), t_high[2], plan.start_low)
            plan.carry_z = eef[2] + obstacles + CLEARANCE - low[2]
            goal = np.array([plan.grasp[0], plan.grasp[1], max(plan.carry_z, plan.grasp[2] + 0.05)])
            if eef[2] > plan.carry_z - 0.02 or plan.timer > 30:
                switch("carry")
        if plan.phase == "carry":
            goal = np.array([place[0], place[1], plan.carry_z])
            if np.linalg.norm((goal - eef)[:2]) < 0.01:
                switch("lower")
        if plan.phase == "lower":
            goal = np.array([place[0], place[1], eef[2] + (t_high[2] + DROP - low[2])])
            stalled = plan.timer > 3 and eef[2] > last_z - 0.002  # resting on the target's rim
            if low[2] < t_high[2] + DROP + 0.005 or stalled or plan.timer > 30:
                switch("release")
    if plan.phase == "release":
        gripper = OPEN
        if plan.timer >= RELEASE_STEPS:
            switch("retreat")
    if plan.phase == "retreat":
        goal = eef + np.array([0.0, 0.0, 0.05])
    if plan.phase == "regrasp":  # open, rise, re-plan from the object's new pose
        goal = eef + np.array([0.0, 0.0, 0.05])
        if plan.timer >= 8:
            plan.retries += 1
            plan.grasp = None
            switch("approach")
    return np.concatenate([_move(eef, goal), _rotate(backend, plan.orientation), [gripper]])
