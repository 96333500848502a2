"""How far is a Collapse episode's outcome decided by what can be seen?

python -m benchmarks.collapse_hidden [--episodes 20] [--redraws 16] [--split test]

A weld's breaking strength is drawn per weld at reset and is in no observation. ``compare``
asks a learned simulator whether an episode succeeds from its first frame and its actions
alone, so no model can beat the agreement that those alone allow. This benchmark plays
``compare``'s own held-out episodes (even: the noisy expert, odd: smooth random actions), then
replays each one's actions open loop in the same building with its weld strengths drawn
again (``options={"strength_seed": k}``), ``--redraws`` times. Per episode, ``p`` is the share
of the draws (the original among them) that succeed; a predictor that sees everything but the
strengths agrees with the outcome at best ``max(p, 1 - p)`` of the time on average. Reported
beside it, per policy and for all episodes: the constant prediction's agreement, the share of
episodes whose outcome no redraw changes, and a check that replaying with the original
strengths reproduces the episode. Writes ``results/collapse_hidden.{json,md}``.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import wm_envs  # noqa: F401  (registers the env ids)
from benchmarks.common import write_results
from wm_envs.eval.compare import held_out_episodes, split_seeds


def replay(env: gym.Env, seed: int, actions: np.ndarray, strength_seed: int | None) -> bool:
    """Whether ``actions`` played open loop from seed ``seed``'s reset succeed, with the weld
    strengths of ``strength_seed`` (None: the seed's own)."""
    env.reset(seed=seed, options={"strength_seed": strength_seed})
    for action in actions:
        _, _, terminated, truncated, info = env.step(action)
        if info["is_success"]:
            return True
        if terminated or truncated:
            break
    return False


def summary(name: str, outcomes: np.ndarray, draws: np.ndarray, replayed: np.ndarray) -> dict:
    """One table row from the original outcomes [N], every draw's outcome [N, K+1] (the
    original first) and the replays with the original strengths [N]."""
    share = draws.mean(1)  # p per episode
    constant = max(outcomes.mean(), 1 - outcomes.mean())
    return {
        "episodes": name,
        "count": len(outcomes),
        "success": float(outcomes.mean()),
        "constant_agreement": float(constant),
        "best_agreement": float(np.maximum(share, 1 - share).mean()),
        "decided": float(np.mean((share == 0) | (share == 1))),
        "replay_reproduces": float(np.mean(replayed == outcomes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--redraws", type=int, default=16)
    parser.add_argument("--split", default="test", help="compare's seed split: val or test")
    parser.add_argument("--noise", type=float, default=0.3, help="compare's expert noise")
    args = parser.parse_args()
    first = split_seeds(args.split, args.episodes)[0]
    episodes = held_out_episodes("collapse", first, args.episodes, args.noise)
    outcomes, draws, replayed = [], [], []
    with gym.make("Phys-Collapse-v0", obs_mode="state") as env:
        for episode in episodes:
            seed, actions = episode["seed"], episode["action"]
            outcome = bool(episode["success"].any())
            redrawn = [
                replay(env, seed, actions, 1_000_003 * k + seed) for k in range(1, 1 + args.redraws)
            ]
            outcomes.append(outcome)
            draws.append([outcome, *redrawn])
            replayed.append(replay(env, seed, actions, None))
            print(f"seed {seed} ({episode['policy']}): {outcome}, redrawn {np.mean(redrawn):.2f}")
    outcomes, draws, replayed = np.array(outcomes), np.array(draws), np.array(replayed)
    kinds = np.array([episode["policy"] for episode in episodes])
    rows = [
        summary(kind, outcomes[kinds == kind], draws[kinds == kind], replayed[kinds == kind])
        for kind in ("expert", "random")
    ]
    rows.append(summary("all", outcomes, draws, replayed))
    seeds = f"seeds {first}-{first + args.episodes - 1} ({args.split})"
    notes = (
        f"Phys-Collapse-v0, compare's episodes on {seeds}, each replayed open loop with its weld "
        f"strengths drawn again {args.redraws} times. best_agreement: the most any predictor "
        f"that sees all but the strengths can agree with the outcome, on average; "
        f"constant_agreement: always predicting the commoner outcome; decided: episodes no "
        f"redraw changes."
    )
    write_results("collapse_hidden", rows, notes=notes)


if __name__ == "__main__":
    main()
