"""How far MuJoCo and PyBullet disagree on Grasp: expert success on each engine, and the
object-position divergence when PyBullet replays the MuJoCo expert's actions on the same seeds.

Replayed episodes run a fixed horizon (past success, the expert holds the object up) so
every seed contributes to every step of the curve.

    python -m benchmarks.sim2sim [--episodes N] [--steps T]
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import matplotlib
import numpy as np

import wm_envs
from benchmarks.common import RESULTS, write_results
from wm_envs.demo import policy_summary
from wm_envs.io import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ENV_ID = "Phys-Grasp-v0"
BACKENDS = ("mujoco", "pybullet")
OBJECT = slice(7, 10)  # object position in the Grasp state


def replay(seeds: list[int], steps: int) -> tuple[np.ndarray, float]:
    """Object distance (cm) between the engines per seed and step, ``[seeds, steps + 1]``, and
    how often the replayed actions lift the object in PyBullet too.

    The MuJoCo expert acts on MuJoCo; PyBullet receives the same action sequence open loop.
    """
    mujoco = gym.make(ENV_ID, backend="mujoco", obs_mode="state")
    pybullet = gym.make(ENV_ID, backend="pybullet", obs_mode="state")
    expert = wm_envs.make_expert(mujoco)
    distances = np.zeros((len(seeds), steps + 1))
    successes = 0
    for row, seed in enumerate(seeds):
        obs_m, _ = mujoco.reset(seed=seed)
        obs_p, _ = pybullet.reset(seed=seed)
        expert.reset()
        succeeded = False
        for t in range(steps + 1):
            distances[row, t] = 100 * np.linalg.norm(obs_m[OBJECT] - obs_p[OBJECT])
            if t < steps:
                action = expert(obs_m)
                obs_m, *_ = mujoco.step(action)
                obs_p, _, _, _, info = pybullet.step(action)
                succeeded = succeeded or info["is_success"]
        successes += succeeded
    mujoco.close()
    pybullet.close()
    return distances, successes / len(seeds)


def plot(distances: np.ndarray, path) -> None:
    """Mean, median and inter-quartile band of the divergence against the step, as a PNG."""
    steps = np.arange(distances.shape[1])
    low, median, high = np.percentile(distances, [25, 50, 75], axis=0)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.fill_between(steps, low, high, alpha=0.3, label="25-75%")
    ax.plot(steps, median, label="median")
    ax.plot(steps, distances.mean(axis=0), "--", label="mean")
    ax.set(
        xlabel="step (40 ms)",
        ylabel="object divergence (cm)",
        title=f"{ENV_ID}: MuJoCo vs PyBullet",
    )
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    seeds = list(range(args.episodes))
    success_rows = []
    for backend in BACKENDS:
        with gym.make(ENV_ID, backend=backend, obs_mode="state") as env:
            result = policy_summary(env, wm_envs.make_expert(env), seeds)
        success_rows.append({"engine": backend, "policy": "expert", "success": result["success"]})
    distances, replay_success = replay(seeds, args.steps)
    success_rows.append(
        {"engine": "pybullet", "policy": "MuJoCo expert's actions", "success": replay_success}
    )
    write_results("sim2sim_success", success_rows, notes=f"{ENV_ID}; seeds 0-{seeds[-1]}.")
    rows = [
        {
            "step": t,
            "mean divergence (cm)": float(distances[:, t].mean()),
            "median divergence (cm)": float(np.median(distances[:, t])),
            "90th percentile (cm)": float(np.percentile(distances[:, t], 90)),
        }
        for t in range(0, args.steps + 1, 5)
    ]
    plot(distances, RESULTS / "sim2sim.png")
    write_results(
        "sim2sim",
        rows,
        notes=f"{ENV_ID}; seeds 0-{seeds[-1]}; the MuJoCo expert's actions replayed open loop "
        "in PyBullet; object position distance between the engines. Plot: sim2sim.png.",
    )


if __name__ == "__main__":
    main()
