"""Device choice shared by the trainer, the learned envs and the benchmarks."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
