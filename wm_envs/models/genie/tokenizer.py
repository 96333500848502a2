"""Genie's video tokenizer: an FSQ autoencoder from a frame to a grid of discrete tokens.

Frames are cut into patches (8x8 pixels -> an 8x8 grid, 64 tokens at 64x64); an MLP encodes
each patch on its own, FSQ rounds it to one of ``prod(levels)`` codes, and a space-time
transformer (spatial attention only, memory 0) decodes the grid of codes back to patches.

The encoder sees one patch, not the frame, on purpose: a patch that does not change keeps
its token exactly. An encoder with spatial attention lets the moving gripper nudge every
token of the frame, and many flip between consecutive frames: noise the dynamics cannot
predict. The tokenizer is per-frame: the dynamics does the temporal modelling, and the env
decodes one generated frame from its own tokens. As in the RSSM, the decoder paints RGB and
an alpha mask over a fixed background (``layers.paint_over``), so tokens spend their bits on
what moves.
"""

from __future__ import annotations

import torch
from torch import nn

from wm_envs.models.genie.fsq import FSQ
from wm_envs.models.genie.transformer import STTransformer, patchify, unpatchify
from wm_envs.models.layers import paint_over


class Tokenizer(nn.Module):
    """Frames [N, 3, H, W] in [-0.5, 0.5] <-> token indices [N, P]."""

    def __init__(
        self, image_size: int, patch: int, width: int, depth: int, heads: int, levels: list[int]
    ) -> None:
        super().__init__()
        self.image_size, self.patch = image_size, patch
        tokens = (image_size // patch) ** 2
        self.fsq = FSQ(levels)
        self.encoder = nn.Sequential(  # one patch -> its latent
            nn.Linear(3 * patch * patch, width),
            nn.GELU(),
            nn.Linear(width, width),
            nn.GELU(),
            nn.Linear(width, self.fsq.dim),
        )
        self.from_code = nn.Linear(self.fsq.dim, width)
        self.decoder_position = nn.Parameter(0.02 * torch.randn(tokens, width))
        self.decoder = STTransformer(width, depth, heads, memory=0)
        self.patch_out = nn.Linear(width, 4 * patch * patch)  # RGB + alpha per pixel
        self.register_buffer("background", torch.zeros(3, image_size, image_size))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Frames [N, 3, H, W] -> FSQ codes [N, P, d] (straight-through)."""
        return self.fsq(self.encoder(patchify(pixels, self.patch)))  # [N, P, d]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """FSQ codes [N, P, d] -> frames [N, 3, H, W] composited over the background."""
        x = self.from_code(codes) + self.decoder_position  # [N, P, E]
        x, _ = self.decoder(x[:, None])  # [N, 1, P, E]
        maps = unpatchify(self.patch_out(x[:, 0]), self.patch, self.image_size)  # [N, 4, H, W]
        return paint_over(maps, self.background)

    def tokenize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Frames [N, 3, H, W] -> token indices [N, P]."""
        return self.fsq.codes_to_indices(self.encode(pixels))

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token indices [N, P] -> frames [N, 3, H, W]."""
        return self.decode(self.fsq.indices_to_codes(tokens))

    def loss(self, pixels: torch.Tensor) -> torch.Tensor:
        """Squared reconstruction error of frames [N, 3, H, W], summed per frame -> []."""
        return (self.decode(self.encode(pixels)) - pixels).square().sum((1, 2, 3)).mean()
