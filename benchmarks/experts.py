"""Success of the scripted expert and of a random policy on every Phys-* env (on each of its
engines), 100 seeds each.

python -m benchmarks.experts [--episodes N]
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import wm_envs
from benchmarks.common import env_label, write_results
from wm_envs.agents.scripted import ScriptedPolicy
from wm_envs.demo import policy_summary
from wm_envs.tasks import phys_envs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    seeds = list(range(args.episodes))
    rows = []
    for env_id, kwargs in phys_envs():
        with gym.make(env_id, obs_mode="state", **kwargs) as env:
            expert = policy_summary(env, wm_envs.make_expert(env), seeds)
            random = policy_summary(env, ScriptedPolicy(env, "random", seed=0), seeds)
        rows.append(
            {
                "env": env_label(env_id, kwargs),
                "episodes": args.episodes,
                "expert success": expert["success"],
                "expert return": expert["mean_return"],
                "random success": random["success"],
                "random return": random["mean_return"],
            }
        )
    write_results("experts", rows, notes=f"seeds 0-{args.episodes - 1}; obs_mode=state.")


if __name__ == "__main__":
    main()
