"""Scripted experts: privileged controllers that solve each task, used to make datasets.

``make_expert(env)`` is the one entry point; call ``expert.reset()`` at each episode start and
``action = expert(obs)`` each step. Experts read the simulator's privileged state through
``env.unwrapped.state_vector()``, so they work in every ``obs_mode``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from wm_envs.tasks import collapse, drive, grasp


class ScriptedExpert:
    """Base class: Gaussian action noise and clipping around a task's ``plan``."""

    def __init__(self, env: gym.Env, noise: float = 0.0, seed: int | None = None) -> None:
        self.env = env.unwrapped
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Forget the previous episode."""

    def plan(self, state: np.ndarray) -> np.ndarray:
        """The noiseless action for the current privileged state."""
        raise NotImplementedError

    def __call__(self, obs: Any) -> np.ndarray:
        action = self.plan(self.env.state_vector())
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class GraspExpert(ScriptedExpert):
    """Hover above the object, descend, close, lift; start over if the object slips out."""

    def reset(self) -> None:
        self.phase = "approach"
        self.closed_steps = 0

    def plan(self, state: np.ndarray) -> np.ndarray:
        gripper, gap, obj, half_height = state[0:3], state[6], state[7:10], state[23]
        grasp_z = max(obj[2] + grasp.FINGERTIP_OFFSET, grasp.WORKSPACE_LOW[2])
        hover_z = grasp_z + 0.08
        xy_error = np.linalg.norm(obj[:2] - gripper[:2])
        if self.phase == "lift" and obj[2] - half_height < 0.01 and gripper[2] > grasp_z + 0.04:
            self.phase, self.closed_steps = "approach", 0  # dropped it: try again
        if self.phase == "approach":
            target, close = np.array([*obj[:2], hover_z]), -1.0
            if xy_error < 0.008 and abs(gripper[2] - hover_z) < 0.02:
                self.phase = "descend"
        if self.phase == "descend":
            target, close = np.array([*obj[:2], grasp_z]), -1.0
            if abs(gripper[2] - grasp_z) < 0.006:
                self.phase = "close"
        if self.phase == "close":
            target, close = np.array([*gripper[:2], grasp_z]), 1.0
            self.closed_steps += 1
            if self.closed_steps >= 5 and gap < 2 * half_height + 0.1:
                self.phase = "lift"
        if self.phase == "lift":
            target, close = np.array([*gripper[:2], grasp_z + 0.17]), 1.0
        move = np.clip((target - gripper) / grasp.MAX_DELTA, -1.0, 1.0)
        return np.array([*move, close])


class CollapseExpert(ScriptedExpert):
    """Knock out the load-bearing pillars, lowest and nearest first; then sweep the pile.

    For each target: line the ram up with it clear of the debris, close in to leave the head a
    run-up, then strike -- a pillar for two steps, or, once no pillar bears load, the block on
    top of the pile while driving through it -- and retract.
    """

    STRIKE_STEPS, SWEEP_STEPS, RETRACT_STEPS = 2, 10, 3
    RUN_UP = 0.05  # gap between the retracted head and the target, m

    def reset(self) -> None:
        self.phase, self.phase_steps, self.sweep_to = "aim", 0, None

    def plan(self, state: np.ndarray) -> np.ndarray:
        ram = state[0:3]
        if self.phase == "strike":
            self.phase_steps += 1
            sweeping = self.sweep_to is not None
            limit = self.SWEEP_STEPS if sweeping else self.STRIKE_STEPS
            if self.phase_steps <= limit and not (sweeping and ram[0] >= self.sweep_to):
                return np.array([float(sweeping), 0.0, 0.0, 1.0])
            self.phase, self.phase_steps = "retract", 0
        if self.phase == "retract":
            self.phase_steps += 1
            if self.phase_steps <= self.RETRACT_STEPS:
                return np.array([-1.0, 0.0, 0.0, -1.0])
            self.phase = "aim"
        positions, quats, used = collapse.state_blocks(state)
        used &= collapse.on_site(positions)  # the ram cannot reach past the kerb
        if not used.any():
            return np.array([0.0, 0.0, 0.0, -1.0])
        half = np.where(collapse.IS_PILLAR[:, None], state[11:14], state[14:17])
        rotations = collapse.rotation_matrices(quats)
        extents = collapse.block_extents(rotations, half, np.arange(collapse.MAX_BLOCKS))
        target, height, sweep = self._pick_target(positions, extents, used, quats, state[13])
        near, far = (
            positions[target, 0] - extents[target, 0],
            positions[target, 0] + extents[target, 0],
        )
        aim = np.array([near - collapse.HEAD_REACH - self.RUN_UP, positions[target, 1], height])
        aim = np.clip(aim, collapse.RAM_LOW, collapse.RAM_HIGH)
        if np.abs(aim[1:] - ram[1:]).max() > 0.01:  # line up first, clear of the debris
            clear = (positions - extents)[used, 0].min() - collapse.HEAD_REACH - 0.03
            aim[0] = min(aim[0], max(clear, collapse.RAM_LOW[0]))
        elif abs(aim[0] - ram[0]) < 0.008:
            self.phase, self.phase_steps = "strike", 0
            self.sweep_to = far - collapse.HEAD_REACH if sweep else None
        move = np.clip((aim - ram) / collapse.MAX_DELTA, -1.0, 1.0)
        return np.array([*move, -1.0])

    @staticmethod
    def _pick_target(positions, extents, used, quats, pillar_half_height):
        """Slot to hit, height to hit it at, and whether to sweep through it.

        A pillar bears load when it stands upright with a block resting on its top: the
        lowest of them, nearest first, is struck low to kick its foot out. Without any, the
        block on top of the pile is swept through its centre.
        """
        tops, bottoms = positions[:, 2] + extents[:, 2], positions[:, 2] - extents[:, 2]
        upright = 1 - 2 * (quats[:, 1] ** 2 + quats[:, 2] ** 2) > 0.9  # body z vs vertical
        gap = np.abs(positions[None, :, :2] - positions[:, None, :2])  # [i, j, xy]
        overlap = (gap < extents[None, :, :2] + extents[:, None, :2]).all(axis=2)
        resting = overlap & (np.abs(bottoms[None, :] - tops[:, None]) < 0.01) & used[None, :]
        bearing = np.flatnonzero(collapse.IS_PILLAR & used & upright & resting.any(axis=1))
        if bearing.size:
            heights = positions[bearing, 2]
            low = bearing[heights < heights.min() + pillar_half_height]
            target = int(low[np.argmin(positions[low, 0])])
            return target, positions[target, 2] - 0.5 * pillar_half_height, False
        target = int(np.argmax(np.where(used, tops, -np.inf)))
        return target, positions[target, 2], True


class DriveExpert(ScriptedExpert):
    """Pure pursuit of the centre line, shifted to pass the next obstacle on the side that
    fits, at a speed set by the curvature ahead and the nearness of that obstacle."""

    CLEARANCE = 0.4  # centre of the car to the obstacle's side when passing, m
    EDGE_MARGIN = 0.2  # keep the rear axle this far inside the road edge, m
    ENGAGE, RAMP = 2.5, 1.5  # pass an obstacle fully from this far ahead, fade in before, m
    CRUISE_SPEED, OBSTACLE_SPEED, LATERAL_ACCELERATION = 2.6, 1.8, 2.5  # m/s, m/s^2

    def plan(self, state: np.ndarray) -> np.ndarray:
        speed, offset, heading_error, half_width = state[4], state[8], state[9], state[11]
        # the centre line from the car's closest point on, in the car frame: [1 + N, 2]
        foot = -offset * np.array([np.sin(heading_error), np.cos(heading_error)])
        path = np.vstack([foot, state[12 : 12 + 2 * drive.N_WAYPOINTS].reshape(-1, 2)])
        obstacles = state[12 + 2 * drive.N_WAYPOINTS :].reshape(drive.N_OBSTACLES, 4)
        passes = [self._pass(obstacle, half_width, offset) for obstacle in obstacles if obstacle[2]]
        lookahead = float(np.clip(0.6 + 0.45 * speed, 0.9, 2.2))
        target = self._shifted_point(path, lookahead, passes)
        alpha = np.arctan2(target[1], target[0])
        steer = np.arctan2(2 * drive.WHEELBASE * np.sin(alpha), np.linalg.norm(target))
        headings = np.unwrap(np.arctan2(*np.diff(path, axis=0).T[::-1]))
        curvature = np.abs(np.diff(headings[:4])).max() / drive.WAYPOINT_SPACING
        target_speed = min(
            self.CRUISE_SPEED, np.sqrt(self.LATERAL_ACCELERATION / max(curvature, 1e-3))
        )
        if any(0 < distance < 3.0 for distance, _ in passes):
            target_speed = min(target_speed, self.OBSTACLE_SPEED)
        throttle = np.clip(0.2 + 1.0 * (target_speed - speed), 0.0, 1.0)
        brake = 1.0 * (speed - target_speed - 0.3)
        return np.array([steer / drive.MAX_STEER, throttle, brake if brake > 0 else -1.0])

    def _pass(self, obstacle: np.ndarray, half_width: float, offset: float) -> tuple:
        """How far ahead an obstacle is, and the lateral offset on the road to pass it at."""
        x, _, half_size, lateral = obstacle
        limit = half_width - self.EDGE_MARGIN
        sides = [lateral + side * (half_size + self.CLEARANCE) for side in (1.0, -1.0)]
        # the side that fits on the road, then the one nearer the car: once chosen, it stays
        best = min(sides, key=lambda y: 10 * max(abs(y) - limit, 0.0) + abs(y - offset))
        return float(x), float(np.clip(best, -limit, limit))

    def _shifted_point(self, path: np.ndarray, arc: float, passes: list) -> np.ndarray:
        """The point ``arc`` metres along ``path``, moved sideways to pass the next obstacle
        once it is within ``ENGAGE`` (fading in over ``RAMP`` before that)."""
        i = min(int(arc / drive.WAYPOINT_SPACING), len(path) - 2)
        t = arc / drive.WAYPOINT_SPACING - i
        step = path[i + 1] - path[i]
        normal = np.array([-step[1], step[0]]) / np.linalg.norm(step)
        shift, weight = 0.0, 0.0
        for distance, lateral in passes:  # nearest first
            w = float(np.clip((self.ENGAGE + self.RAMP - distance) / self.RAMP, 0.0, 1.0))
            if w > weight:
                shift, weight = lateral * w, w
        return path[i] + t * step + shift * normal


def make_expert(env: gym.Env, noise: float = 0.0, seed: int | None = None) -> ScriptedExpert:
    """The scripted expert of ``env``'s task, with optional Gaussian action noise."""
    expert_class = getattr(env.unwrapped, "expert_class", None)
    if expert_class is None:
        raise ValueError(f"{env.unwrapped.__class__.__name__} has no scripted expert")
    return expert_class(env, noise=noise, seed=seed)
