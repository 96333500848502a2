"""How far is a Collapse episode's outcome decided by what can be seen?

python -m benchmarks.collapse_hidden [--episodes 20] [--redraws 16] [--split test]

A weld's breaking strength is drawn per weld at reset and is in no observation. ``compare``
asks a learned simulator whether an episode succeeds from real frames up to a start (the first
frame, or ``compare``'s mid-episode start) and the actions after it, so no model can beat the
agreement that those allow. This benchmark plays ``compare``'s own held-out episodes (even: the
noisy expert, odd: smooth random actions), then replays each one's actions open loop,
``--redraws`` times, with the strengths of the welds still intact at the start drawn again
(``redraw_strengths``: the prior, above the most each weld has carried). Per episode, ``p`` is
the share of the draws (the original among them) that succeed after the start; a predictor
that knows everything but the strengths agrees with the outcome at best ``max(p, 1 - p)`` of
the time on average. Reported beside it, per start and policy: the constant prediction's
agreement, the share of episodes whose outcome no redraw changes, and a check that replaying
with the original strengths reproduces the episode. Writes ``results/collapse_hidden.{json,md}``.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import wm_envs  # noqa: F401  (registers the env ids)
from benchmarks.common import write_results
from wm_envs.eval.compare import CompareConfig, held_out_episodes, mid_episode_start, split_seeds
from wm_envs.tasks import TASKS

#: ``compare``'s open-loop horizon: a mid-episode start leaves at least this many steps.
HORIZON = CompareConfig().horizon


def replay(
    env: gym.Env, seed: int, actions: np.ndarray, start: int, strength_seed: int | None
) -> bool:
    """Whether ``actions`` played open loop from seed ``seed``'s reset succeed at or after
    step ``start``, where the intact welds' strengths are drawn again from ``strength_seed``
    (None: kept)."""
    env.reset(seed=seed)
    for step, action in enumerate(actions):
        if step == start and strength_seed is not None:
            env.unwrapped.redraw_strengths(strength_seed)
        _, _, terminated, truncated, info = env.step(action)
        if info["is_success"]:
            return step >= start
        if terminated or truncated:
            break
    return False


def summary(
    start: str, policy: str, outcomes: np.ndarray, draws: np.ndarray, replayed: np.ndarray
) -> dict:
    """One table row from the original outcomes [N], every draw's outcome [N, K+1] (the
    original first) and the replays with the original strengths [N]."""
    share = draws.mean(1)  # p per episode
    constant = max(outcomes.mean(), 1 - outcomes.mean())
    return {
        "start": start,
        "episodes": policy,
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
    trigger = slice(*TASKS["collapse"].start_trigger)
    starts = {
        "first_frame": [0] * len(episodes),
        "mid_episode": [mid_episode_start(e["state"], trigger, HORIZON) for e in episodes],
    }
    kinds = np.array([episode["policy"] for episode in episodes])
    rows = []
    with gym.make("Phys-Collapse-v0", obs_mode="state") as env:
        for name, at in starts.items():
            outcomes, draws, replayed = [], [], []
            for episode, start in zip(episodes, at, strict=True):
                seed, actions = episode["seed"], episode["action"]
                outcome = bool(episode["success"][start:].any())
                redraws = range(1, 1 + args.redraws)
                redrawn = [replay(env, seed, actions, start, 1_000_003 * k + seed) for k in redraws]
                outcomes.append(outcome)
                draws.append([outcome, *redrawn])
                replayed.append(replay(env, seed, actions, start, None))
                print(f"{name} {seed} ({episode['policy']}): {outcome}, {np.mean(redrawn):.2f}")
            outcomes, draws, replayed = np.array(outcomes), np.array(draws), np.array(replayed)
            for kind in ("expert", "random"):
                chosen = kinds == kind
                rows.append(summary(name, kind, outcomes[chosen], draws[chosen], replayed[chosen]))
            rows.append(summary(name, "all", outcomes, draws, replayed))
    seeds = f"seeds {first}-{first + args.episodes - 1} ({args.split})"
    notes = (
        f"Phys-Collapse-v0, compare's episodes on {seeds}, each replayed open loop with the "
        f"strengths of the welds intact at the start drawn again {args.redraws} times. "
        f"best_agreement: the most any predictor that sees all but the strengths can agree "
        f"with the outcome after the start, on average; "
        f"constant_agreement: always predicting the commoner outcome; decided: episodes no "
        f"redraw changes."
    )
    write_results("collapse_hidden", rows, notes=notes)


if __name__ == "__main__":
    main()
