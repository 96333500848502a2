"""Phys-Collapse-v0's two joint models side by side: how much of the building is left after
no action, one strike, random actions and the scripted expert, on the same seeds.

python -m benchmarks.collapse_joints [--episodes 50]

Per joint model and policy, over seeds 0 to N-1: the remaining height fraction at the
episode's end (height over the height at reset; success ends an episode at 0.4 or less), the
success rate, the share of joints broken and the episode length; in the notes, each
model's steps/s with no action (best of 3 timings, in the same run). "one strike" is the
expert until its first blow at a pillar ends, then no action to the time limit: whether a
single blow fails the building in a cascade. Writes ``results/collapse_joints.{json,md}``.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import wm_envs
from benchmarks.common import rate_for, write_results
from wm_envs.agents.scripted import ScriptedPolicy
from wm_envs.tasks import collapse


class NoAction:
    """Leave the building alone: the carriage holds still, the head rests retracted."""

    def reset(self) -> None:
        pass

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros(4, np.float32)


class OneStrike(NoAction):
    """The scripted expert until its first strike ends, then no action."""

    def __init__(self, env: gym.Env) -> None:
        self.expert = wm_envs.make_expert(env)

    def reset(self) -> None:
        self.expert.reset()
        self.struck = False

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.struck:
            return super().__call__(obs)
        action = self.expert(obs)
        self.struck = self.expert.phase == "retract"
        return action


def episode(env: gym.Env, policy, seed: int) -> dict:
    """One episode: the height fraction left, success, share of joints broken, length."""
    state, info = env.reset(seed=seed)
    joints = len(info["physics"]["welds"])
    policy.reset()
    steps, done, success = 0, False, False
    while not done:
        state, _, terminated, truncated, info = env.step(policy(state))
        steps += 1
        success = success or info["is_success"]
        done = terminated or truncated
    return {
        "left": float(state[8] / state[9]),
        "success": success,
        "broken": float(state[10]) / joints,
        "steps": steps,
    }


def idle_rate(env: gym.Env) -> float:
    """Steps/s of ``env`` left alone from seed 0 (past the time limit), best of 3 timings."""
    env.reset(seed=0)
    rest = np.zeros(4, np.float32)
    return rate_for(lambda: env.unwrapped.step(rest), seconds=3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args()
    seeds = range(args.episodes)
    rows, speed = [], {}
    for joint_model in collapse.JOINT_MODELS:
        with gym.make("Phys-Collapse-v0", obs_mode="state", joint_model=joint_model) as env:
            policies = {
                "none": NoAction(),
                "one strike": OneStrike(env),
                "random": ScriptedPolicy(env, "random", seed=0),
                "expert": wm_envs.make_expert(env),
            }
            for name, policy in policies.items():
                records = [episode(env, policy, seed) for seed in seeds]
                left = np.array([r["left"] for r in records])
                rows.append(
                    {
                        "joint model": joint_model,
                        "policy": name,
                        "height left": float(left.mean()),
                        "height left (max)": float(left.max()),
                        "success": float(np.mean([r["success"] for r in records])),
                        "joints broken": float(np.mean([r["broken"] for r in records])),
                        "steps": float(np.mean([r["steps"] for r in records])),
                    }
                )
            speed[joint_model] = idle_rate(env)
    material = collapse.ViscoelasticJoint()
    notes = (
        f"seeds 0-{args.episodes - 1}, obs_mode=state; height left: at the episode's end, "
        "mean and worst seed; success: height left <= 0.4 (ends the episode). viscoelastic: "
        f"E = {material.young_modulus:g} Pa, eta = {material.viscosity:g} Pa s, "
        f"eps_critical = {material.critical_strain:g}, L = {material.gauge_length:g} m. "
        f"steps/s with no action: weld {speed['weld']:.0f}, viscoelastic "
        f"{speed['viscoelastic']:.0f} ({speed['weld'] / speed['viscoelastic']:.1f}x slower)."
    )
    write_results("collapse_joints", rows, notes=notes)


if __name__ == "__main__":
    main()
