"""DeepVerse's batched RGB-D generation speed beside the RSSM's and Genie's, in one run.

One frame = ``step`` (one transition for N envs at once, taking the mode) and ``decode``
(the 64x64 frame and state vector; DeepVerse's also its depth map, the RSSM's and Genie's
RGB only: the shipped ones model no depth). DeepVerse runs twice: on Grasp it paints over a
static background, on Drive over the previous frame reprojected into the new view
(``background="warp"``, one more resampling per frame). Rows: each model at
N = 1, 16, 64, with the ratio to the 4 frames/s the DeepVerse paper reports on one A800
GPU. That ratio compares
different things: DeepVerse is a large video diffusion model generating frames many times
larger; this one has ~0.3M parameters and 64x64 frames. It says what a CPU-scale model of
the same shape buys, not that one is faster than the other.

    python -m benchmarks.deepverse_throughput [--seconds S] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.common import rate_for, write_results
from wm_envs.checkpoint import load_checkpoint, shipped_checkpoint
from wm_envs.models import ModelSpec, WorldModel, build_model

#: Frames per second of DeepVerse on one A800 GPU, from its paper.
DEEPVERSE_PUBLISHED_FPS = 4.0


def load(model: str, task: str) -> tuple[WorldModel, str]:
    """The shipped checkpoint of ``model`` on ``task``, else a fresh ``small`` model of the
    task's shapes (speed does not depend on the weights)."""
    try:
        return load_checkpoint(shipped_checkpoint(model, task))[0], f"shipped {model}-{task}"
    except FileNotFoundError:
        depth = model == "deepverse"
        spec = ModelSpec(image_size=64, state_dim=24, action_dim=4, depth=depth)
        return build_model(model, spec, task=task).eval(), f"fresh small {model}"


@torch.inference_mode()
def frame_rate(model: WorldModel, envs: int, seconds: float) -> float:
    """Generated and decoded frames per second for ``envs`` envs in one batch."""
    generator = torch.Generator().manual_seed(0)
    spec = model.spec
    context = {
        "image": torch.randint(
            0, 256, (envs, 1, 64, 64, 3), generator=generator, dtype=torch.uint8
        ),
        "state": model.state_mean.expand(envs, 1, -1).clone(),
    }
    if spec.depth:
        context["depth"] = 0.3 + torch.rand(envs, 1, 64, 64, 1, generator=generator)
    state = model.init_state(context)
    actions = torch.rand(8, envs, spec.action_dim, generator=generator) * 2 - 1
    counter = iter(range(10**9))

    def step() -> None:
        nonlocal state
        state = model.step(state, actions[next(counter) % 8])
        model.decode(state)

    return envs * rate_for(step, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, sources = [], []
    load_before = os.getloadavg()[0]
    pairs = (("deepverse", "grasp"), ("deepverse", "drive"), ("rssm", "grasp"), ("genie", "grasp"))
    for name, task in pairs:
        model, source = load(name, task)
        sources.append(f"{source} ({sum(p.numel() for p in model.parameters()):,} parameters)")
        for envs in (1, 16, 64):
            frames = frame_rate(model, envs, args.seconds)
            rows.append(
                {
                    "model": name,
                    "task": task,
                    "frame": "RGB-D + state" if model.spec.depth else "RGB + state",
                    "N": envs,
                    "frames/s": frames,
                    "ms per batch step": 1000 * envs / frames,
                    "x DeepVerse (A800, 4 frames/s)": frames / DEEPVERSE_PUBLISHED_FPS,
                }
            )
    notes = (
        f"Models: {'; '.join(sources)}. 64x64 frames; torch threads: {torch.get_num_threads()} "
        f"on a CPU shared with other jobs (1-minute load average {load_before:.1f} before the "
        f"run, {os.getloadavg()[0]:.1f} after: every rate falls as the load rises); measured "
        f"{time.strftime('%Y-%m-%d')}. The DeepVerse "
        "ratio sets a ~0.3M-parameter CPU model generating 64x64 RGB-D frames against the "
        "published large video diffusion model generating frames many times larger on an "
        "A800 GPU: the models differ in size and resolution, so the ratio is not a like-for-"
        "like speed-up."
    )
    write_results("deepverse_throughput", rows, notes)


if __name__ == "__main__":
    main()
