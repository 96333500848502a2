"""Training an agent in a learned simulator against training it in physics, on one machine.

python -m benchmarks.agent_training [--minutes 60] [--eval-every-s 60] [--episodes 10]

Two learners, one after the other, each under the same wall-clock cap:

* **Dreamer** (``wm_envs.agents.dreamer``, with the shipped ``dreamer-grasp``'s goal margin
  and seed) in the shipped RSSM's imagination, starting from
  windows of ``grasp/mixed-600-v0`` (collect it first:
  ``wm-envs collect --episodes 600 --dataset-id grasp/mixed-600-v0``);
* **SB3 PPO** in ``Phys-Grasp-v0`` (state observations).

Every ``--eval-every-s`` seconds of training each is evaluated closed loop on validation
seeds of ``Phys-Grasp-v0`` (8000 on; evaluation time is not counted as training). Reported:
imagined transitions/s beside PPO's physics steps/s, and the wall-clock and physics
interactions each took to reach 80% success, or where it stood at the cap. Dreamer's physics
interactions are the world model's training data (its card's count).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import wm_envs  # noqa: F401  (registers the env ids)
from benchmarks.common import RESULTS, write_results
from wm_envs.agents.dreamer import AGENT_FORMAT, DreamerConfig, DreamerRun
from wm_envs.assets import AGENTS, CHECKPOINTS
from wm_envs.checkpoint import read_unit_card
from wm_envs.evaluate import EvaluateConfig, run_episode, run_policy
from wm_envs.io import write_json

TARGET = 0.8
SEED = 8000  # validation seeds: the test seeds (7000 on) stay unseen


def dreamer_curve(minutes: float, eval_every_s: float, episodes: int, folder: Path) -> dict:
    """Dreamer's physics success against its training wall time."""
    shipped = read_unit_card(AGENTS / "dreamer-grasp", AGENT_FORMAT)["config"]
    config = DreamerConfig(
        world_model=str(CHECKPOINTS / "rssm-grasp"),
        out=str(folder),
        updates=10**9,
        save_every=10**9,
        **{key: shipped[key] for key in ("goal_margin", "margin_reward", "seed")},
    )
    run = DreamerRun(config)
    physics_steps = run.world_card["dataset"]["train_steps"]
    curve, trained = [], 0.0
    while trained < 60 * minutes:
        start = time.perf_counter()
        while time.perf_counter() - start < eval_every_s:
            run.update()
        trained += time.perf_counter() - start
        run.save()
        success = physics_success(str(folder), episodes)
        curve.append({"minutes": trained / 60, "updates": run.step, "success": success})
        print(f"dreamer {trained / 60:.1f} min, {run.step} updates: {success:.0%}", flush=True)
        if success >= TARGET:
            break
    transitions = run.step * config.starts * config.horizon
    return {"curve": curve, "rate": transitions / trained, "physics_steps": physics_steps}


def physics_success(policy: str, episodes: int) -> float:
    records = run_policy(
        EvaluateConfig(policy=policy, env="Phys-Grasp-v0", episodes=episodes, seed=SEED)
    )
    return float(np.mean([r["success"] for r in records]))


def ppo_curve(minutes: float, eval_every_s: float, episodes: int) -> dict:
    """PPO's physics success against its training wall time (and physics steps)."""
    env = gym.make("Phys-Grasp-v0", obs_mode="state")
    agent = PPO("MlpPolicy", env, seed=0, device="cpu")
    evaluation = gym.make("Phys-Grasp-v0", obs_mode="state")
    curve, trained, steps = [], 0.0, 0
    chunk = 2048
    while trained < 60 * minutes:
        start = time.perf_counter()
        while time.perf_counter() - start < eval_every_s:
            agent.learn(chunk, reset_num_timesteps=False)
            steps += chunk
        trained += time.perf_counter() - start
        policy = PPOPolicy(agent)
        success = np.mean(
            [run_episode(evaluation, policy, SEED + i)["success"] for i in range(episodes)]
        )
        curve.append({"minutes": trained / 60, "physics_steps": steps, "success": success})
        print(f"ppo {trained / 60:.1f} min, {steps} steps: {success:.0%}", flush=True)
        if success >= TARGET:
            break
    return {"curve": curve, "rate": steps / trained, "physics_steps": steps}


class PPOPolicy:
    """An SB3 agent as the ``reset()`` / ``obs -> action`` policy ``run_episode`` drives."""

    def __init__(self, agent: PPO) -> None:
        self.agent = agent

    def reset(self) -> None:
        """PPO's MlpPolicy keeps no memory."""

    def __call__(self, obs):
        return self.agent.predict(obs, deterministic=True)[0]


def summary(name: str, result: dict, unit: str) -> dict:
    reached = [point for point in result["curve"] if point["success"] >= TARGET]
    point = reached[0] if reached else max(result["curve"], key=lambda p: p["success"])
    return {
        "learner": name,
        "rate /s": result["rate"],
        "rate of": unit,
        "reached 80%": bool(reached),
        "minutes": point["minutes"],
        "best or first 80% success": point["success"],
        "physics steps": result["physics_steps"]
        if name.startswith("dreamer")
        else point["physics_steps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock cap per learner")
    parser.add_argument("--eval-every-s", type=float, default=60.0)
    parser.add_argument("--episodes", type=int, default=10, help="validation episodes per check")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="dreamer-bench-"))
    try:
        dreamer = dreamer_curve(args.minutes, args.eval_every_s, args.episodes, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ppo = ppo_curve(args.minutes, args.eval_every_s, args.episodes)
    rows = [
        summary("dreamer (in the RSSM)", dreamer, "imagined transitions"),
        summary("ppo (in physics)", ppo, "physics steps"),
    ]
    notes = (
        f"cap {args.minutes} min each; success on {args.episodes} validation seeds from {SEED} "
        f"every {args.eval_every_s} s of training; curves in agent_training_curves.json. Dreamer's "
        "physics steps are its world model's training data."
    )
    write_json(RESULTS / "agent_training_curves.json", {"dreamer": dreamer, "ppo": ppo})
    write_results("agent_training", rows, notes=notes)


if __name__ == "__main__":
    main()
