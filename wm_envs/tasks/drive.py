"""Drive: what the task is -- the track, the car's limits, the state layout, the reward --
apart from the engine that simulates it (``drive_pybullet.py``) and the expert that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from wm_envs.geometry import look_at

CONTROL_DT = 0.1
#: Centre-line resolution; the straight lead-in drawn behind the start line, the straight
#: first stretch after it, and the straight run-out past the finish line; metres.
SAMPLE_SPACING = 0.25
LEAD_IN, START_STRAIGHT, RUN_OUT = 3.0, 3.0, 8.0
#: Car: base frame at the rear axle centre; wheelbase of racecar.urdf, metres.
WHEELBASE = 0.325
MAX_STEER = 0.5  # rad
MAX_WHEEL_SPEED = 60.0  # rad/s, 3 m/s with the 5 cm wheels
#: What the state shows: centre-line points ahead and the next obstacles.
N_WAYPOINTS, WAYPOINT_SPACING = 5, 1.0
N_OBSTACLES = 3
STATE_DIM = 12 + 2 * N_WAYPOINTS + 4 * N_OBSTACLES
LATERAL_PENALTY, FAILURE_PENALTY = 0.05, 10.0
#: Chase camera relative to the car: behind, above, and the ground point it looks at, m;
#: vertical field of view, degrees. It follows the car's position and yaw, not its tilt.
CAMERA_BACK, CAMERA_HEIGHT, CAMERA_AHEAD, CAMERA_FOVY = 1.3, 2.0, 1.5, 45.0
#: The car's footprint in its frame for ``state_outcome``'s obstacle test: rear and front
#: edge (x, from the rear axle) and half width, m. Fitted to physics' contact-based ends.
FOOTPRINT_BACK, FOOTPRINT_FRONT, FOOTPRINT_HALF_WIDTH = -0.10, 0.42, 0.13


@dataclass(frozen=True)
class DriveRandomization:
    """Ranges the track is drawn from at reset. Narrow ranges give a fixed track."""

    length: tuple[float, float] = (24.0, 32.0)  # start to finish line, metres
    half_width: tuple[float, float] = (0.7, 0.9)
    curvature: tuple[float, float] = (-0.4, 0.4)  # 1/m, drawn every `curvature_spacing`
    curvature_spacing: float = 3.0
    max_heading: float = 1.2  # rad from the start direction: the track never folds back
    obstacles: tuple[int, int] = (2, 4)  # inclusive
    obstacle_half_size: tuple[float, float] = (0.15, 0.22)
    obstacle_offset: tuple[float, float] = (-0.5, 0.5)  # fraction of the half width
    friction: tuple[float, float] = (0.8, 1.2)
    start_offset: tuple[float, float] = (-0.1, 0.1)  # metres
    start_yaw: tuple[float, float] = (-0.1, 0.1)  # rad


@dataclass(frozen=True)
class Track:
    """A centre line sampled every ``SAMPLE_SPACING`` metres, and what stands on it."""

    arc: np.ndarray  # [N] arc length of each sample: 0 at the start line, negative before it
    points: np.ndarray  # [N, 2] centre line, from the lead-in through the run-out
    headings: np.ndarray  # [N] direction of the centre line, rad
    length: float  # arc length of the finish line
    half_width: float
    obstacles: np.ndarray  # [K, 5] x, y, half size, arc length, lateral offset

    def point_at(self, s: np.ndarray) -> np.ndarray:
        """Centre-line points at arc lengths ``s`` (clamped to the drawn line), ``[..., 2]``."""
        x = np.interp(s, self.arc, self.points[:, 0])
        return np.stack([x, np.interp(s, self.arc, self.points[:, 1])], -1)

    def normal_at(self, s: np.ndarray) -> np.ndarray:
        """Unit vectors pointing left of the centre line at arc lengths ``s``, ``[..., 2]``."""
        heading = np.interp(s, self.arc, self.headings)
        return np.stack([-np.sin(heading), np.cos(heading)], -1)

    def project(self, xy: np.ndarray) -> tuple[float, float, float]:
        """Arc length, signed lateral offset (+ left) and heading of the closest centre point."""
        start, step = self.points[:-1], np.diff(self.points, axis=0)  # [N-1, 2]
        t = np.clip(((xy - start) * step).sum(1) / SAMPLE_SPACING**2, 0.0, 1.0)
        closest = start + t[:, None] * step
        i = int(np.argmin(((xy - closest) ** 2).sum(1)))
        rel = xy - start[i]
        offset = (step[i, 0] * rel[1] - step[i, 1] * rel[0]) / SAMPLE_SPACING
        return float(self.arc[i] + t[i] * SAMPLE_SPACING), float(offset), float(self.headings[i])


def draw_track(rng: np.random.Generator, ranges: DriveRandomization) -> Track:
    """A smooth centre line of random curvature, and obstacles spread along it."""
    length = rng.uniform(*ranges.length)
    arc = np.arange(-LEAD_IN, length + RUN_OUT + SAMPLE_SPACING / 2, SAMPLE_SPACING)
    knots = np.arange(0.0, arc[-1] + ranges.curvature_spacing, ranges.curvature_spacing)
    curvature = np.interp(arc, knots, rng.uniform(*ranges.curvature, size=len(knots)))
    curvature[(arc < START_STRAIGHT) | (arc > length)] = 0.0
    headings = np.concatenate([[0.0], np.cumsum(curvature[:-1] * SAMPLE_SPACING)])
    headings = np.clip(headings, -ranges.max_heading, ranges.max_heading)
    middle = headings[:-1] + np.diff(headings) / 2
    steps = SAMPLE_SPACING * np.stack([np.cos(middle), np.sin(middle)], -1)
    points = np.concatenate([[[-LEAD_IN, 0.0]], [-LEAD_IN, 0.0] + np.cumsum(steps, axis=0)])
    half_width = float(rng.uniform(*ranges.half_width))
    track = Track(arc, points, headings, float(length), half_width, np.zeros((0, 5)))
    count = int(rng.integers(ranges.obstacles[0], ranges.obstacles[1] + 1))
    # one obstacle in the middle third of each of `count` equal stretches after the start
    bins = np.linspace(START_STRAIGHT + 2.0, length - 2.0, count + 1)
    arcs = bins[:-1] + np.diff(bins) * rng.uniform(1 / 3, 2 / 3, size=count)
    offsets = half_width * rng.uniform(*ranges.obstacle_offset, size=count)
    sizes = rng.uniform(*ranges.obstacle_half_size, size=count)
    xy = track.point_at(arcs) + offsets[:, None] * track.normal_at(arcs)
    obstacles = np.column_stack([xy, sizes, arcs, offsets])
    return replace(track, obstacles=obstacles)


def reward(progress: float, offset: float, half_width: float, failure: bool) -> float:
    """Metres gained along the centre line, minus ``0.05 (offset / half width)^2`` for
    driving off-centre, minus 10 on failure (off the road, crashed, tipped over)."""
    return progress - LATERAL_PENALTY * (offset / half_width) ** 2 - FAILURE_PENALTY * failure


def wrap(angle: float) -> float:
    """An angle in [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def tracked_errors(predicted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """What ``compare`` tracks, from predicted and true state vectors [T, 34] -> errors [T]:
    the car's position (cm) and heading (degrees, from its cos/sin)."""
    heading = lambda states: np.arctan2(states[:, 3], states[:, 2])  # noqa: E731
    return {
        "position_cm": 100.0 * np.linalg.norm(predicted[:, :2] - true[:, :2], axis=1),
        "heading_deg": np.degrees(np.abs(wrap(heading(predicted) - heading(true)))),
    }


def obstacle_touched(states: torch.Tensor) -> torch.Tensor:
    """Whether the car's footprint overlaps one of the obstacles its state vectors [B, 34]
    show -> [B]. A separating-axis test of two rectangles in the car frame: the footprint,
    and each obstacle's square (centre, half size: state 22-33), turned by the centre-line
    heading minus the car's yaw (state 9; obstacles stand square to the road)."""
    obstacles = states[:, 12 + 2 * N_WAYPOINTS :].reshape(-1, N_OBSTACLES, 4)  # [B, K, 4]
    x, y, half = obstacles[..., :3].unbind(-1)  # [B, K] each
    turn = -states[:, 9:10]  # [B, 1]
    cos, sin = torch.cos(turn), torch.sin(turn)
    along, across = cos.abs(), sin.abs()
    length, width = (FOOTPRINT_FRONT - FOOTPRINT_BACK) / 2, FOOTPRINT_HALF_WIDTH
    dx, dy = x - (FOOTPRINT_FRONT + FOOTPRINT_BACK) / 2, y
    separated = (  # on the car's two axes, then on the obstacle's
        (dx.abs() >= length + half * (along + across))
        | (dy.abs() >= width + half * (along + across))
        | ((dx * cos + dy * sin).abs() >= half + length * along + width * across)
        | ((dy * cos - dx * sin).abs() >= half + length * across + width * along)
    )
    return ((half > 0) & ~separated).any(-1)  # an empty slot has half size 0


def state_outcome(
    states: torch.Tensor, held: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The physics env's end rule on state vectors [B, 34] (torch): success where the car
    has crossed the finish line (progress, state 10, at least 1) without failing; terminated
    there and on failure: the rear axle off the road (lateral offset, state 8, beyond the
    half width, state 11) or the footprint touching an obstacle (``obstacle_touched``, in
    place of physics' contact points), each [B]; ``held`` [B] passes through (no hold)."""
    failure = (states[:, 8].abs() > states[:, 11]) | obstacle_touched(states)
    success = (states[:, 10] >= 1) & ~failure
    return success, success | failure, held


def chase_camera(xy: torch.Tensor, forward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eye and target [..., 3] of the chase camera of a car at ``xy`` [..., 2] heading
    along the unit vector ``forward`` [..., 2]."""
    ground = torch.zeros_like(xy[..., :1])
    eye = torch.cat([xy - CAMERA_BACK * forward, ground + CAMERA_HEIGHT], -1)
    target = torch.cat([xy + CAMERA_AHEAD * forward, ground], -1)
    return eye, target


def camera_poses(states: torch.Tensor) -> torch.Tensor:
    """World-from-camera poses [..., 4, 4] of the chase camera for state vectors [..., S]
    (the car's x, y and the cos, sin of its yaw)."""
    forward = torch.nn.functional.normalize(states[..., 2:4], dim=-1)
    eye, target = chase_camera(states[..., :2], forward)
    return look_at(eye, target, eye.new_tensor([0.0, 0.0, 1.0]))
