"""Re-anchoring a learned env on its physics shadow: drift at 100 steps against the period N.

For each seed of the test split (``SPLITS["test"]``: 100000 on), ``Phys-<Task>-v0`` plays one
episode as ``wm-envs compare`` does (``held_out_episodes``: even seeds a noisy expert, odd
ones smooth random actions). ``WM-<Task>-v0`` with ``resync_every=N`` (and ``resync_weight=w``)
is reset with that seed, so its shadow replays that physics episode, and stepped with the same
actions; N = inf is the plain env started from the same first frame (open loop). Every N and
w sees the same seeds and actions. Over the episodes whose physics runs ``--step`` (100)
steps or more, the table reports:

* the drift: the task's tracked errors (``TaskSpec.tracked``; Drive: the car's position in cm
  and its heading) of the model's prediction at ``--step`` against physics, taken before that
  step's re-anchoring (``info["predicted_state"]``), i.e. min(N, step) steps after the last
  real state the model saw: the worst point of a resync cycle. The RSSM's posterior takes the
  real state vector as its own, so the state reported on a re-anchoring step is exact and
  would make any N dividing 100 look perfect;
* beside it the copy baseline: that last real state, held;
* the mean of each tracked error of the reported observations over steps 1 to ``--step``
  (after re-anchoring: what a user of the env sees);
* the cut of the drift against open loop, and the env's steps/s over these rollouts (obs_mode
  "state", resets included) beside the physics twin's while it played the episodes (dict
  mode: what a shadow renders every step), measured in the same run.

A learned termination does not stop a rollout: it follows the physics episode. The episodes
that run ``--step`` steps are fewer than the seeds (Drive: most smooth random ones crash
early), so the default 80 seeds give about 20.

    OMP_NUM_THREADS=1 python -m benchmarks.resync [--task drive] [--episodes 80] [--step 100]
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import wm_envs  # noqa: F401  (registers the env ids)
from benchmarks.common import RESULTS, write_results
from wm_envs.eval.compare import SPLITS, held_out_episodes
from wm_envs.tasks import TASKS, tracked_errors

#: (resync_every, resync_weight) rows: None = open loop. The last is the issue's example of a
#: gentle injection (0.1 of the truth every 50 steps).
SETTINGS = ((1, 1.0), (5, 1.0), (10, 1.0), (25, 1.0), (50, 1.0), (None, 1.0), (10, 0.5), (50, 0.1))


def rollout(env: gym.Env, episode: dict, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Replay ``steps`` of the episode's actions; the state vectors [steps, S] the model
    predicted before any re-anchoring, and those it reported."""
    if env.unwrapped.shadow is None:
        first = {key: episode[key][0] for key in ("image", "state")}
        obs, _ = env.reset(options={"observation": first})
    else:
        obs, _ = env.reset(seed=episode["seed"])
    if not np.allclose(obs, episode["state"][0], atol=1e-5):
        raise RuntimeError(f"seed {episode['seed']}: the learned env started elsewhere")
    predicted, reported = [], []
    for action in episode["action"][:steps]:
        obs, _, _, _, info = env.step(action)
        predicted.append(info.get("predicted_state", obs))
        reported.append(obs)
    shadow = env.unwrapped.shadow
    if shadow is not None and not np.allclose(
        shadow.unwrapped.state_vector(), episode["state"][steps], atol=1e-5
    ):
        raise RuntimeError(f"seed {episode['seed']}: the shadow left the recorded episode")
    return np.stack(predicted), np.stack(reported)


def drift_row(
    task: str,
    env: gym.Env,
    episodes: list[dict],
    step: int,
    every: int | None,
) -> dict[str, float]:
    """Mean tracked errors at ``step`` (before re-anchoring) and of the copy of the last real
    state seen, and the mean errors over steps 1 to ``step``, over ``episodes``; and the env's
    steps/s over these rollouts (resets included)."""
    anchor = 0 if every is None else (step - 1) // every * every  # the last real state seen
    errors: dict[str, list[float]] = {}
    seconds = 0.0
    for episode in episodes:
        started = time.perf_counter()
        predicted, reported = rollout(env, episode, step)
        seconds += time.perf_counter() - started
        truth = episode["state"]
        at_step = tracked_errors(task, predicted[-1:], truth[step : step + 1])
        copy = tracked_errors(task, truth[anchor : anchor + 1], truth[step : step + 1])
        mean = tracked_errors(task, reported, truth[1 : step + 1])
        for key in at_step:
            errors.setdefault(f"{key}_{step}", []).append(float(at_step[key][0]))
            errors.setdefault(f"copy_{key}_{step}", []).append(float(copy[key][0]))
            errors.setdefault(f"mean_{key}_1-{step}", []).append(float(mean[key].mean()))
    row = {key: round(float(np.mean(values)), 3) for key, values in errors.items()}
    return row | {"steps_per_s": round(len(episodes) * step / seconds, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="drive", choices=sorted(TASKS))
    parser.add_argument("--model", default="rssm")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped one")
    parser.add_argument("--episodes", type=int, default=80, help="seeds played")
    parser.add_argument("--step", type=int, default=100, help="the episode step drift is read at")
    parser.add_argument("--expert-noise", type=float, default=0.3)
    parser.add_argument("--out", default=str(RESULTS), help="folder of the JSON and table")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    spec = TASKS[args.task]
    if not 1 <= args.step <= spec.max_episode_steps:
        raise ValueError(
            f"--step must lie in [1, {spec.max_episode_steps}] (Phys-{spec.name}-v0's episode "
            f"length), got {args.step}"
        )
    seed = SPLITS["test"][0]
    episodes = held_out_episodes(args.task, seed, args.episodes, args.expert_noise)
    physics_seconds = time.perf_counter() - started
    physics_rate = sum(len(episode["action"]) for episode in episodes) / physics_seconds
    long = [episode for episode in episodes if len(episode["action"]) >= args.step]
    if not long:
        raise ValueError(f"no physics episode of seeds {seed}+ runs {args.step} steps")
    rows = []
    for every, weight in SETTINGS:
        env = gym.make(
            f"WM-{spec.name}-v0",
            model=args.model,
            checkpoint=args.checkpoint,
            obs_mode="state",
            device="cpu",
            resync_every=every,
            resync_weight=weight,
        )
        with env:
            drift = drift_row(args.task, env, long, args.step, every)
        rows.append({"resync_every": "inf" if every is None else every, "weight": weight} | drift)
    tracked = tracked_errors(args.task, long[0]["state"], long[0]["state"])
    headline = f"{next(iter(tracked))}_{args.step}"  # the task's first tracked error
    open_loop = next(row for row in rows if row["resync_every"] == "inf")[headline]
    for row in rows:
        row["drift_cut"] = round(1 - row[headline] / open_loop, 3)
    cut = next(r for r in rows if r["resync_every"] == 10 and r["weight"] == 1)["drift_cut"]
    notes = (
        f"WM-{spec.name}-v0 ({args.model}, {args.checkpoint or 'shipped checkpoint'}, obs_mode "
        f"state, cpu) against Phys-{spec.name}-v0 on test seeds {seed}-{seed + args.episodes - 1} "
        f"(even: noisy expert, odd: smooth random), the {len(long)} episodes that run "
        f"{args.step}+ steps; every row the same seeds and actions. `{headline}`: the error at "
        f"step {args.step} before that step's re-anchoring (min(N, {args.step}) steps after the "
        f"last real state seen); `copy_*`: that real state held; `mean_*`: the reported "
        f"observation's error averaged over steps 1-{args.step}; `drift_cut`: 1 - {headline} / "
        f"open loop's. resync_every=10 cuts the drift by {100 * cut:.0f}%"
        f"{' (bar: 50%)' if args.step == 100 else ''}. "
        f"`steps_per_s`: the env over these rollouts, resets included; Phys-{spec.name}-v0 in "
        f"dict mode (what a shadow runs) played the episodes at {physics_rate:.0f} steps/s, "
        f"policies included. torch threads: {torch.get_num_threads()}; run took "
        f"{time.perf_counter() - started:.0f} s; measured {date.today()}."
    )
    name = "resync" if args.task == "drive" else f"resync_{args.task}"
    write_results(name, rows, notes, Path(args.out))


if __name__ == "__main__":
    main()
