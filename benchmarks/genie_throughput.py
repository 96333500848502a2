"""Genie's batched generation speed: frames/s for N envs, and the cost of MaskGIT passes.

One frame = ``step`` (MaskGIT passes over the new frame's tokens plus one pass that caches
the finished frame) and ``decode`` (tokens to a 64x64 image and state vector), for N envs at
once, taking the mode (no sampling). Rows: N = 1, 16, 64 at the model's default number of
MaskGIT passes, then N = 64 with the other pass counts of 1, 2, 4, 8.

    python -m benchmarks.genie_throughput [--checkpoint PATH] [--seconds S] [--threads T]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import rate, write_results
from wm_envs.checkpoint import load_checkpoint, shipped_checkpoint
from wm_envs.models import ModelSpec, build_model
from wm_envs.models.genie import Genie


def load(checkpoint: str | None) -> tuple[Genie, str]:
    """The given checkpoint, else the shipped Grasp one, else a fresh ``small`` model (the
    speed does not depend on the weights)."""
    try:
        folder = checkpoint or shipped_checkpoint("genie", "grasp")
    except FileNotFoundError:
        model = build_model("genie", ModelSpec(image_size=64, state_dim=24, action_dim=4))
        return model.eval(), "fresh small model"
    return load_checkpoint(folder)[0], str(folder)


@torch.inference_mode()
def frame_rate(model: Genie, envs: int, steps: int, seconds: float) -> float:
    """Generated and decoded frames per second for ``envs`` envs in one batch."""
    model.maskgit_steps = steps
    generator = torch.Generator().manual_seed(0)
    context = {
        "image": torch.randint(0, 256, (envs, 1, 64, 64, 3), generator=generator, dtype=torch.uint8)
    }
    state = model.init_state(context)
    actions = torch.rand(8, envs, model.spec.action_dim, generator=generator) * 2 - 1
    counter = iter(range(10**9))

    def step() -> None:
        nonlocal state
        state = model.step(state, actions[next(counter) % 8])
        model.decode(state)

    calls = max(3, int(seconds * rate(step, 2, warmup=1)))
    return envs * rate(step, calls, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, source = load(args.checkpoint)
    default = model.config.maskgit_steps
    rows = []
    others = [(64, steps) for steps in (1, 2, 4, 8) if steps != default]
    for envs, steps in [(1, default), (16, default), (64, default), *others]:
        frames = frame_rate(model, envs, steps, args.seconds)
        rows.append(
            {"N": envs, "MaskGIT passes": steps, "frames/s": frames, "ms per frame": 1000 / frames}
        )
    notes = (
        f"Model: {source} ({sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{model.dynamics.tokens} tokens per frame). torch threads: "
        f"{torch.get_num_threads()}; measured {time.strftime('%Y-%m-%d')}."
    )
    write_results("genie_throughput", rows, notes)


if __name__ == "__main__":
    main()
