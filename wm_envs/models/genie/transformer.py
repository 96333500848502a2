"""The space-time transformer shared by Genie's three parts.

A block attends within a frame (spatial: every patch token sees every other token of its
frame), then across frames (temporal: each token sees the token at the same patch position
in itself and the last ``memory`` frames, causal), then applies a feed-forward layer; all
pre-norm residuals. ``memory=0`` drops the temporal part (the per-frame tokenizer).

Temporal attention encodes each frame's time with rotary embeddings, under which attention
depends only on frame offsets: the (rotated) keys and values a block computed for a frame
stay valid for every later frame. The dynamics caches them in the model state, so one
generation step runs the new frame alone instead of the whole context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

#: Keys and values of one block for some frames: two [B, T, P, E] tensors.
KeyValues = tuple[torch.Tensor, torch.Tensor]


def patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """Frames [..., C, H, W] -> patch tokens [..., P, C*patch*patch], row-major patches."""
    return rearrange(pixels, "... c (h i) (w j) -> ... (h w) (c i j)", i=patch, j=patch)


def unpatchify(tokens: torch.Tensor, patch: int, size: int) -> torch.Tensor:
    """Patch tokens [..., P, C*patch*patch] -> frames [..., C, size, size]."""
    return rearrange(
        tokens, "... (h w) (c i j) -> ... c (h i) (w j)", h=size // patch, i=patch, j=patch
    )


def time_rotation(time: torch.Tensor, head_width: int) -> torch.Tensor:
    """Rotary time embedding (RoPE) for frame times ``time`` ([T], or [B, T] per row): unit
    complex numbers [(B,) T, 1, 1, head_width / 2], one per channel pair of a head."""
    half = head_width // 2
    frequencies = 10.0 ** (-4 * torch.arange(half, device=time.device) / half)  # [D/2]
    angles = (time.float()[..., None] * frequencies)[..., None, None, :]
    return torch.polar(torch.ones_like(angles), angles)


def rotate(x: torch.Tensor, rotation: torch.Tensor, heads: int) -> torch.Tensor:
    """Rotate the channel pairs of each head of x [B, T, P, E] by ``rotation``."""
    pairs = rearrange(x.float(), "... (h d two) -> ... h d two", h=heads, two=2).contiguous()
    rotated = torch.view_as_real(torch.view_as_complex(pairs) * rotation)  # [B, T, P, H, D/2, 2]
    return rearrange(rotated, "... h d two -> ... (h d two)").to(x.dtype)


def temporal_mask(segment: torch.Tensor, memory: int, strict: bool = False) -> torch.Tensor:
    """Which frames each frame may attend to: [B, T] episode numbers -> bool [B, T, T].

    Frame i sees frame j when j is at most ``memory`` frames back (``strict``: and not i
    itself) and both belong to the same episode.
    """
    time = torch.arange(segment.shape[1], device=segment.device)
    back = time[:, None] - time[None, :]  # [T, T] offset i - j
    window = (back >= int(strict)) & (back <= memory)
    return window & (segment[:, :, None] == segment[:, None, :])


class Block(nn.Module):
    """Spatial attention, causal temporal attention over ``memory`` past frames, MLP."""

    def __init__(self, width: int, heads: int, memory: int) -> None:
        super().__init__()
        self.heads, self.memory = heads, memory
        self.spatial_norm = nn.LayerNorm(width)
        self.spatial_qkv = nn.Linear(width, 3 * width)
        self.spatial_out = nn.Linear(width, width)
        if memory > 0:
            self.temporal_norm = nn.LayerNorm(width)
            self.temporal_qkv = nn.Linear(width, 3 * width)
            self.temporal_out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rotation: torch.Tensor | None = None,
        past: KeyValues | None = None,
    ) -> tuple[torch.Tensor, KeyValues | None]:
        """x [B, T, P, E] -> (x [B, T, P, E], this block's temporal keys and values of x).

        ``rotation``: the frames' time embedding (``time_rotation``); ``past``: cached keys
        and values [B, Tp, P, E] of earlier frames, as returned for them; ``mask`` bool
        [B, T, Tp + T]: what each frame of x may attend to. Without temporal attention
        (memory 0) only ``x`` is used.
        """
        size, frames, patches, _ = x.shape
        qkv = self.spatial_qkv(self.spatial_norm(x))  # [B, T, P, 3E]
        q, k, v = rearrange(qkv, "b t p (n h d) -> n (b t) h p d", n=3, h=self.heads)
        attended = F.scaled_dot_product_attention(q, k, v)  # [B*T, H, P, D]
        x = x + self.spatial_out(rearrange(attended, "(b t) h p d -> b t p (h d)", b=size))
        new = None
        if self.memory > 0:
            q, k, v = self.temporal_qkv(self.temporal_norm(x)).chunk(3, -1)  # [B, T, P, E]
            q, k = rotate(q, rotation, self.heads), rotate(k, rotation, self.heads)
            new = (k, v)
            if past is not None:
                k, v = torch.cat([past[0], k], 1), torch.cat([past[1], v], 1)  # [B, Tp+T, P, E]
            q, k, v = (rearrange(y, "b t p (h d) -> b (p h) t d", h=self.heads) for y in (q, k, v))
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
            attended = rearrange(attended, "b (p h) t d -> b t p (h d)", p=patches)  # [B, T, P, E]
            x = x + self.temporal_out(attended)
        x = x + self.mlp(self.mlp_norm(x))
        return x, new


class STTransformer(nn.Module):
    """A stack of space-time blocks and a final norm, over tokens [B, T, P, E]."""

    def __init__(self, width: int, depth: int, heads: int, memory: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.memory, self.heads = memory, heads
        self.blocks = nn.ModuleList(Block(width, heads, memory) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
        past: list[KeyValues] | None = None,
    ) -> tuple[torch.Tensor, list[KeyValues | None]]:
        """x [B, T, P, E] -> (x [B, T, P, E], per block the keys and values of x's frames).

        ``time`` ([T], or [B, T] per row; default 0..T-1) are the frame times of x; ``mask``
        and ``past`` (one entry per block) as in ``Block.forward``.
        """
        rotation = None
        if self.memory > 0:
            if time is None:
                time = torch.arange(x.shape[1], device=x.device)
            rotation = time_rotation(time, x.shape[-1] // self.heads)
        cache = []
        for i, block in enumerate(self.blocks):
            x, new = block(x, mask, rotation, None if past is None else past[i])
            cache.append(new)
        return self.norm(x), cache
