"""Grasp: what the task is, independent of the engine that simulates it.

Both engines (MuJoCo and PyBullet) share these numbers, the randomization, the reward and
the success test, so one policy and one learned model serve both.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np
import torch

from wm_envs.assets import ASSETS
from wm_envs.geometry import from_rotation_translation
from wm_envs.tasks.base import Evaluation

#: The MuJoCo scene; the PyBullet env reads its camera and object colours from it too.
MJCF = ASSETS / "grasp.xml"
#: The PyBullet table and gripper (sizes, masses and joint ranges as in the MJCF).
URDF = ASSETS / "grasp.urdf"

SHAPES = ("box", "cylinder", "sphere")
#: Gripper (palm centre) workspace, metres. At the lowest z the fingertips touch the table.
WORKSPACE_LOW = np.array([-0.06, -0.06, 0.095])
WORKSPACE_HIGH = np.array([0.06, 0.06, 0.22])
GRIPPER_START = np.array([0.0, 0.0, 0.2])
#: How far one action of magnitude 1 moves the gripper target per control step, metres.
MAX_DELTA = 0.02
#: Per-finger travel; the gap between the fingers is twice this.
FINGER_TRAVEL = 0.06
#: Palm centre to the centre of the fingertip pads, metres (downwards).
FINGERTIP_OFFSET = 0.07
LIFT_GOAL = 0.10
HOLD_STEPS = 5
CONTROL_DT = 0.04

STATE_DIM = 24


@dataclass(frozen=True)
class GraspRandomization:
    """Ranges the world is drawn from at reset. Narrow ranges give a fixed world."""

    shapes: tuple[str, ...] = SHAPES
    box_half_size: tuple[float, float] = (0.03, 0.038)
    cylinder_radius: tuple[float, float] = (0.028, 0.035)
    cylinder_half_height: tuple[float, float] = (0.03, 0.045)
    sphere_radius: tuple[float, float] = (0.03, 0.037)
    mass: tuple[float, float] = (0.05, 0.3)
    friction: tuple[float, float] = (0.6, 1.2)
    object_xy: tuple[float, float] = (-0.04, 0.04)
    object_yaw: tuple[float, float] = (-np.pi, np.pi)

    def __post_init__(self) -> None:
        unknown = set(self.shapes) - set(SHAPES)
        if not self.shapes or unknown:
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {self.shapes}")


@dataclass(frozen=True)
class GraspWorld:
    """One draw of the world: what ``info["physics"]`` reports at reset."""

    shape: str
    half_extents: tuple[float, float, float]  # x, y, z half sizes of the bounding box, metres
    mass: float
    friction: float
    position: tuple[float, float, float]
    yaw: float

    def as_info(self) -> dict:
        info = asdict(self)
        info["half_extents"] = np.array(self.half_extents)
        info["position"] = np.array(self.position)
        return info


def draw_world(rng: np.random.Generator, ranges: GraspRandomization) -> GraspWorld:
    """Draw shape, size, mass, friction and start pose of the object."""
    shape = str(ranges.shapes[rng.integers(len(ranges.shapes))])
    if shape == "box":
        half = rng.uniform(*ranges.box_half_size, size=3)
    elif shape == "cylinder":
        radius = rng.uniform(*ranges.cylinder_radius)
        half = np.array([radius, radius, rng.uniform(*ranges.cylinder_half_height)])
    else:
        half = np.full(3, rng.uniform(*ranges.sphere_radius))
    x, y = rng.uniform(*ranges.object_xy, size=2)
    return GraspWorld(
        shape=shape,
        half_extents=tuple(float(h) for h in half),
        mass=float(rng.uniform(*ranges.mass)),
        friction=float(rng.uniform(*ranges.friction)),
        position=(float(x), float(y), float(half[2])),
        yaw=float(rng.uniform(*ranges.object_yaw)),
    )


def yaw_quaternion(yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation about the vertical axis."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def box_inertia(shape: str, half: np.ndarray, mass: float) -> np.ndarray:
    """Principal moments of inertia of a solid box, cylinder or sphere."""
    if shape == "box":
        hx, hy, hz = half
        return mass / 3 * np.array([hy**2 + hz**2, hx**2 + hz**2, hx**2 + hy**2])
    if shape == "cylinder":
        radius, half_height = half[0], half[2]
        side = mass * (3 * radius**2 + (2 * half_height) ** 2) / 12
        return np.array([side, side, mass * radius**2 / 2])
    return np.full(3, 0.4 * mass * half[0] ** 2)


def shaped_reward(reach_distance: float, grasped: bool, lift: float) -> float:
    """Dense reward in [-1, 0]: zero only once the object is lifted to the goal.

    ``0.25 * reach + 0.25 * grasped + 0.5 * lift - 1`` where reach = 1 - tanh(10 d) for the
    fingertip-to-object distance d, grasped = both fingers touch the object, and
    lift = clip(height gain / 10 cm, 0, 1). Negative, so finishing early never pays less.
    """
    reach = 1.0 - math.tanh(10.0 * reach_distance)
    lift_fraction = min(max(lift / LIFT_GOAL, 0.0), 1.0)
    return 0.25 * reach + 0.25 * grasped + 0.5 * lift_fraction - 1.0


def state_vector(
    gripper: np.ndarray,
    gripper_velocity: np.ndarray,
    finger_gap: float,
    obj: np.ndarray,
    obj_quaternion: np.ndarray,
    obj_velocity: np.ndarray,
    obj_angular_velocity: np.ndarray,
    half_height: float,
) -> np.ndarray:
    """The 24-dim state both engines report (layout in the env docstrings)."""
    fingertips = gripper - (0.0, 0.0, FINGERTIP_OFFSET)
    return np.concatenate(
        [
            gripper,
            gripper_velocity,
            (finger_gap,),
            obj,
            obj_quaternion,
            obj_velocity,
            obj_angular_velocity,
            obj - fingertips,
            (half_height,),
        ]
    ).astype(np.float32)


def evaluate(
    gripper: np.ndarray, obj: np.ndarray, half_height: float, grasped: bool, hold_steps: int
) -> tuple[Evaluation, int]:
    """Reward and success of a transition, and the new count of steps held at the goal."""
    lift = float(obj[2] - half_height)
    hold_steps = hold_steps + 1 if lift >= LIFT_GOAL else 0
    dx, dy = obj[0] - gripper[0], obj[1] - gripper[1]
    dz = obj[2] - gripper[2] + FINGERTIP_OFFSET  # to the fingertip centre
    reward = shaped_reward(math.sqrt(dx * dx + dy * dy + dz * dz), grasped, lift)
    success = hold_steps >= HOLD_STEPS
    return Evaluation(reward, success, False, {"lift": lift, "grasped": grasped}), hold_steps


def goal_progress(states: torch.Tensor) -> torch.Tensor:
    """The object's lift as a fraction of the goal, for state vectors [..., 24] -> [...]."""
    return (states[..., 9] - states[..., 23]) / LIFT_GOAL


def state_outcome(
    states: torch.Tensor, held: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``evaluate``'s success rule on state vectors [B, 24] and the steps held so far [B]:
    success (held at the goal for ``HOLD_STEPS``), terminated (on success only, as the
    physics env) and the new steps held, each [B]."""
    held = torch.where(goal_progress(states) >= 1, held + 1, 0)
    success = held >= HOLD_STEPS
    return success, success, held


def make_grasp_env(backend: str = "mujoco", **kwargs):
    """Entry point of ``Phys-Grasp-v0``: the same task on the chosen physics engine."""
    if backend == "mujoco":
        from wm_envs.tasks.grasp_mujoco import GraspMujocoEnv

        return GraspMujocoEnv(**kwargs)
    if backend == "pybullet":
        from wm_envs.tasks.grasp_pybullet import GraspPybulletEnv

        return GraspPybulletEnv(**kwargs)
    raise ValueError(f"backend must be 'mujoco' or 'pybullet', got {backend!r}")


def tracked_errors(predicted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """What ``compare`` tracks, from predicted and true state vectors [T, 24] -> errors [T]:
    the object's position (cm)."""
    return {"position_cm": 100.0 * np.linalg.norm(predicted[:, 7:10] - true[:, 7:10], axis=1)}


#: Half the widest horizontal size an object is drawn with (box and cylinder), metres.
WIDEST_HALF = 0.038
#: The gripper's bounding box about the fingertip centre: half widths in x and y (palm), and
#: its extent in z (finger bottoms to palm top), metres (``grasp.xml``); the fingers' width.
GRIPPER_HALF_X, GRIPPER_HALF_Y, GRIPPER_Z = 0.03, 0.07, (-0.022, 0.082)
FINGER_THICKNESS = 0.012
TABLE_HALF = 0.6  # the table top's half size, metres; its top is at z = 0


def object_extents(states):
    """World-axis half extents of a box that holds the object (halves ``WIDEST_HALF``,
    ``WIDEST_HALF`` and its half height, turned by its quaternion), from state vectors
    [..., 24] -> three arrays [...] (x, y, z), metres."""
    w, x, y, z = (states[..., i] for i in range(10, 14))
    wide, tall = WIDEST_HALF, states[..., 23]
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return tuple(wide * (abs(r0) + abs(r1)) + tall * abs(r2) for r0, r1, r2 in rows)


def free_motion_phases(states):
    """Which steps the object moves untouched, from state vectors [..., 24] before the step
    (numpy or torch) -> (flight, rest) bool masks [...] (``TaskSpec.free_motion``).

    Untouched: the object's bounding box (``object_extents``) stays clear of the gripper's
    (palm, and fingers at the current gap) by what both can move in one step plus 1 cm.
    Flight: untouched, and clear of the table by 1 cm before and after a ballistic step (above
    its top, or beyond its edge). Rest: untouched, the box's bottom within 5 mm of the table
    top, moving under 1 cm/s and 0.1 rad/s. Steps near either edge stay unmarked."""
    extent_x, extent_y, extent_z = object_extents(states)
    offset = states[..., 20:23]  # object minus fingertip centre
    half_y = (states[..., 6] / 2 + FINGER_THICKNESS).clip(min=GRIPPER_HALF_Y)
    centre_z, half_z = sum(GRIPPER_Z) / 2, (GRIPPER_Z[1] - GRIPPER_Z[0]) / 2
    gap = (
        (abs(offset[..., 0]) - GRIPPER_HALF_X - extent_x).clip(min=0) ** 2
        + (abs(offset[..., 1]) - half_y - extent_y).clip(min=0) ** 2
        + (abs(offset[..., 2] - centre_z) - half_z - extent_z).clip(min=0) ** 2
    ) ** 0.5
    speed = (states[..., 14:17] ** 2).sum(-1) ** 0.5
    gripper_speed = (states[..., 3:6] ** 2).sum(-1) ** 0.5
    untouched = gap > (gripper_speed + speed) * CONTROL_DT + MAX_DELTA + 0.01
    position = states[..., 7:10]
    after = position + states[..., 14:17] * CONTROL_DT
    after_z = after[..., 2] - 0.5 * 9.81 * CONTROL_DT**2
    clear = 0.01
    above = (position[..., 2] - extent_z > clear) & (after_z - extent_z > clear)
    beyond = (
        (abs(position[..., 0]) - extent_x > TABLE_HALF + clear)
        & (abs(after[..., 0]) - extent_x > TABLE_HALF + clear)
    ) | (
        (abs(position[..., 1]) - extent_y > TABLE_HALF + clear)
        & (abs(after[..., 1]) - extent_y > TABLE_HALF + clear)
    )
    flight = untouched & (above | beyond)
    spin = (states[..., 17:20] ** 2).sum(-1) ** 0.5
    resting = abs(position[..., 2] - extent_z) < 0.005
    rest = untouched & resting & (speed < 0.01) & (spin < 0.1)
    return flight, rest


@cache
def mjcf_camera_pose(path: str, name: str) -> torch.Tensor:
    """World-from-camera pose [4, 4] (OpenCV axes) of a fixed MJCF camera (``pos``,
    ``xyaxes``): MuJoCo's camera x stays, its y and z (it looks along -z) flip."""
    element = ET.parse(path).getroot().find(f".//camera[@name='{name}']")
    if element is None:
        raise ValueError(f"no camera named {name!r} in {path}")
    eye = torch.tensor([float(v) for v in element.get("pos").split()])
    x, y = torch.tensor([float(v) for v in element.get("xyaxes").split()]).view(2, 3)
    x = x / x.norm()
    y = y - (y @ x) * x  # MuJoCo makes the y axis orthogonal to x
    y = y / y.norm()
    rotation = torch.stack([x, -y, -torch.linalg.cross(x, y)], -1)  # columns: camera axes
    return from_rotation_translation(rotation, eye)


def camera_poses(states: torch.Tensor) -> torch.Tensor:
    """The fixed front camera's world-from-camera pose for every state vector [..., S]
    -> [..., 4, 4]."""
    pose = mjcf_camera_pose(str(MJCF), "front").to(states.device, states.dtype)
    return pose.expand(*states.shape[:-1], 4, 4).clone()  # a fresh tensor, not the cache
