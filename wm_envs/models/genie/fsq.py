"""Finite scalar quantisation (FSQ, Mentzer et al. 2023): a codebook without a codebook.

Each of ``d`` latent dimensions is squashed by tanh into a range of ``levels[i]`` values and
rounded to the nearest one; rounding passes gradients straight through. A code is the tuple
of rounded values, so there are ``prod(levels)`` codes, all reachable and none to learn -- no
commitment loss and no dead-code restarts as with vector quantisation. Codes are the rounded
values scaled to [-1, 1]; indices are their mixed-radix numbers.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FSQ(nn.Module):
    """Quantise [..., d] latents with ``levels`` values per dimension (d = len(levels))."""

    def __init__(self, levels: list[int] | tuple[int, ...]) -> None:
        super().__init__()
        if min(levels) < 2:
            raise ValueError(f"every FSQ dimension needs at least 2 levels, got {levels}")
        levels = torch.tensor(list(levels), dtype=torch.long)
        self.register_buffer("levels", levels, persistent=False)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
        self.register_buffer("basis", basis, persistent=False)  # mixed radix: 1, L0, L0*L1, ...
        self.dim = len(levels)
        self.size = math.prod(levels.tolist())

    @property
    def half(self) -> torch.Tensor:
        """Half the span of each dimension's rounded values, (L - 1) / 2 -> [d]."""
        return (self.levels - 1) / 2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [..., d] -> codes [..., d] in [-1, 1], straight-through gradient.

        A dimension with L levels rounds to the L values -(L-1)/2 .. (L-1)/2 (half-integers
        when L is even, so both signs are used evenly), then scales by 2 / (L - 1).
        """
        scaled = torch.tanh(z.float()) * self.half  # [..., d] in (-(L-1)/2, (L-1)/2)
        offset = (self.levels % 2 == 0).float() * 0.5  # even L rounds to half-integers
        rounded = torch.round(scaled - offset) + offset
        rounded = scaled + (rounded - scaled).detach()  # straight-through
        return rounded / self.half

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [..., d] -> indices [...] in [0, prod(levels))."""
        return self.digits_to_indices(torch.round(codes.float() * self.half + self.half).long())

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [...] -> codes [..., d] (the inverse of ``codes_to_indices``)."""
        return (self.indices_to_digits(indices) - self.half) / self.half

    def digits_to_indices(self, digits: torch.Tensor) -> torch.Tensor:
        """Level numbers [..., d] (dimension i in [0, L_i)) -> indices [...]."""
        return (digits * self.basis).sum(-1)

    def indices_to_digits(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [...] -> level numbers [..., d]."""
        return (indices[..., None] // self.basis) % self.levels
