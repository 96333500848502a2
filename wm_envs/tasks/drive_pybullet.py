"""Phys-Drive-v0 on PyBullet: the racecar of pybullet_data on a randomized track."""

from __future__ import annotations

import math

import numpy as np
import pybullet
import pybullet_data
import torch

from wm_envs.tasks import drive
from wm_envs.tasks.base import Evaluation
from wm_envs.tasks.drive import DriveRandomization, Track
from wm_envs.tasks.experts import DriveExpert
from wm_envs.tasks.pybullet_base import BulletCamera, PybulletTaskEnv, reset_world

_SUBSTEPS = 10
# Per wheel, N m: rear-wheel drive, four-wheel brakes, rolling resistance of the front wheels.
DRIVE_TORQUE, BRAKE_TORQUE, ROLLING_TORQUE = 1.0, 0.6, 0.02
_REAR_WHEELS, _FRONT_WHEELS, _STEERING = (2, 3), (5, 7), (4, 6)
_HIDDEN_LINKS = (4, 6, 8)  # steering hinges and laser: under the chassis, a third of the mesh
_GRASS, _ROAD, _EDGE = (0.35, 0.6, 0.3, 1), (0.3, 0.3, 0.33, 1), (0.95, 0.95, 0.95, 1)
_FINISH, _OBSTACLE = (0.95, 0.8, 0.1, 1), (0.9, 0.3, 0.1, 1)
_EDGE_WIDTH, _FINISH_WIDTH = 0.12, 0.3
_SUN = np.array([3.0, -2.0, 10.0])  # where the light comes from


def _strip(track: Track, left: float, right: float, begin: float, end: float) -> tuple[list, list]:
    """Vertices and triangles of a flat band between lateral offsets ``right < left``."""
    arc = np.arange(begin, end + 1e-9, drive.SAMPLE_SPACING)
    centre, normal = track.point_at(arc), track.normal_at(arc)
    n = len(arc)
    vertices = np.concatenate([centre + left * normal, centre + right * normal])
    vertices = np.column_stack([vertices, np.zeros(2 * n)])
    i = np.arange(n - 1)
    # counter-clockwise seen from above, or TinyRenderer culls the face
    triangles = np.stack([i, n + i, i + 1, i + 1, n + i, n + i + 1], -1)
    return vertices.tolist(), triangles.ravel().tolist()


class DrivePybulletEnv(PybulletTaskEnv):
    """Drive a racecar along a randomized track to the finish line without leaving it or
    hitting an obstacle.

    ## Description
    The MIT racecar of ``pybullet_data`` (``racecar/racecar.urdf``) on flat ground. Each
    episode draws a track: a 24-32 m centre line of random, smoothly varying curvature (radius
    2.5 m and up, never turning more than 69 degrees from the start direction), a dark road
    1.4-1.8 m wide with white edge lines, a yellow finish line, and 2-4 orange box obstacles
    on the road, each leaving room to pass on at least one side. A chase camera 1.3 m behind
    and 2 m above the car looks down at the road ahead, about 7 m of it, with no sky: at 64x64
    the car spans 7 x 13 px and an obstacle 7-11 px when within 4 m.

    ## Action Space
    ``Box(-1, 1, (3,), float32)``: steering (+1 = 0.5 rad left), throttle (rear-wheel drive
    torque, negative reverses; the wheels' speed is limited to 3 m/s), brake (values above 0
    brake all four wheels, overriding the throttle). Out-of-range values are clipped; a wrong
    shape or a NaN/inf raises ``ValueError``.

    ## Observation Space
    ``obs_mode="dict"`` (default): ``{"image": uint8 (S, S, 3), "state": float32 (34,)}``;
    ``"state"``, ``"pixels"``, ``"rgbd"`` as for every Phys-* env (depth in metres along the
    camera axis). At reset and every step ``info["camera_pose"]`` (4, 4: world from camera,
    OpenCV axes) and ``info["camera_intrinsics"]`` (fx, fy, cx, cy) describe the chase camera,
    which follows the car's position and yaw (``drive.camera_poses``). Positions are of the rear
    axle centre; "car frame" is x forward, y left, from there. State layout:

    | index | meaning |
    |-------|---------|
    | 0-1   | car position x, y (world), m |
    | 2-3   | cos, sin of the car yaw |
    | 4-5   | car velocity in the car frame (forward, left), m/s |
    | 6     | yaw rate, rad/s |
    | 7     | steering angle, rad |
    | 8     | lateral offset from the centre line (+ left), m |
    | 9     | heading error: car yaw minus centre-line heading, rad |
    | 10    | progress: arc length of the car along the centre line over the track length |
    | 11    | road half width, m |
    | 12-21 | 5 centre-line points 1, 2, ..., 5 m ahead of the car, (x, y) in the car frame |
    | 22-33 | the next 3 obstacles not yet passed: x, y in the car frame, half size, and |
    |       | lateral offset from the centre line (+ left), m; an empty slot is all zeros |

    ## Rewards
    Progress along the centre line this step (metres), minus ``0.05 (offset / half width)^2``,
    minus 10 on failure. An expert run earns about the track length.

    ## Starting State
    The car at rest on the start line, up to 0.1 m off-centre and 0.1 rad off the road
    direction. ``info["physics"]`` reports the track (length, half width, centre line), the
    obstacles (x, y, half size), the ground friction and the start pose.

    ## Episode End
    Terminated with success when the car crosses the finish line (``info["is_success"]``);
    terminated with failure when the rear axle centre leaves the road, the car touches an
    obstacle, or it tips over. Truncated after 300 steps (30 s, registration).

    ## Arguments
    ``obs_mode``, ``image_size``, ``render_mode`` ("rgb_array"), ``width``/``height`` of
    ``render()``, ``randomization`` (a ``DriveRandomization``: narrow ranges = a fixed track).
    """

    state_dim = drive.STATE_DIM
    action_dim = 3
    expert_class = DriveExpert

    def __init__(
        self,
        obs_mode: str = "dict",
        image_size: int = 64,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
        randomization: DriveRandomization | None = None,
    ) -> None:
        super().__init__(obs_mode, image_size, render_mode, width, height)
        self.randomization = randomization or DriveRandomization()
        self.camera = BulletCamera(drive.CAMERA_FOVY, near=0.05, far=40.0, light=_SUN)
        self.track: Track | None = None
        self.car = -1
        self._obstacle_ids: set[int] = set()
        self._progress = 0.0

    # -- physics --------------------------------------------------------------------------
    def _reset_physics(self, options: dict | None) -> dict:
        client, ranges = self.client, self.randomization
        track = self.track = drive.draw_track(self.np_random, ranges)
        friction = self.np_random.uniform(*ranges.friction)
        offset = self.np_random.uniform(*ranges.start_offset)
        yaw = self.np_random.uniform(*ranges.start_yaw)
        reset_world(client, drive.CONTROL_DT, _SUBSTEPS)
        self._build_scene(track, friction)
        self.car = client.loadURDF(
            pybullet_data.getDataPath() + "/racecar/racecar.urdf",
            (0.0, offset, 0.0),
            client.getQuaternionFromEuler((0.0, 0.0, yaw)),
        )
        for link in _HIDDEN_LINKS:
            client.changeVisualShape(self.car, link, rgbaColor=(0, 0, 0, 0))
        for wheel in _REAR_WHEELS + _FRONT_WHEELS:
            client.changeDynamics(self.car, wheel, lateralFriction=1.0)  # pair = ground's
        self._drive(np.zeros(3))
        self._progress = track.project(np.array([0.0, offset]))[0]
        return {
            "length": track.length,
            "half_width": track.half_width,
            "centre_line": track.points,
            "obstacles": track.obstacles[:, :3],
            "friction": float(friction),
            "start_offset": float(offset),
            "start_yaw": float(yaw),
        }

    def _build_scene(self, track: Track, friction: float) -> None:
        """Ground, road, edge lines, finish line and obstacles as static bodies."""
        client = self.client
        low, high = track.points.min(0) - 10.0, track.points.max(0) + 10.0
        grass = client.createVisualShape(
            pybullet.GEOM_BOX, halfExtents=[*(high - low) / 2, 0.01], rgbaColor=_GRASS
        )
        ground = client.createMultiBody(
            0, client.createCollisionShape(pybullet.GEOM_PLANE), grass, [*(high + low) / 2, -0.01]
        )
        client.changeDynamics(ground, -1, lateralFriction=friction)
        w, end = track.half_width, track.arc[-1]
        bands = [
            (w, -w, -drive.LEAD_IN, end, _ROAD, 0.002),
            (w + _EDGE_WIDTH, w, -drive.LEAD_IN, end, _EDGE, 0.004),
            (-w, -w - _EDGE_WIDTH, -drive.LEAD_IN, end, _EDGE, 0.004),
            (w, -w, track.length, track.length + _FINISH_WIDTH, _FINISH, 0.006),
        ]
        for left, right, begin, stop, color, height in bands:
            vertices, triangles = _strip(track, left, right, begin, stop)
            visual = client.createVisualShape(
                pybullet.GEOM_MESH, vertices=vertices, indices=triangles, rgbaColor=color
            )
            client.createMultiBody(0, -1, visual, (0.0, 0.0, height))
        self._obstacle_ids = set()
        for x, y, half, s, _ in track.obstacles:
            heading = float(np.interp(s, track.arc, track.headings))
            extents = [half, half, half]
            body = client.createMultiBody(
                0,
                client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=extents),
                client.createVisualShape(
                    pybullet.GEOM_BOX, halfExtents=extents, rgbaColor=_OBSTACLE
                ),
                (x, y, half),
                client.getQuaternionFromEuler((0.0, 0.0, heading)),
            )
            self._obstacle_ids.add(body)

    def _drive(self, action: np.ndarray) -> None:
        """Steering, throttle and brake to the joint motors."""
        client, car = self.client, self.car
        steer, throttle, brake = float(action[0]), float(action[1]), max(float(action[2]), 0.0)
        client.setJointMotorControlArray(
            car, _STEERING, pybullet.POSITION_CONTROL, targetPositions=[steer * drive.MAX_STEER] * 2
        )
        if brake > 0:
            speeds, torques = [0.0] * 4, [brake * BRAKE_TORQUE] * 4
        else:
            speed = math.copysign(drive.MAX_WHEEL_SPEED, throttle)
            rear = abs(throttle) * DRIVE_TORQUE
            speeds, torques = [speed, speed, 0.0, 0.0], [rear, rear, ROLLING_TORQUE, ROLLING_TORQUE]
        client.setJointMotorControlArray(
            car,
            _REAR_WHEELS + _FRONT_WHEELS,
            pybullet.VELOCITY_CONTROL,
            targetVelocities=speeds,
            forces=torques,
        )

    def _apply_action(self, action: np.ndarray) -> None:
        self._drive(action)
        self.client.stepSimulation()

    def _pose(self) -> tuple[np.ndarray, float, tuple]:
        """Rear axle centre (x, y), yaw, and the base orientation quaternion."""
        position, orientation = self.client.getBasePositionAndOrientation(self.car)
        yaw = self.client.getEulerFromQuaternion(orientation)[2]
        return np.array(position[:2]), yaw, orientation

    def _place_camera(self) -> None:
        xy, yaw, _ = self._pose()
        forward = torch.tensor([math.cos(yaw), math.sin(yaw)], dtype=torch.float64)
        eye, target = drive.chase_camera(torch.from_numpy(xy), forward)
        self.camera.look_at(eye.numpy(), target.numpy(), np.array([0.0, 0.0, 1.0]))

    def state_vector(self) -> np.ndarray:
        client, track = self.client, self.track
        xy, yaw, _ = self._pose()
        cos, sin = math.cos(yaw), math.sin(yaw)
        to_car = np.array([[cos, sin], [-sin, cos]])  # world to car frame
        linear, angular = client.getBaseVelocity(self.car)
        steering = client.getJointState(self.car, _STEERING[0])[0]
        s, offset, heading = track.project(xy)
        ahead = track.point_at(s + drive.WAYPOINT_SPACING * np.arange(1, drive.N_WAYPOINTS + 1))
        obstacles = np.zeros((drive.N_OBSTACLES, 4))
        upcoming = track.obstacles[track.obstacles[:, 3] > s - 0.5][: drive.N_OBSTACLES]
        obstacles[: len(upcoming), :2] = (upcoming[:, :2] - xy) @ to_car.T
        obstacles[: len(upcoming), 2] = upcoming[:, 2]  # half size
        obstacles[: len(upcoming), 3] = upcoming[:, 4]  # lateral offset on the road
        return np.concatenate(
            [
                xy,
                (cos, sin),
                to_car @ np.array(linear[:2]),
                (angular[2], steering, offset, drive.wrap(yaw - heading)),
                (s / track.length, track.half_width),
                ((ahead - xy) @ to_car.T).ravel(),
                obstacles.ravel(),
            ]
        ).astype(np.float32)

    def _evaluate(self) -> Evaluation:
        client, track = self.client, self.track
        xy, _, orientation = self._pose()
        s, offset, _ = track.project(xy)
        progress, self._progress = s - self._progress, s
        crashed = any(
            contact[2] in self._obstacle_ids for contact in client.getContactPoints(self.car)
        )
        up = client.getMatrixFromQuaternion(orientation)[8]  # z of the car's up axis
        off_track = abs(offset) > track.half_width
        failure = crashed or off_track or up < 0.5
        success = s >= track.length and not failure
        reward = drive.reward(progress, offset, track.half_width, failure)
        info = {"progress": s / track.length, "crashed": crashed, "off_track": off_track}
        return Evaluation(float(reward), success, failure, info)
