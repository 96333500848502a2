"""Phys-Grasp-v0 on MuJoCo: a parallel-jaw gripper lifts a randomized object off a table."""

from __future__ import annotations

import mujoco
import numpy as np

from wm_envs.tasks import grasp
from wm_envs.tasks.base import Evaluation, PhysicsTaskEnv
from wm_envs.tasks.experts import GraspExpert
from wm_envs.tasks.grasp import GraspRandomization
from wm_envs.tasks.mujoco_base import MujocoRenderer

_HIDDEN_GROUP = 3  # render group of the object geoms not used this episode


class GraspMujocoEnv(PhysicsTaskEnv):
    """Pick up an object with a parallel-jaw gripper and hold it 10 cm above the table.

    ## Description
    A gripper on three Cartesian slide joints (position actuators, gravity-compensated) and two
    coupled finger joints (one force-limited position actuator) sits above a table. Each episode
    draws one object -- box, cylinder or sphere -- with random size, mass, friction, position
    and yaw. The front camera frames the workspace tightly: at 64x64 the object spans 10+ px.

    ## Action Space
    ``Box(-1, 1, (4,), float32)``: gripper target displacement dx, dy, dz (1 = 2 cm per step,
    the target is kept inside the workspace) and the finger command (-1 fully open, +1 fully
    closed, linear in between). Out-of-range values are clipped; a wrong shape or a NaN/inf
    raises ``ValueError``.

    ## Observation Space
    ``obs_mode="dict"`` (default): ``{"image": uint8 (S, S, 3), "state": float32 (24,)}``;
    ``"state"``: the vector alone; ``"pixels"``: the image alone; ``"rgbd"``: dict plus
    ``"depth"``: float32 (S, S, 1) in metres along the camera axis. ``S = image_size`` (64).
    At reset and every step ``info["camera_pose"]`` (4, 4: world from camera, OpenCV axes,
    x right, y down, looking along +z) and ``info["camera_intrinsics"]`` (fx, fy, cx, cy at S
    pixels) describe the fixed front camera, so depth unprojects into world points
    (``wm_envs.geometry``). State layout:

    | index | meaning |
    |-------|---------|
    | 0-2   | gripper (palm centre) position, m |
    | 3-5   | gripper velocity, m/s |
    | 6     | finger gap, m |
    | 7-9   | object position, m |
    | 10-13 | object orientation quaternion (w, x, y, z) |
    | 14-16 | object linear velocity, m/s |
    | 17-19 | object angular velocity (object frame), rad/s |
    | 20-22 | object position minus fingertip centre, m |
    | 23    | object half-height at rest, m |

    ## Rewards
    Dense, in [-1, 0]: ``0.25 reach + 0.25 grasped + 0.5 lift - 1`` (see
    ``wm_envs.tasks.grasp.shaped_reward``); zero once the object is at the goal height.

    ## Starting State
    Gripper at (0, 0, 0.2) with fingers open; the object resting on the table at a random
    position in a 12 x 12 cm square, random yaw. ``info["physics"]`` reports the draw.

    ## Episode End
    Terminated on success: the object raised at least 10 cm above its resting height for 5
    consecutive steps (``info["is_success"]``). Truncated after 100 steps (registration).

    ## Arguments
    ``obs_mode``, ``image_size``, ``render_mode`` ("rgb_array"), ``width``/``height`` of
    ``render()``, ``randomization`` (a ``GraspRandomization``: narrow ranges = a fixed world).
    """

    state_dim = grasp.STATE_DIM
    action_dim = 4
    expert_class = GraspExpert

    def __init__(
        self,
        obs_mode: str = "dict",
        image_size: int = 64,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
        randomization: GraspRandomization | None = None,
    ) -> None:
        super().__init__(obs_mode, image_size, render_mode, width, height)
        self.randomization = randomization or GraspRandomization()
        self.model = mujoco.MjModel.from_xml_path(str(grasp.MJCF))
        self.data = mujoco.MjData(self.model)
        self.frame_skip = round(grasp.CONTROL_DT / self.model.opt.timestep)
        self.renderer = MujocoRenderer(self.model, "front", hidden_groups=(_HIDDEN_GROUP,))
        name = mujoco.mj_name2id
        geom, body = mujoco.mjtObj.mjOBJ_GEOM, mujoco.mjtObj.mjOBJ_BODY
        self._shape_geoms = {s: name(self.model, geom, f"object_{s}") for s in grasp.SHAPES}
        self._finger_geoms = (
            name(self.model, geom, "finger_left"),
            name(self.model, geom, "finger_right"),
        )
        self._object_body = name(self.model, body, "object")
        self._object_geom = self._shape_geoms["box"]
        self._target = grasp.GRIPPER_START.copy()
        self._half_height = 0.0
        self._hold_steps = 0

    # -- physics --------------------------------------------------------------------------
    def _reset_physics(self, options: dict | None) -> dict:
        model, data = self.model, self.data
        world = grasp.draw_world(self.np_random, self.randomization)
        half = np.array(world.half_extents)
        for shape, geom_id in self._shape_geoms.items():
            active = shape == world.shape
            model.geom_contype[geom_id] = model.geom_conaffinity[geom_id] = int(active)
            model.geom_group[geom_id] = 0 if active else _HIDDEN_GROUP
        geom_id = self._object_geom = self._shape_geoms[world.shape]
        model.geom_size[geom_id] = {
            "box": half,
            "cylinder": [half[0], half[2], 0],
            "sphere": [half[0], 0, 0],
        }[world.shape]
        model.geom_rbound[geom_id] = np.linalg.norm(half) if world.shape != "sphere" else half[0]
        model.geom_aabb[geom_id] = np.concatenate([np.zeros(3), half])
        model.geom_friction[geom_id, 0] = world.friction
        model.body_mass[self._object_body] = world.mass
        model.body_inertia[self._object_body] = grasp.box_inertia(world.shape, half, world.mass)
        mujoco.mj_resetData(model, data)
        mujoco.mj_setConst(model, data)
        data.qpos[:3] = grasp.GRIPPER_START
        data.qpos[3:5] = grasp.FINGER_TRAVEL
        data.qpos[5:8] = world.position
        data.qpos[8:12] = grasp.yaw_quaternion(world.yaw)
        self._target = grasp.GRIPPER_START.copy()
        data.ctrl[:] = [*self._target, grasp.FINGER_TRAVEL]
        mujoco.mj_forward(model, data)
        self._half_height = world.half_extents[2]
        self._hold_steps = 0
        return world.as_info()

    def _apply_action(self, action: np.ndarray) -> None:
        target = self._target + grasp.MAX_DELTA * action[:3]
        self._target = np.minimum(np.maximum(target, grasp.WORKSPACE_LOW), grasp.WORKSPACE_HIGH)
        self.data.ctrl[:3] = self._target
        self.data.ctrl[3] = grasp.FINGER_TRAVEL * (1.0 - action[3]) / 2
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)

    def state_vector(self) -> np.ndarray:
        qpos, qvel = self.data.qpos, self.data.qvel
        return grasp.state_vector(
            qpos[:3],
            qvel[:3],
            qpos[3] + qpos[4],
            qpos[5:8],
            qpos[8:12],
            qvel[5:8],
            qvel[8:11],
            self._half_height,
        )

    def _evaluate(self) -> Evaluation:
        qpos, touches = self.data.qpos, self.data.sensordata  # touches: contacts per finger
        grasped = bool(touches[0] > 0 and touches[1] > 0)
        evaluation, self._hold_steps = grasp.evaluate(
            qpos[:3], qpos[5:8], self._half_height, grasped, self._hold_steps
        )
        return evaluation

    def _render(self, width: int, height: int, depth: bool = False) -> np.ndarray:
        return self.renderer(self.data, width, height, depth)

    def _camera(self) -> tuple[np.ndarray, float]:
        return self.renderer.pose(self.data), self.renderer.fovy

    def close(self) -> None:
        self.renderer.close()
