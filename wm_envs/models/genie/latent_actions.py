"""Genie's latent action model (LAM): a few discrete actions learned from video alone.

An encoder looks at frames t-1 and t (each frame's patches come with their difference to the
previous frame, so motion stands out) and names the transition with a tiny FSQ code (8
codes by default: three binary dimensions); a decoder must produce frame t from frame t-1
and that code alone. The decoder sees no other frame, so the code has to carry what
changed -- in a manipulation scene, where the gripper went. The decoder predicts a residual
over frame t-1, so the static scene costs nothing and the loss is all about the change.

Against collapse (every transition getting the same code, as happens on Grasp without
them) two terms act on the squashed latents tanh(z) of each FSQ dimension over the batch:
a balance term keeps their mean at zero (both signs in use) and a spread term keeps their
standard deviation above 0.5 (so the encoder cannot park every latent near zero, where the
mean is balanced but the code is constant). Usage is reported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wm_envs.models.genie.fsq import FSQ
from wm_envs.models.genie.transformer import STTransformer, patchify, temporal_mask, unpatchify


class LatentActionModel(nn.Module):
    """Frames [B, T, 3, H, W] -> latent action indices [B, T-1] (the actions into frames 1..)."""

    def __init__(
        self,
        image_size: int,
        patch: int,
        width: int,
        depth: int,
        heads: int,
        levels: list[int],
        balance: float,
    ) -> None:
        super().__init__()
        self.image_size, self.patch, self.balance = image_size, patch, balance
        tokens = (image_size // patch) ** 2
        self.fsq = FSQ(levels)
        self.encoder_in = nn.Linear(6 * patch * patch, width)  # frame and change
        self.encoder_position = nn.Parameter(0.02 * torch.randn(tokens, width))
        self.encoder = STTransformer(width, depth, heads, memory=1)  # sees frames t-1 and t
        self.to_action = nn.Linear(width, self.fsq.dim)
        self.decoder_in = nn.Linear(3 * patch * patch, width)
        self.decoder_position = nn.Parameter(0.02 * torch.randn(tokens, width))
        self.action_in = nn.Linear(self.fsq.dim, width)
        self.decoder = STTransformer(width, depth, heads, memory=0)  # frame t-1 and the code only
        self.patch_out = nn.Linear(width, 3 * patch * patch)
        nn.init.zeros_(self.patch_out.weight)  # start as "copy the previous frame"
        nn.init.zeros_(self.patch_out.bias)

    def encode(self, pixels: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        """Frames [B, T, 3, H, W] and episode numbers [B, T] -> action latents [B, T-1, d]."""
        change = pixels - torch.cat([pixels[:, :1], pixels[:, :-1]], 1)  # [B, T, 3, H, W]
        patches = patchify(torch.cat([pixels, change], 2), self.patch)  # [B, T, P, 6*p*p]
        x = self.encoder_in(patches) + self.encoder_position  # [B, T, P, E]
        x, _ = self.encoder(x, temporal_mask(segment, memory=1))
        return self.to_action(x[:, 1:].mean(2))  # pooled over patches of frames 1.. [B, T-1, d]

    def infer(self, pixels: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        """Frames [B, T, 3, H, W] -> action indices [B, T-1]."""
        return self.fsq.codes_to_indices(self.fsq(self.encode(pixels, segment)))

    def predict(self, previous: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Frames [B, T, 3, H, W] and action codes [B, T, d] -> the next frames [B, T, 3, H, W]."""
        x = self.decoder_in(patchify(previous, self.patch)) + self.decoder_position  # [B, T, P, E]
        x, _ = self.decoder(x + self.action_in(codes)[:, :, None])
        change = unpatchify(self.patch_out(x), self.patch, self.image_size)  # [B, T, 3, H, W]
        return previous + change

    def loss(
        self, pixels: torch.Tensor, is_first: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction of frames 1.. from their predecessor and code, plus the balance
        and spread of the codes."""
        latents = self.encode(pixels, is_first.cumsum(1))  # [B, T-1, d]
        codes = self.fsq(latents)
        valid = (~is_first[:, 1:]).float()  # transitions inside one episode [B, T-1]
        count = valid.sum().clamp_min(1)
        error = (self.predict(pixels[:, :-1], codes) - pixels[:, 1:]).square().sum((2, 3, 4))
        reconstruction = (error * valid).sum() / count
        squashed = torch.tanh(latents)  # [B, T-1, d]
        mean = (squashed * valid[..., None]).sum((0, 1)) / count  # [d]
        variance = ((squashed - mean).square() * valid[..., None]).sum((0, 1)) / count
        balance = mean.square().sum()
        spread = F.relu(0.5 - variance.clamp_min(1e-6).sqrt()).sum()
        copy = (pixels[:, :-1] - pixels[:, 1:]).square().sum((2, 3, 4))  # the no-action baseline
        used = self.fsq.codes_to_indices(codes)[valid.bool()].unique().numel()
        metrics = {
            "reconstruction": reconstruction.item(),
            "balance": balance.item(),
            "spread": spread.item(),
            "copy_error": ((copy * valid).sum() / count).item(),
            "codes_used": used,
        }
        return reconstruction + self.balance * (balance + spread), metrics
