"""Latent steps/s of every learned simulator of a task, side by side in one run.

Each model runs as ``gym.make_vec("WM-<Task>-v0", num_envs=N, model=M, obs_mode="latent")``
(one batched model call per step, numpy actions in and observations out, autoresets
included) for N = 1, 16, 256, 1024; each rate is the best of three timings. Ratios are to the
RSSM at the same N. A model is measured from ``--checkpoint MODEL=PATH`` or its shipped
checkpoint; models that serve no latent observation are skipped.

    python -m benchmarks.latent_speed [--task grasp] [--models rssm jepa] [--seconds 3]
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import wm_envs  # noqa: F401  (registers the env ids)
from benchmarks.common import RESULTS, write_results
from benchmarks.wm_throughput import vector_rate
from wm_envs.checkpoint import shipped_checkpoint
from wm_envs.tasks import TASKS

SIZES = (1, 16, 256, 1024)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="grasp", choices=sorted(TASKS))
    parser.add_argument("--models", nargs="+", default=["rssm", "jepa", "symbolic", "genie"])
    parser.add_argument("--checkpoint", action="append", default=[], help="MODEL=PATH")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    args = parser.parse_args(argv)
    folders = dict(item.split("=", 1) for item in args.checkpoint)
    env_id = f"WM-{TASKS[args.task].name}-v0"
    rates: dict[str, dict[int, float]] = {}
    for model in args.models:
        try:
            folder = folders.get(model) or str(shipped_checkpoint(model, args.task))
            gym.make_vec(
                env_id, num_envs=1, model=model, checkpoint=folder, obs_mode="latent"
            ).close()
        except (FileNotFoundError, ValueError) as error:
            print(f"skipped {model}: {error}")
            continue
        rates[model] = {}
        for num_envs in SIZES:
            envs = gym.make_vec(
                env_id, num_envs=num_envs, model=model, checkpoint=folder, obs_mode="latent"
            )
            rates[model][num_envs] = vector_rate(envs, args.seconds)
            print(f"{model} N={num_envs}: {rates[model][num_envs]:.0f} steps/s", flush=True)
    reference = rates.get("rssm")
    rows = [
        {
            "model": model,
            **{f"N={n} steps/s": rate for n, rate in by_size.items()},
            **({f"N={n} / rssm": by_size[n] / reference[n] for n in SIZES} if reference else {}),
        }
        for model, by_size in rates.items()
    ]
    notes = (
        f"{env_id}, obs_mode latent, gym.make_vec(num_envs=N), CPU; best of three timings of "
        f"{args.seconds / 3:.1f} s. Command: python -m benchmarks.latent_speed --task {args.task}"
    )
    write_results(
        "latent_speed" if args.task == "grasp" else f"latent_speed_{args.task}",
        rows,
        notes,
        RESULTS,
    )


if __name__ == "__main__":
    main()
