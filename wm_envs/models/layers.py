"""Building blocks that more than one model uses: the MLP of heads and adapters, and the
decoder output painted over a fixed background.

Decoders paint RGB and an alpha mask over the per-pixel median of the data, so a small
model spends its capacity on what moves, not on the static scene.
"""

from __future__ import annotations

import torch
from torch import nn


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
