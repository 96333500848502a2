"""Phys-Grasp-v0 on PyBullet: the MuJoCo Grasp task, same numbers, another engine."""

from __future__ import annotations

import numpy as np
import pybullet

from wm_envs.tasks import grasp
from wm_envs.tasks.base import Evaluation
from wm_envs.tasks.experts import GraspExpert
from wm_envs.tasks.grasp import GraspRandomization
from wm_envs.tasks.pybullet_base import BulletCamera, PybulletTaskEnv, mjcf_rgba, reset_world

_SUBSTEPS = 20  # 2 ms internal steps, the MJCF's timestep
_SLIDES, _LEFT, _RIGHT = (0, 1, 2), 3, 4  # joint indices in grasp.urdf
# Actuator force limits of the MJCF (N), and PyBullet position-motor gains tuned so the gripper
# follows the same trajectory as MuJoCo's position actuators under the same actions.
_SLIDE_FORCE, _FINGER_FORCE = 60.0, 15.0
_SLIDE_GAIN, _FINGER_GAIN = 0.09, 0.1
# Sliding friction of the table and the fingers in the MJCF. MuJoCo uses the larger of two
# touching geoms' coefficients, PyBullet their product; the partners of the object get
# max(mine, object) / object so each pair ends up with MuJoCo's coefficient.
_TABLE_FRICTION, _FINGER_FRICTION = 1.0, 1.5


class GraspPybulletEnv(PybulletTaskEnv):
    """Pick up an object with a parallel-jaw gripper and hold it 10 cm above the table.

    ## Description
    ``Phys-Grasp-v0`` with ``backend="pybullet"``: the task of ``GraspMujocoEnv`` simulated
    by PyBullet, for measuring how far two physics engines (and a learned model) disagree.
    The gripper and table come from ``assets/grasp.urdf`` (the sizes of ``grasp.xml``): three
    Cartesian prismatic joints with force-limited position motors, two fingers coupled by a
    gear constraint and closed by one force-limited motor. The object is drawn by
    ``grasp.draw_world`` and built per episode with the same inertia; the camera is the MJCF's
    "front" camera, rendered by TinyRenderer.

    ## Action Space
    As ``GraspMujocoEnv``: ``Box(-1, 1, (4,), float32)``, gripper target displacement dx, dy,
    dz (1 = 2 cm per step) and the finger command (-1 open, +1 closed).

    ## Observation Space
    As ``GraspMujocoEnv``, with the same 24-dim state layout. The object angular velocity is
    in the object frame, as MuJoCo's free joint reports it. Depth comes from the depth buffer,
    in metres along the camera axis; ``info["camera_pose"]`` and ``info["camera_intrinsics"]``
    as ``GraspMujocoEnv`` (the same camera).

    ## Rewards
    As ``GraspMujocoEnv`` (``grasp.shaped_reward``); a finger touches the object when PyBullet
    reports a contact point between them.

    ## Starting State
    As ``GraspMujocoEnv``: the same seed draws the same object, size, mass, friction and pose.

    ## Episode End
    As ``GraspMujocoEnv``: success after 5 steps at 10 cm; truncated after 100 steps.

    ## Arguments
    As ``GraspMujocoEnv``: ``obs_mode``, ``image_size``, ``render_mode``, ``width``/``height``,
    ``randomization``.
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
        self.camera = BulletCamera.from_mjcf(grasp.MJCF, "front", near=0.02, far=3.0)
        self._colors = {s: mjcf_rgba(grasp.MJCF, f"object_{s}") for s in grasp.SHAPES}
        self.gripper = self.object = -1
        self._target = grasp.GRIPPER_START.copy()
        self._half_height = 0.0
        self._hold_steps = 0

    # -- physics --------------------------------------------------------------------------
    def _reset_physics(self, options: dict | None) -> dict:
        client = self.client
        world = grasp.draw_world(self.np_random, self.randomization)
        reset_world(client, grasp.CONTROL_DT, _SUBSTEPS)
        self.gripper = client.loadURDF(
            str(grasp.URDF), useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE
        )
        start = [*grasp.GRIPPER_START, grasp.FINGER_TRAVEL, grasp.FINGER_TRAVEL]
        for joint, position in enumerate(start):
            client.resetJointState(self.gripper, joint, position)
        gear = client.createConstraint(
            self.gripper,
            _LEFT,
            self.gripper,
            _RIGHT,
            pybullet.JOINT_GEAR,
            (0, 1, 0),
            (0, 0, 0),
            (0, 0, 0),
        )
        client.changeConstraint(gear, gearRatio=-1, maxForce=1000)  # right = left
        client.setJointMotorControl2(self.gripper, _RIGHT, pybullet.VELOCITY_CONTROL, force=0)
        self.object = self._build_object(world)
        friction = world.friction
        client.changeDynamics(
            self.gripper, -1, lateralFriction=max(_TABLE_FRICTION, friction) / friction
        )
        for finger in (_LEFT, _RIGHT):
            client.changeDynamics(
                self.gripper, finger, lateralFriction=max(_FINGER_FRICTION, friction) / friction
            )
        self._target = grasp.GRIPPER_START.copy()
        self._command(grasp.FINGER_TRAVEL)
        self._half_height = world.half_extents[2]
        self._hold_steps = 0
        return world.as_info()

    def _build_object(self, world: grasp.GraspWorld) -> int:
        """The object of this episode: shape, size, mass, inertia, friction and pose."""
        client, half, color = self.client, np.array(world.half_extents), self._colors[world.shape]
        if world.shape == "box":
            collision = client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half)
            visual = client.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=color)
        elif world.shape == "cylinder":
            radius, height = half[0], 2 * half[2]
            collision = client.createCollisionShape(
                pybullet.GEOM_CYLINDER, radius=radius, height=height
            )
            visual = client.createVisualShape(
                pybullet.GEOM_CYLINDER, radius=radius, length=height, rgbaColor=color
            )
        else:
            collision = client.createCollisionShape(pybullet.GEOM_SPHERE, radius=half[0])
            visual = client.createVisualShape(pybullet.GEOM_SPHERE, radius=half[0], rgbaColor=color)
        w, x, y, z = grasp.yaw_quaternion(world.yaw)
        body = client.createMultiBody(
            world.mass, collision, visual, world.position, baseOrientation=(x, y, z, w)
        )
        client.changeDynamics(
            body,
            -1,
            lateralFriction=world.friction,
            localInertiaDiagonal=grasp.box_inertia(world.shape, half, world.mass),
        )
        return body

    def _command(self, finger_target: float) -> None:
        """Send the gripper target ``self._target`` and the finger target to the motors."""
        self.client.setJointMotorControlArray(
            self.gripper,
            _SLIDES,
            pybullet.POSITION_CONTROL,
            targetPositions=self._target,
            forces=[_SLIDE_FORCE] * 3,
            positionGains=[_SLIDE_GAIN] * 3,
        )
        self.client.setJointMotorControl2(
            self.gripper,
            _LEFT,
            pybullet.POSITION_CONTROL,
            targetPosition=finger_target,
            force=_FINGER_FORCE,
            positionGain=_FINGER_GAIN,
        )

    def _apply_action(self, action: np.ndarray) -> None:
        target = self._target + grasp.MAX_DELTA * action[:3]
        self._target = np.minimum(np.maximum(target, grasp.WORKSPACE_LOW), grasp.WORKSPACE_HIGH)
        self._command(grasp.FINGER_TRAVEL * (1.0 - action[3]) / 2)
        self.client.stepSimulation()

    def state_vector(self) -> np.ndarray:
        client = self.client
        joints = client.getJointStates(self.gripper, range(5))
        position = np.array([joint[0] for joint in joints])
        velocity = np.array([joint[1] for joint in joints])
        obj, (x, y, z, w) = client.getBasePositionAndOrientation(self.object)
        linear, angular = client.getBaseVelocity(self.object)
        rotation = np.array(client.getMatrixFromQuaternion((x, y, z, w))).reshape(3, 3)
        return grasp.state_vector(
            position[:3],
            velocity[:3],
            position[_LEFT] + position[_RIGHT],
            np.array(obj),
            np.array([w, x, y, z]),
            np.array(linear),
            rotation.T @ angular,  # world to object frame
            self._half_height,
        )

    def _evaluate(self) -> Evaluation:
        client = self.client
        gripper = np.array([joint[0] for joint in client.getJointStates(self.gripper, _SLIDES)])
        obj = np.array(client.getBasePositionAndOrientation(self.object)[0])
        grasped = all(
            client.getContactPoints(self.gripper, self.object, finger) for finger in (_LEFT, _RIGHT)
        )
        evaluation, self._hold_steps = grasp.evaluate(
            gripper, obj, self._half_height, grasped, self._hold_steps
        )
        return evaluation
