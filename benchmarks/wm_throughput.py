"""Steps/s of the learned env against the physics env, like for like, in the same run.

Two pairings, each side doing the same kind of work:

* ``WM-<Task>-v0`` in obs_mode ``latent`` (no decoding) against ``Phys-<Task>-v0`` in ``state``
  (no rendering);
* ``WM-<Task>-v0`` in ``dict`` (decoded 64x64 image and state) against ``Phys-<Task>-v0`` in
  ``dict`` (rendered 64x64 image and state).

Each pairing is measured for one env (``gym.make``) and for N envs through Gymnasium's vector
envs: the physics as ``gym.make_vec`` with ``vectorization_mode="sync"`` (N envs in this
process) and ``"async"`` (N worker processes, started by forkserver: EGL contexts do not
survive ``fork``) for N = 1, 2, 16; the learned env as ``gym.make_vec(num_envs=N)`` (one
batched model call) for N = 1, 2, 16, 256, 1024. The ratio is to the faster of sync and async
at the same N; past N = 16 (more processes than a small machine has cores) it is to the best
physics rate of the same mode at any N. Both sides take numpy actions and return numpy
observations. Every rate is the best of three timings of ``--seconds / 3`` each. On a machine
with CUDA, the learned rows are measured on the GPU too. The notes add the ratio of the latent
learned env at N = 256 to the physics in dict mode (what a user of images would otherwise run).
Results go to ``wm_throughput`` (Grasp) or ``wm_throughput_<task>``.

    python -m benchmarks.wm_throughput [--task grasp] [--model rssm] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import gymnasium as gym
import torch

import wm_envs  # noqa: F401  (registers the env ids)
from benchmarks.common import RESULTS, rate_for, write_results
from wm_envs.tasks import TASKS

#: (learned obs_mode, physics obs_mode): the two like-for-like pairings.
PAIRINGS = (("latent", "state"), ("dict", "dict"))
PHYSICS_SIZES = (1, 2, 16)
LEARNED_SIZES = (1, 2, 16, 256, 1024)


def env_rate(env: gym.Env, seconds: float) -> float:
    """Steps/s of one env under random actions, resets included."""
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(8)]
    counter = itertools.count()

    def step() -> None:
        *_, terminated, truncated, _ = env.step(actions[next(counter) % 8])
        if terminated or truncated:
            env.reset()

    result = rate_for(step, seconds)
    env.close()
    return result


def vector_rate(envs: gym.vector.VectorEnv, seconds: float) -> float:
    """Env steps/s of a vector env under random actions (it resets its envs itself)."""
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(8)]
    counter = itertools.count()

    def step() -> None:
        envs.step(actions[next(counter) % 8])

    result = envs.num_envs * rate_for(step, seconds)
    envs.close()
    return result


def physics_rates(task: str, seconds: float) -> dict[tuple[str, str, int], float]:
    """Phys-<Task>-v0 steps/s keyed by (obs_mode, "single" | "sync" | "async", N)."""
    rates = {}
    env_id = f"Phys-{TASKS[task].name}-v0"
    for _, mode in PAIRINGS:
        rates[mode, "single", 1] = env_rate(gym.make(env_id, obs_mode=mode), seconds)
        print(f"Phys {mode} gym.make: {rates[mode, 'single', 1]:.0f} steps/s", flush=True)
        for num_envs in PHYSICS_SIZES:
            for vectorization in ("sync", "async"):
                envs = gym.make_vec(
                    env_id,
                    num_envs=num_envs,
                    vectorization_mode=vectorization,
                    vector_kwargs={"context": "forkserver"} if vectorization == "async" else {},
                    obs_mode=mode,
                )
                measured = rates[mode, vectorization, num_envs] = vector_rate(envs, seconds)
                print(
                    f"Phys {mode} {vectorization} N={num_envs}: {measured:.0f} steps/s", flush=True
                )
    return rates


def learned_rows(
    task: str, physics: dict, device: str, model: str, checkpoint: str | None, seconds: float
) -> list[dict]:
    """One row per (N, pairing) for the learned env on ``device``, with its ratio."""
    rows = []
    env_id = f"WM-{TASKS[task].name}-v0"
    settings = {"model": model, "checkpoint": checkpoint, "device": device}
    for num_envs in (None, *LEARNED_SIZES):  # None: one env through gym.make
        for learned_mode, physics_mode in PAIRINGS:
            if num_envs is None:
                env = gym.make(env_id, obs_mode=learned_mode, **settings)
                learned = env_rate(env, seconds)
                sync, asynchronous = physics[physics_mode, "single", 1], None
            else:
                envs = gym.make_vec(env_id, num_envs=num_envs, obs_mode=learned_mode, **settings)
                learned = vector_rate(envs, seconds)
                sync = physics.get((physics_mode, "sync", num_envs))
                asynchronous = physics.get((physics_mode, "async", num_envs))
            print(
                f"WM {learned_mode} N={num_envs or 1} {device}: {learned:.0f} steps/s", flush=True
            )
            same_n = sync is not None
            if same_n:
                baseline = max(sync, asynchronous or 0.0)
            else:
                baseline = max(v for (m, _, _), v in physics.items() if m == physics_mode)
            rows.append(
                {
                    "N": "1 (gym.make)" if num_envs is None else num_envs,
                    "device": device,
                    "WM mode": learned_mode,
                    "WM steps/s": learned,
                    "Phys mode": physics_mode,
                    "Phys sync steps/s": sync,
                    "Phys async steps/s": asynchronous,
                    "WM / Phys": learned / baseline,
                    "ratio to": "same N" if same_n else "best Phys at any N",
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="grasp", choices=sorted(TASKS))
    parser.add_argument("--model", default="rssm", help="the learned simulator")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    physics = physics_rates(args.task, args.seconds)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        rows += learned_rows(args.task, physics, device, args.model, args.checkpoint, args.seconds)
    name = TASKS[args.task].name
    latent_256 = next(r["WM steps/s"] for r in rows if r["N"] == 256 and r["WM mode"] == "latent")
    best_dict = max(v for (mode, _, _), v in physics.items() if mode == "dict")
    notes = (
        f"Phys-{name}-v0 against WM-{name}-v0 ({args.model}, "
        f"{args.checkpoint or 'shipped checkpoint'}); the N = '1 (gym.make)' rows compare "
        f"single envs, the Phys sync column holding the physics env's rate. Async vector envs "
        f"use forkserver workers. torch threads: {torch.get_num_threads()}; run took "
        f"{time.perf_counter() - start:.0f} s; measured {time.strftime('%Y-%m-%d')}. "
        f"WM latent at N = 256 ({latent_256:.0f} steps/s) against the best physics dict rate "
        f"({best_dict:.0f} steps/s): {latent_256 / best_dict:.1f}x."
    )
    results = "wm_throughput" if args.task == "grasp" else f"wm_throughput_{args.task}"
    write_results(results, rows, notes, folder=args.out)


if __name__ == "__main__":
    main()
