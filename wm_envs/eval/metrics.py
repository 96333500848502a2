"""Image and rollout metrics shared by training validation and ``compare``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # models import these metrics too
    from wm_envs.models.base import Batch, WorldModel


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of uint8 images [..., H, W, C], one value per image -> [...]."""
    return psnr_of_mse((prediction.float() - target.float()).div(255).square().mean((-3, -2, -1)))


def psnr_of_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of mean squared errors of pixels in [0, 1] -> the same shape."""
    return -10 * torch.log10(mse.clamp_min(1e-10))


FOREGROUND_THRESHOLD = 0.08  # max abs channel difference in [0, 1], as in the RSSM's image loss


def static_background(frames: np.ndarray) -> torch.Tensor:
    """What stays put across uint8 frames [N, H, W, C]: their per-pixel median, float in
    [0, 1] -> [H, W, C]."""
    return torch.from_numpy(np.median(frames, axis=0) / 255).float()


def foreground_psnr(
    prediction: torch.Tensor, target: torch.Tensor, background: torch.Tensor
) -> torch.Tensor:
    """PSNR in dB of uint8 images [..., H, W, C] over the pixels that differ from
    ``background`` (float [H, W, C] in [0, 1]) in either image by more than
    ``FOREGROUND_THRESHOLD`` in some channel -> [...]; NaN for a pair with no such pixel.

    A static background that any predictor gets right fills most of a frame and lifts
    full-frame PSNR; this scores only what moves or is painted where it should not be.
    """
    prediction, target = prediction.float().div(255), target.float().div(255)
    differs = lambda image: (image - background).abs().amax(-1) > FOREGROUND_THRESHOLD  # noqa: E731
    mask = differs(prediction) | differs(target)  # [..., H, W]
    error = (prediction - target).square().mean(-1)  # [..., H, W]
    pixels = mask.sum((-2, -1))  # [...]
    mse = (error * mask).sum((-2, -1)) / pixels.clamp_min(1)
    return torch.where(pixels > 0, psnr_of_mse(mse), torch.nan)


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity of uint8 images [..., H, W, C] (7x7 box windows) -> [...]."""
    lead = prediction.shape[:-3]
    x, y = (t.float().div(255).flatten(0, -4).permute(0, 3, 1, 2) for t in (prediction, target))
    pool = lambda t: torch.nn.functional.avg_pool2d(t, 7, 1)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx**2, pool(y * y) - my**2, pool(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return value.mean((1, 2, 3)).view(lead)


@torch.no_grad()
def open_loop(model: WorldModel, batch: Batch, context: int) -> dict[str, torch.Tensor]:
    """Observe ``context`` frames of each window, then predict the rest from actions alone.

    Returns predicted ``image`` uint8 [B, H', ...] (models with an image decoder) and
    ``state`` [B, H', S] for the ``H' = T - context`` steps after the context. Windows must
    not cross an episode start after their first step (use episode-aligned windows).
    """
    obs = {key: batch[key][:, :context] for key in ("image", "state", "depth") if key in batch}
    state = model.init_state(obs, batch["action"][:, :context])
    images = "dict" in model.obs_modes
    steps = []
    for t in range(context, batch["action"].shape[1]):
        state = model.step(state, batch["action"][:, t])
        steps.append(model.decode(state) if images else {"state": model.state_vector(state)})
    return {
        key: torch.stack([step[key] for step in steps], 1)
        for key in ("image", "state")
        if key in steps[0]
    }


def depth_errors(
    prediction: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth maps [..., H, W, 1] (metres, target > 0) -> the standard monocular-depth scores
    per map [...]: AbsRel, the mean of |prediction - target| / target, and δ<1.25, the share
    of pixels whose ratio max(p / t, t / p) is below 1.25."""
    prediction = prediction.float().clamp_min(1e-6)
    target = target.float()
    absrel = ((prediction - target).abs() / target).mean((-3, -2, -1))
    ratio = torch.maximum(prediction / target, target / prediction)
    return absrel, (ratio < 1.25).float().mean((-3, -2, -1))


def point_cloud(depth: torch.Tensor, pose: torch.Tensor, camera: torch.Tensor, stride: int = 2):
    """Depth maps [N, H, W, 1] seen from world-from-camera poses [N, 4, 4] with intrinsics
    ``camera`` [4] -> world points [N, (H/stride)*(W/stride), 3], every ``stride``-th pixel."""
    from wm_envs.geometry import transform, unproject

    points = unproject(depth[..., 0].double(), camera.double())[:, ::stride, ::stride]
    return transform(points.flatten(1, 2), pose.double())


def chamfer_cm(
    prediction: torch.Tensor,
    predicted_pose: torch.Tensor,
    target: torch.Tensor,
    pose: torch.Tensor,
    camera: torch.Tensor,
) -> torch.Tensor:
    """Chamfer distance in cm between the world point clouds of predicted and true depth
    maps [N, H, W, 1], each unprojected with its own camera pose [N, 4, 4] -> [N]."""
    from wm_envs.geometry import chamfer

    first = point_cloud(prediction, predicted_pose, camera)
    second = point_cloud(target, pose, camera)
    return 100 * chamfer(first, second).float()


def pose_errors(predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World-from-camera poses [..., 4, 4] -> the camera's position error in cm and its
    rotation error in degrees [...]."""
    from wm_envs.geometry import matrix_to_axis_angle

    translation = 100 * (predicted[..., :3, 3] - target[..., :3, 3]).norm(dim=-1)
    rotation = predicted[..., :3, :3].transpose(-1, -2) @ target[..., :3, :3]
    return translation, torch.rad2deg(matrix_to_axis_angle(rotation.double()).norm(dim=-1)).float()
