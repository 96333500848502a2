"""Building blocks that more than one model uses: the MLP of heads and adapters, and the
decoder output painted over a background.

Decoders paint RGB and an alpha mask over the per-pixel median of the data, so a small
model spends its capacity on what moves, not on the static scene; under a moving camera they
paint over an earlier frame reprojected into the new view (``paint_over_warped``), so they
paint only what the reprojection cannot carry over.
"""

from __future__ import annotations

import torch
from torch import nn

from wm_envs import geometry


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Linear, LayerNorm, SiLU, Linear: the two-layer MLP of heads and adapters."""
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, outputs)
    )


def median_frame(pixels: torch.Tensor) -> torch.Tensor:
    """Model-space pixels [B, T, C, H, W] -> their per-pixel median [C, H, W], the static
    background a decoder paints over."""
    return pixels.flatten(0, 1).median(dim=0).values


def paint_over(maps: torch.Tensor, background: torch.Tensor | None) -> torch.Tensor:
    """Decoder maps [N, 4 + D, H, W] -- RGB logits, an alpha logit, then D maps taken as
    they are (depth) -- -> pixels [N, 3 + D, H, W] (RGB in [-0.5, 0.5]) composited with the
    alpha over ``background`` [3 + D, H, W]; with no background (a moving camera) the
    decoder paints every pixel and the alpha is unused."""
    rgb = torch.sigmoid(maps[:, :3]) - 0.5
    layers = torch.cat([rgb, maps[:, 4:]], 1)  # [N, 3 + D, H, W]
    if background is None:
        return layers
    alpha = torch.sigmoid(maps[:, 3:4])  # [N, 1, H, W]
    return alpha * layers + (1 - alpha) * background


def paint_over_warped(
    maps: torch.Tensor,
    frame: torch.Tensor,
    depth: torch.Tensor,
    relative: torch.Tensor,
    camera: torch.Tensor,
) -> torch.Tensor:
    """Decoder maps [N, 4 + D, H, W] (as ``paint_over``) composited over an earlier RGB frame
    [N, 3, H, W] seen from the new camera: ``geometry.warp`` with the new view's depth
    [N, H, W] (m), the relative pose [N, 4, 4] (earlier camera from new camera) and the
    intrinsics ``camera`` [4]. The D maps stay the decoder's, and pixels whose point falls
    outside the earlier frame are painted outright -> pixels [N, 3 + D, H, W]."""
    painted = paint_over(maps, None)  # [N, 3 + D, H, W]
    warped, _, inside = geometry.warp(frame, depth, relative, camera)
    behind = torch.where(inside[:, None], torch.cat([warped, painted[:, 3:]], 1), painted)
    return paint_over(maps, behind)
