"""Image and rollout metrics shared by training validation and ``compare``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # models import these metrics too
    from wm_envs.models.base import Batch, WorldModel


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of uint8 images [..., H, W, C], one value per image -> [...]."""
    return psnr_of_mse((prediction.float() - target.float()).div(255).square().mean((-3, -2, -1)))


def psnr_of_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of mean squared errors of pixels in [0, 1] -> the same shape."""
    return -10 * torch.log10(mse.clamp_min(1e-10))


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

    Returns predicted ``image`` uint8 [B, H', ...] and ``state`` [B, H', S] for the
    ``H' = T - context`` steps after the context. Windows must not cross an episode start
    after their first step (use episode-aligned windows).
    """
    obs = {key: batch[key][:, :context] for key in ("image", "state", "depth") if key in batch}
    state = model.init_state(obs, batch["action"][:, :context])
    images, states = [], []
    for t in range(context, batch["action"].shape[1]):
        state = model.step(state, batch["action"][:, t])
        decoded = model.decode(state)
        images.append(decoded["image"])
        states.append(decoded["state"])
    return {"image": torch.stack(images, 1), "state": torch.stack(states, 1)}
