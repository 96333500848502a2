"""How much Genie's latent actions control what it generates, and how much of its codebooks
it uses -- numbers for training validation and ``compare``.

ΔtPSNR (Genie, Bruce et al. 2024): from the same real context, generate ``horizon`` frames
twice, once with the latent actions the LAM infers from the real video and once with
uniformly random latent actions, and compare the PSNR of the last generated frame against
the real one. A model that ignores its actions scores 0 dB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from wm_envs.eval.metrics import psnr
from wm_envs.models.base import Batch, images_to_float

if TYPE_CHECKING:
    from wm_envs.models.genie.model import Genie


def usage(indices: torch.Tensor, size: int) -> tuple[float, float]:
    """Of a codebook of ``size`` codes: the fraction used by ``indices`` and their perplexity
    (the effective number of codes, exp of the entropy of the code histogram)."""
    counts = torch.bincount(indices.flatten(), minlength=size).float()
    probs = counts / counts.sum()
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
    return (counts > 0).float().mean().item(), entropy.exp().item()


@torch.no_grad()
def controllability(
    model: Genie, batch: Batch, context: int, horizon: int = 4, seed: int = 0
) -> dict[str, float]:
    """ΔtPSNR at t = ``horizon`` after ``context`` real frames, and codebook usage, on
    episode windows ``batch`` (image uint8 [B, T, H, W, 3]) of a Genie model; windows shorter
    than ``context + horizon`` shorten the horizon. Generation takes the mode (no sampling),
    so the numbers are repeatable."""
    horizon = min(horizon, batch["image"].shape[1] - context)
    frames = context + horizon
    images = batch["image"][:, :frames]
    pixels = images_to_float(images)  # [B, T, 3, H, W]
    is_first = torch.zeros(pixels.shape[:2], dtype=torch.bool, device=pixels.device)
    is_first[:, 0] = True
    inferred = model.infer_actions(pixels, is_first)  # [B, T]
    generator = torch.Generator(pixels.device).manual_seed(seed)
    random = torch.randint(
        model.n_latent_actions,
        inferred[:, context:].shape,
        generator=generator,
        device=pixels.device,
    )

    def last_frame_psnr(actions: torch.Tensor) -> float:
        state = model.init_state({"image": images[:, :context]})
        for t in range(horizon):
            state = model.step_latent(state, actions[:, t])
        return psnr(model.decode(state)["image"], images[:, -1]).mean().item()

    controlled = last_frame_psnr(inferred[:, context:])
    uncontrolled = last_frame_psnr(random)
    tokens = model.tokenizer.tokenize(pixels.flatten(0, 1))
    token_used, token_perplexity = usage(tokens, model.tokenizer.fsq.size)
    action_used, action_perplexity = usage(inferred[:, 1:], model.n_latent_actions)
    return {
        "delta_psnr": controlled - uncontrolled,
        "psnr_inferred_actions": controlled,
        "psnr_random_actions": uncontrolled,
        "token_usage": token_used,
        "token_perplexity": token_perplexity,
        "action_usage": action_used,
        "action_perplexity": action_perplexity,
    }
