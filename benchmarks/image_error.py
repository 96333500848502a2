"""Where a learned simulator's image error sits, on held-out physics episodes.

Two predictions of each frame: the *reconstruction* (the model observes real frames up to
and including it, then decodes: the ceiling of its image quality, since a prediction cannot
be sharper than what the decoder paints from a known frame; for a Genie, its codes decoded
without the last real frame's residual) and the *1-step* prediction
(observed up to the frame before, then one step under the real action), each after 1, 4 and
8 real context frames (the same target frames for all three: a model that needs a long
context to know the scene is a poor simulator to start from one real frame). The squared error
is split over three pixel sets of the true frame: *moving* (differs from the static scene, the
per-pixel median of all frames, by more than 20/255: gripper and object), the *ring* of
pixels within 2 px of those, and the *static* rest. The "PSNR, ring exact" column shows
what blurred or misplaced edges cost.

    python -m benchmarks.image_error [--model rssm] [--checkpoint PATH] [--episodes 10]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import write_results
from wm_envs.checkpoint import load_checkpoint, shipped_checkpoint
from wm_envs.eval.compare import held_out_episodes
from wm_envs.eval.metrics import psnr_of_mse, static_background
from wm_envs.models.base import WorldModel

SEED = 200_000  # outside training (seeds 0..5999) and compare's val and test splits (90000..199999)
CONTEXTS = (1, 4, 8)  # real frames observed (compare observes 4 before a mid-episode start)
MOVING_THRESHOLD = 20 / 255
RING_PX = 2


def windows(episodes: list[dict], context: int) -> dict[str, torch.Tensor]:
    """Every ``context``-frame window that ends at or after the longest context's first
    window and has a next frame: image [N, K, H, W, 3], state [N, K, S], the actions into its
    frames [N, K, A] (the first is ignored), the action after it [N, A] and the next frame
    [N, H, W, 3]."""
    parts: dict[str, list[np.ndarray]] = {}
    for episode in episodes:
        actions = np.clip(episode["action"], -1, 1).astype(np.float32)
        led_in = np.concatenate([np.zeros_like(actions[:1]), actions])  # [T+1, A]
        for last in range(max(CONTEXTS) - 1, len(actions)):
            frames = slice(last - context + 1, last + 1)
            parts.setdefault("image", []).append(episode["image"][frames])
            parts.setdefault("state", []).append(episode["state"][frames].astype(np.float32))
            parts.setdefault("led_in", []).append(led_in[frames])
            parts.setdefault("action", []).append(actions[last])
            parts.setdefault("next_image", []).append(episode["image"][last + 1])
    return {key: torch.from_numpy(np.stack(value)) for key, value in parts.items()}


@torch.no_grad()
def predict(
    model: WorldModel, batch: dict[str, torch.Tensor], chunk: int = 128
) -> dict[str, torch.Tensor]:
    """Reconstructions of each window's last frame and 1-step predictions of the next,
    uint8 [N, H, W, 3] each."""
    reconstruction, one_step = [], []
    for rows in torch.arange(len(batch["action"])).split(chunk):
        context = {"image": batch["image"][rows], "state": batch["state"][rows]}
        state = model.init_state(context, batch["led_in"][rows])
        reconstruction.append(painted(model, state))
        one_step.append(model.decode(model.step(state, batch["action"][rows]))["image"])
    return {"reconstruction": torch.cat(reconstruction), "1-step": torch.cat(one_step)}


def painted(model: WorldModel, state: dict) -> torch.Tensor:
    """What the decoder paints for ``state`` -> uint8 [N, H, W, 3]; a Genie decodes its codes
    alone, since adding back the last real frame's residual returns a known frame exactly."""
    saved = getattr(model, "residual_tolerance", None)
    if saved is not None:
        model.residual_tolerance = 0.0
    try:
        return model.decode(state)["image"]
    finally:
        if saved is not None:
            model.residual_tolerance = saved


def error_split(prediction: torch.Tensor, truth: torch.Tensor, static: torch.Tensor) -> dict:
    """PSNR and where the squared error sits, for uint8 frames [N, H, W, 3]."""
    truth_f, prediction_f = truth.float() / 255, prediction.float() / 255
    moving = (truth_f - static).abs().amax(-1) > MOVING_THRESHOLD  # [N, H, W]
    near = F.max_pool2d(moving[:, None].float(), 2 * RING_PX + 1, 1, RING_PX)[:, 0] > 0
    ring = near & ~moving
    error = (prediction_f - truth_f).square().mean(-1)  # [N, H, W]
    per_frame = error.mean((1, 2))  # [N]
    without_ring = (error * ~ring).mean((1, 2))
    total = error.sum()
    return {
        "PSNR": psnr_of_mse(per_frame).mean().item(),
        "PSNR, ring exact": psnr_of_mse(without_ring).mean().item(),
        "error share moving": (error[moving].sum() / total).item(),
        "error share ring": (error[ring].sum() / total).item(),
        "error share static": (error[~near].sum() / total).item(),
        "pixels moving / ring": f"{moving.float().mean():.3f} / {ring.float().mean():.3f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="grasp")
    parser.add_argument("--model", default="rssm")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped one")
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    folder = args.checkpoint or shipped_checkpoint(args.model, args.task)
    model, card, _ = load_checkpoint(folder)
    episodes = held_out_episodes(args.task, SEED, args.episodes, noise=0.3)
    static = static_background(np.concatenate([e["image"] for e in episodes]))  # [H, W, 3]
    rows = []
    for context in CONTEXTS:
        batch = windows(episodes, context)
        truths = {"reconstruction": batch["image"][:, -1], "1-step": batch["next_image"]}
        for kind, image in predict(model, batch).items():
            split = error_split(image, truths[kind], static)
            rows.append({"model": card["model"], "context": context, "prediction": kind, **split})
    label = args.checkpoint or f"shipped {args.model}-{args.task}"
    notes = (
        f"Checkpoint `{label}`; {len(batch['action'])} target frames of {args.episodes} "
        f"held-out episodes (seeds {SEED}-{SEED + args.episodes - 1}, expert and random "
        f"alternating). `python -m benchmarks.image_error --model {args.model}`"
    )
    write_results(f"image_error_{card['model']}_{args.task}", rows, notes)


if __name__ == "__main__":
    main()
