"""Soak: 10^6 learned-env steps and 10^5 physics steps under random and extreme actions.

Learned: ``WM-Grasp-v0`` vector envs of the shipped models, autoreset on: the RSSM in
``latent`` mode (N = 1024 for 900 steps, torch observations), the RSSM in ``dict`` mode
(N = 128 for 600 steps, numpy observations) and Genie in ``dict`` mode (N = 8 for 600 steps):
1,003,200 env steps. Physics: every ``Phys-*`` env on each of its engines in ``state`` mode
through ``gym.make``, 40,000 steps of ``Phys-Grasp-v0`` and 20,000 of each of the others:
100,000 steps.

Actions cycle through three kinds, a third of the steps each: uniform in [-1, 1]; corners
(every component -1 or +1); and beyond the box (components of magnitude 1.5 to 1000, either
sign), which every env must clip. Before its soak, each env is checked to clip: from the same
reset, an action beyond the box and the same action clipped must give the same observation.

Each run reports the non-finite values it saw in observations and rewards (there must be
none), and this process's resident memory (``VmRSS`` of ``/proc/self/status``) and peak
resident memory (``ru_maxrss``) after a warm-up of a fifth of its steps (past the first
autoreset) and at its end. Memory is flat when the resident memory grew by at most
``--tolerance`` MiB over the run. The command fails (exit status 1) when a check fails.

    python -m benchmarks.soak [--quick] [--tolerance MiB] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import wm_envs  # noqa: F401  (registers the env ids)
from benchmarks.common import RESULTS, env_label, write_results
from wm_envs.tasks import phys_envs

RANDOM, CORNERS, BEYOND = range(3)
COLUMNS = (
    "env",
    "env steps",
    "steps/s",
    "non-finite",
    "clips",
    "RSS start MiB",
    "RSS end MiB",
    "flat",
    "peak start MiB",
    "peak end MiB",
)


@dataclass(frozen=True)
class LearnedRun:
    """One soak of a ``WM-Grasp-v0`` vector env."""

    model: str
    obs_mode: str
    num_envs: int
    steps: int  # batched steps
    torch_obs: bool


LEARNED = (
    LearnedRun("rssm", "latent", 1024, 900, torch_obs=True),
    LearnedRun("rssm", "dict", 128, 600, torch_obs=False),
    LearnedRun("genie", "dict", 8, 600, torch_obs=False),
)
LEARNED_QUICK = (
    LearnedRun("rssm", "latent", 64, 20, torch_obs=True),
    LearnedRun("rssm", "dict", 8, 10, torch_obs=False),
    LearnedRun("genie", "dict", 2, 5, torch_obs=False),
)
PHYSICS_STEPS = {"Phys-Grasp-v0": 40_000}  # by env_label; every other physics env: 20,000
PHYSICS_QUICK_STEPS = 100


def memory_mib() -> tuple[float, float]:
    """This process's resident memory now and its peak so far, MiB (Linux)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(line.split()[1]) / 1024, peak_kib / 1024


def arrays(value) -> list[np.ndarray]:
    """Every array in an observation, reward or batch of them (dicts, tensors, scalars)."""
    if isinstance(value, dict):
        return [array for part in value.values() for array in arrays(part)]
    if isinstance(value, torch.Tensor):
        return [value.cpu().numpy()]
    return [np.asarray(value)]


def count_nonfinite(*values) -> int:
    """NaN and inf entries in the floating-point arrays of ``values``."""
    return sum(
        int(np.count_nonzero(~np.isfinite(array)))
        for value in values
        for array in arrays(value)
        if array.dtype.kind == "f"
    )


def same(first, second) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(arrays(first), arrays(second), strict=True))


def actions(rng: np.random.Generator, shape: tuple[int, ...], kind: int) -> np.ndarray:
    """A batch of actions of ``kind``: uniform in the box, its corners, or beyond it."""
    signs = rng.choice([-1.0, 1.0], shape)
    if kind == RANDOM:
        values = rng.uniform(-1.0, 1.0, shape)
    elif kind == CORNERS:
        values = signs
    else:
        values = signs * 10 ** rng.uniform(np.log10(1.5), 3.0, shape)
    return values.astype(np.float32)


def soak(step: Callable[[np.ndarray], list], shape: tuple[int, ...], steps: int) -> dict:
    """Call ``step(action)`` ``steps`` times under actions cycling through the three kinds;
    ``step`` returns the observations and rewards to check. Counts non-finite values and
    reads memory after a warm-up of a fifth of the steps and at the end."""
    rng = np.random.default_rng(0)
    warmup = steps // 5
    nonfinite = 0
    for index in range(steps):
        if index == warmup:
            rss_start, peak_start = memory_mib()
            start = time.perf_counter()
        nonfinite += count_nonfinite(*step(actions(rng, shape, index % 3)))
    elapsed = time.perf_counter() - start
    rss_end, peak_end = memory_mib()
    return {
        "non-finite": nonfinite,
        "RSS start MiB": rss_start,
        "RSS end MiB": rss_end,
        "peak start MiB": peak_start,
        "peak end MiB": peak_end,
        "steps/s": (steps - warmup) * np.prod(shape[:-1], dtype=int) / elapsed,
    }


def learned_row(run: LearnedRun) -> dict:
    """Soak one WM-Grasp-v0 vector env (after checking that it clips)."""
    envs = gym.make_vec(
        "WM-Grasp-v0",
        num_envs=run.num_envs,
        model=run.model,
        obs_mode=run.obs_mode,
        device="cpu",
        torch_obs=run.torch_obs,
    )
    shape = envs.action_space.shape
    clipped = clips(envs, shape)

    def step(action: np.ndarray) -> list:
        obs, reward, *_ = envs.step(action)
        return [obs, reward]

    result = soak(step, shape, run.steps)
    envs.close()
    return {
        "env": f"WM-Grasp-v0 ({run.model}, {run.obs_mode}, N={run.num_envs})",
        "env steps": run.steps * run.num_envs,
        "clips": clipped,
        **result,
    }


def clips(env, shape: tuple[int, ...]) -> bool:
    """Whether, from the same reset, an action beyond [-1, 1] and the same action clipped
    give the same observation; leaves ``env`` freshly reset."""
    beyond = actions(np.random.default_rng(1), shape, BEYOND)
    observed = []
    for action in (beyond, np.clip(beyond, -1.0, 1.0)):
        env.reset(seed=0)
        observed.append(env.step(action)[0])
    env.reset(seed=0)
    return same(*observed)


def physics_row(env_id: str, kwargs: dict, steps: int) -> dict:
    """Soak one physics env in ``state`` mode (after checking that it clips)."""
    env = gym.make(env_id, obs_mode="state", **kwargs)
    shape = env.action_space.shape
    clipped = clips(env, shape)

    def step(action: np.ndarray) -> list:
        obs, reward, terminated, truncated, _ = env.step(action)
        checked = [obs, reward]
        if terminated or truncated:
            checked.append(env.reset()[0])
        return checked

    result = soak(step, shape, steps)
    env.close()
    return {
        "env": env_label(env_id, kwargs),
        "env steps": steps,
        "clips": clipped,
        **result,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument(
        "--tolerance", type=float, default=16.0, help="MiB a run's resident memory may grow"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for soak.json/.md")
    args = parser.parse_args(argv)
    start, (rss_start, _) = time.perf_counter(), memory_mib()
    soaks = [partial(learned_row, run) for run in (LEARNED_QUICK if args.quick else LEARNED)]
    for env_id, kwargs in phys_envs():
        steps = PHYSICS_STEPS.get(env_label(env_id, kwargs), 20_000)
        steps = PHYSICS_QUICK_STEPS if args.quick else steps
        soaks.append(partial(physics_row, env_id, kwargs, steps))
    rows = []
    for run_soak in soaks:
        rows.append(run_soak())
        print(", ".join(f"{key} {value}" for key, value in rows[-1].items()), flush=True)
    for row in rows:
        row["flat"] = row["RSS end MiB"] - row["RSS start MiB"] <= args.tolerance
    rows = [{column: row[column] for column in COLUMNS} for row in rows]
    rss_end, peak_end = memory_mib()
    learned = sum(row["env steps"] for row in rows if row["env"].startswith("WM-"))
    physics = sum(row["env steps"] for row in rows) - learned
    passed = all(row["non-finite"] == 0 and row["clips"] and row["flat"] for row in rows)
    notes = (
        f"{learned:,} learned-env and {physics:,} physics steps in "
        f"{time.perf_counter() - start:.0f} s{' (--quick)' if args.quick else ''}; actions "
        f"cycle through uniform, corners and beyond the box (magnitudes to 1000). Process "
        f"memory: {rss_start:.0f} MiB resident at the start, {rss_end:.0f} MiB at the end, "
        f"{peak_end:.0f} MiB peak. 'flat': a run's resident memory grew by at most "
        f"{args.tolerance:g} MiB. Checks {'passed' if passed else 'FAILED'}; measured "
        f"{time.strftime('%Y-%m-%d')}."
    )
    write_results("soak", rows, notes, folder=args.out)
    if not passed:
        raise SystemExit("soak: a check failed (non-finite values, no clipping or memory growth)")


if __name__ == "__main__":
    main()
