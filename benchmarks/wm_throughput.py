"""Steps/s of the learned vector env against the physics env, measured in the same run.

For N = 1, 16, 256, 1024 envs: ``WM-Grasp-v0`` stepped through ``gym.make_vec`` in
``latent`` mode (no decoding) and ``dict`` mode (decoded 64x64 images and state), and the
ratio to ``Phys-Grasp-v0`` in ``dict`` mode (one env; it renders every step). Every rate is the
best of three timings of ``--seconds / 3`` each. On a machine with CUDA the same table is
measured on the GPU too.

    python -m benchmarks.wm_throughput [--checkpoint PATH] [--seconds S]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch

import wm_envs  # noqa: F401
from benchmarks.common import rate, write_results

REPEATS = 3  # each rate is the best of three timings: this machine's neighbours come and go


def phys_rate(seconds: float) -> float:
    env = gym.make("Phys-Grasp-v0", obs_mode="dict")
    env.reset(seed=0)
    env.action_space.seed(0)

    def step():
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()

    count = max(50, int(seconds / REPEATS * rate(step, 50, warmup=5)))
    result = rate(step, count, repeats=REPEATS)
    env.close()
    return result


def vector_rate(
    num_envs: int, obs_mode: str, device: str, checkpoint: str | None, seconds: float
) -> float:
    envs = gym.make_vec(
        "WM-Grasp-v0",
        num_envs=num_envs,
        obs_mode=obs_mode,
        device=device,
        checkpoint=checkpoint,
        torch_obs=True,
    )
    envs.reset(seed=0)
    actions = torch.rand(8, num_envs, 4, device=envs.simulator.device) * 2 - 1
    counter = iter(range(10**9))

    def step():
        envs.step(actions[next(counter) % 8])
        if device == "cuda":
            torch.cuda.synchronize()

    calls = max(3, int(seconds / REPEATS * rate(step, 3, warmup=2)))
    return num_envs * rate(step, calls, warmup=2, repeats=REPEATS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    args = parser.parse_args()
    physics = phys_rate(args.seconds)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for num_envs in (1, 16, 256, 1024):
            latent = vector_rate(num_envs, "latent", device, args.checkpoint, args.seconds)
            images = vector_rate(num_envs, "dict", device, args.checkpoint, args.seconds)
            rows.append(
                {
                    "device": device,
                    "N": num_envs,
                    "latent steps/s": latent,
                    "latent / physics": latent / physics,
                    "dict steps/s": images,
                    "dict / physics": images / physics,
                }
            )
    notes = (
        f"Phys-Grasp-v0 (dict, 1 env) in the same run: {physics:.0f} steps/s. "
        f"torch threads: {torch.get_num_threads()}; measured {time.strftime('%Y-%m-%d')}."
    )
    write_results("wm_throughput", rows, notes)


if __name__ == "__main__":
    main()
