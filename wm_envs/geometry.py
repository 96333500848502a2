"""Pinhole camera geometry in torch: intrinsics, poses, unprojection, warping, point clouds.

Conventions (OpenCV): a camera looks along its +z axis, x to the right of the image and y
down it; pixel (u, v) is column u, row v, with integer coordinates at pixel centres.
A pose is world-from-camera, a 4x4 matrix [..., 4, 4] that maps camera coordinates to world
coordinates; depth is the distance along the camera's z axis, in metres. A relative pose
between frames t and t+1 is ``camera_t from camera_t+1``, ``inverse(pose_t) @ pose_t+1``,
written as 6 numbers: translation (m) and axis-angle rotation (rad).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def intrinsics(fovy_degrees: float, size: int) -> torch.Tensor:
    """fx, fy, cx, cy [4] of a square ``size`` image with vertical field of view
    ``fovy_degrees`` and square pixels (MuJoCo's and PyBullet's cameras)."""
    focal = (size / 2) / math.tan(math.radians(fovy_degrees) / 2)
    centre = (size - 1) / 2
    return torch.tensor([focal, focal, centre, centre])


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """World-from-camera poses [..., 4, 4] of cameras at ``eye`` [..., 3] looking at
    ``target`` [..., 3], ``up`` [..., 3] pointing up the image."""
    z = F.normalize(target - eye, dim=-1)
    x = F.normalize(torch.linalg.cross(z, up.expand_as(z)), dim=-1)
    y = torch.linalg.cross(z, x)
    return from_rotation_translation(torch.stack([x, y, z], -1), eye)


def from_rotation_translation(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Rotation [..., 3, 3] and translation [..., 3] -> homogeneous transform [..., 4, 4]."""
    pose = torch.zeros(*rotation.shape[:-2], 4, 4, dtype=rotation.dtype, device=rotation.device)
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = translation
    pose[..., 3, 3] = 1.0
    return pose


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotation vectors [..., 3] (rad) -> rotation matrices [..., 3, 3]."""
    angle = axis_angle.norm(dim=-1, keepdim=True)[..., None]  # [..., 1, 1]
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1)
    cross = cross.view(*axis_angle.shape[:-1], 3, 3)  # [v]_x
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    # sin(a)/a and (1 - cos(a))/a^2, by their series near zero
    small = angle < 1e-4
    safe = torch.where(small, torch.ones_like(angle), angle)
    a = torch.where(small, 1 - angle**2 / 6, safe.sin() / safe)
    b = torch.where(small, 0.5 - angle**2 / 24, (1 - safe.cos()) / safe**2)
    return eye + a * cross + b * cross @ cross


def matrix_to_axis_angle(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> rotation vectors [..., 3] (rad; angles below pi)."""
    trace = rotation.diagonal(dim1=-2, dim2=-1).sum(-1)
    angle = torch.acos(((trace - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7))  # [...]
    axis = torch.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        -1,
    )  # 2 sin(angle) * unit axis
    sine = angle.sin()[..., None]
    scale = torch.where(
        sine.abs() < 1e-6, 0.5 * torch.ones_like(sine), angle[..., None] / (2 * sine)
    )
    return axis * scale


def camera_from(pose: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """World-from-camera poses [..., 4, 4] (broadcast) -> the transform from the ``other``
    camera's frame into ``pose``'s camera frame [..., 4, 4]."""
    return torch.linalg.inv(pose) @ other


def relative_pose(pose: torch.Tensor, next_pose: torch.Tensor) -> torch.Tensor:
    """World-from-camera poses of frames t and t+1 [..., 4, 4] -> camera_t from
    camera_t+1 as translation and axis-angle [..., 6]."""
    relative = camera_from(pose, next_pose)
    return torch.cat([relative[..., :3, 3], matrix_to_axis_angle(relative[..., :3, :3])], -1)


def pose_matrix(pose6: torch.Tensor) -> torch.Tensor:
    """Translation and axis-angle [..., 6] -> transform [..., 4, 4]."""
    return from_rotation_translation(axis_angle_to_matrix(pose6[..., 3:]), pose6[..., :3])


def pixel_rays(camera: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Camera-space rays with z = 1 through every pixel centre: [H, W, 3], for intrinsics
    ``camera`` = fx, fy, cx, cy [4]."""
    fx, fy, cx, cy = camera.unbind(-1)
    v, u = torch.meshgrid(
        torch.arange(height, dtype=camera.dtype, device=camera.device),
        torch.arange(width, dtype=camera.dtype, device=camera.device),
        indexing="ij",
    )
    return torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)], -1)


def unproject(depth: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Depth maps [..., H, W] (m) -> camera-space points [..., H, W, 3]."""
    return depth[..., None] * pixel_rays(camera, *depth.shape[-2:])


def transform(points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Points [..., N, 3] (or [..., H, W, 3]) mapped by transforms [..., 4, 4]."""
    lead = pose.shape[:-2]
    flat = points.reshape(*lead, -1, 3)
    moved = flat @ pose[..., :3, :3].transpose(-1, -2) + pose[..., None, :3, 3]
    return moved.view(points.shape)


def warp(
    source: torch.Tensor,
    target_depth: torch.Tensor,
    relative: torch.Tensor,
    camera: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse warp: the source frame [N, C, H, W] seen from the target camera.

    Each target pixel is unprojected with its depth ``target_depth`` [N, H, W], moved into
    the source camera by ``relative`` [N, 4, 4] (source from target), projected and sampled
    bilinearly. Returns the warped frame [N, C, H, W], the depth of each point in the source
    camera [N, H, W] and where the point lands inside the source frame (within its pixels'
    footprints), in front of it [N, H, W] (bool).
    """
    height, width = target_depth.shape[-2:]
    points = transform(unproject(target_depth, camera), relative)  # [N, H, W, 3]
    z = points[..., 2]
    fx, fy, cx, cy = camera.unbind(-1)
    zs = z.clamp_min(1e-3)
    u = fx * points[..., 0] / zs + cx
    v = fy * points[..., 1] / zs + cy
    grid = torch.stack([2 * u / (width - 1) - 1, 2 * v / (height - 1) - 1], -1)  # [N, H, W, 2]
    warped = F.grid_sample(source, grid, align_corners=True, padding_mode="border")
    # the source pixels' footprints reach half a pixel past the edge pixels' centres
    inside = (z > 1e-3) & (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)
    return warped, z, inside


def chamfer(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer distance of point sets [..., N, 3] and [..., M, 3]: the mean
    distance of each point to its nearest neighbour in the other set, averaged over both
    directions -> [...] (the points' unit)."""
    distance = torch.cdist(first, second)  # [..., N, M]
    return 0.5 * (distance.amin(-1).mean(-1) + distance.amin(-2).mean(-1))
