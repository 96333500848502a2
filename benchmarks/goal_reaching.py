"""Goal reaching on Phys-Grasp-v0 by planning in a world model's latent toward a goal frame.

For each seed, a goal gripper position is drawn above the table, at least 4 cm from the start;
the goal *observation* is the frame a proportional controller sees on reaching it from the
same seed's start (fingers open, the object untouched). The planner in each model named
(``agents.planner.LatentPlanner`` with ``set_goal``) then acts on the real env from that
start, re-anchored on the real frames every step, minimising the distance of the model's
features to the goal frame's -- it is never told the position. An episode succeeds if the
gripper ends within ``--tolerance`` of the goal. Beside it, on the same seeds and goals:
standing still (zero actions) and smooth random actions; the proportional controller that
made the goal frames is the ceiling.

    python -m benchmarks.goal_reaching [--models jepa rssm] [--checkpoint jepa=PATH]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path

import gymnasium as gym
import numpy as np

import wm_envs  # noqa: F401  (registers the env ids)
from benchmarks.common import RESULTS, write_results
from wm_envs.agents.planner import LatentPlanner, PlannerConfig
from wm_envs.checkpoint import load_checkpoint, shipped_checkpoint
from wm_envs.data.collect import SmoothRandomPolicy
from wm_envs.tasks.grasp import GRIPPER_START, MAX_DELTA

#: Goal gripper positions are drawn in this box (metres): above the tallest object, so
#: reaching them never touches it; and at least ``MIN_TRAVEL`` from the gripper's start.
GOAL_LOW = np.array([-0.05, -0.05, 0.17])
GOAL_HIGH = np.array([0.05, 0.05, 0.21])
MIN_TRAVEL = 0.04


def draw_goal(rng: np.random.Generator) -> np.ndarray:
    """A goal gripper position [3] in the box, at least ``MIN_TRAVEL`` from the start."""
    while True:
        goal = rng.uniform(GOAL_LOW, GOAL_HIGH)
        if np.linalg.norm(goal - GRIPPER_START) >= MIN_TRAVEL:
            return goal


def reach_action(state: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """The proportional controller: move the gripper toward ``goal`` [3], fingers open."""
    move = np.clip((goal - state[:3]) / MAX_DELTA, -1.0, 1.0)
    return np.append(move, -1.0).astype(np.float32)


def goal_frame(env: gym.Env, seed: int, goal: np.ndarray, steps: int) -> dict:
    """The observation on reaching ``goal`` from the seed's start (the controller's last)."""
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        obs, *_ = env.step(reach_action(obs["state"], goal))
    return obs


def run_policy(env: gym.Env, seed: int, policy, steps: int) -> np.ndarray:
    """The gripper position [3] after ``steps`` steps of ``policy`` (obs -> action)."""
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        obs, *_ = env.step(policy(obs))
    return obs["state"][:3]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["jepa", "rssm"])
    parser.add_argument("--checkpoint", action="append", default=[], help="MODEL=PATH")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7000, help="first reset seed (test: 7000+)")
    parser.add_argument("--steps", type=int, default=25, help="control steps per episode")
    parser.add_argument("--tolerance", type=float, default=0.02, help="success radius, m")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    given = dict(item.split("=", 1) for item in args.checkpoint)
    folders = {name: given.get(name) or shipped_checkpoint(name, "grasp") for name in args.models}
    config = replace(PlannerConfig(), samples=args.samples, horizon=args.horizon, context=2)
    rng = np.random.default_rng(args.seed)
    names = [f"planner in {name}" for name in args.models] + ["still", "random", "controller"]
    distances: dict[str, list[float]] = {name: [] for name in names}
    with gym.make("Phys-Grasp-v0", obs_mode="dict") as env:
        planners = {}
        for name, folder in folders.items():
            model, _, _ = load_checkpoint(folder, "cpu")
            planners[f"planner in {name}"] = LatentPlanner(model.eval(), config, env.action_space)
        for seed in range(args.seed, args.seed + args.episodes):
            goal = draw_goal(rng)
            goal_obs = goal_frame(env, seed, goal, args.steps)
            for planner in planners.values():
                planner.reset()
                planner.set_goal(goal_obs)
            policies = {
                **planners,
                "still": lambda obs: np.array([0, 0, 0, -1], np.float32),
                "random": SmoothRandomPolicy(env.action_space, np.random.default_rng(seed)),
                "controller": lambda obs, goal=goal: reach_action(obs["state"], goal),
            }
            for name, policy in policies.items():
                reached = run_policy(env, seed, policy, args.steps)
                distances[name].append(float(np.linalg.norm(reached - goal)))
            print(
                f"seed {seed}: "
                + ", ".join(f"{k} {100 * v[-1]:.1f} cm" for k, v in distances.items())
            )
    rows = [
        {
            "policy": name,
            "success_rate": float(np.mean(np.array(values) < args.tolerance)),
            "final_distance_cm_mean": round(100 * float(np.mean(values)), 2),
            "final_distance_cm_median": round(100 * float(np.median(values)), 2),
        }
        for name, values in distances.items()
    ]
    checkpoints = ", ".join(f"{name}: {folder}" for name, folder in folders.items())
    notes = (
        f"Phys-Grasp-v0, seeds {args.seed}-{args.seed + args.episodes - 1}; {args.steps} steps; "
        f"success: gripper within {100 * args.tolerance:g} cm of the goal at the end; "
        f"checkpoints {checkpoints}; planner {asdict(config)}; wall time "
        f"{time.perf_counter() - started:.0f} s. Command: python -m benchmarks.goal_reaching "
        f"--models {' '.join(args.models)} --episodes {args.episodes} --seed {args.seed}"
    )
    write_results("goal_reaching", rows, notes, args.out)


if __name__ == "__main__":
    main()
