"""The main job: run the scripted expert on the physics task, print a table, write a video."""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from wm_envs.agents.scripted import ScriptedPolicy
from wm_envs.checkpoint import read_card, shipped_agents, shipped_models
from wm_envs.cli import CHECKOUT
from wm_envs.eval.compare import CompareConfig, compare
from wm_envs.evaluate import EvaluateConfig, run_episode, run_policy
from wm_envs.io import write_video
from wm_envs.report import write_report
from wm_envs.tasks import TASKS, task_of


def policy_summary(env: gym.Env, policy, seeds: list[int], frames: list | None = None) -> dict:
    """One episode per seed (``wm_envs.evaluate.run_episode``): success rate, mean return and
    steps/s. ``policy`` is a callable ``obs -> action`` with a ``reset()``; pass ``frames``
    to collect the rendered frames for a video."""
    start = time.perf_counter()
    records = [run_episode(env, policy, seed, frames=frames) for seed in seeds]
    elapsed = time.perf_counter() - start
    return {
        "episodes": len(seeds),
        "success": float(np.mean([r["success"] for r in records])),
        "mean_return": float(np.mean([r["return"] for r in records])),
        "steps_per_s": sum(r["length"] for r in records) / elapsed,
    }


def demo(
    env_id: str = "Phys-Grasp-v0",
    episodes: int = 20,
    out: str = "demo_out",
    compare_episodes: int = 10,
) -> dict:
    """The main job: physics baselines, then physics against each shipped learned simulator.

    Expert and random policies on ``env_id`` over ``episodes`` seeds (a table and an mp4), then
    ``compare`` of every model shipped for the task against the physics on the same
    ``compare_episodes`` held-out seeds and actions (metrics, plot and side-by-side video per
    model under ``out/<model>/``; the first 10 of the README's 20 seeds by default, so that
    five models, Genie the slowest, fit the demo's two minutes), the shipped
    agents on the physics, and last ``out/report.html``: this run's comparisons beside the
    checkout's recorded ones for the other tasks (``wm_envs.report``).
    """
    rows = physics_table(env_id, episodes, out)
    task = task_of(env_id)
    models = shipped_models(task)
    if not models:
        print(f"\nno learned simulator ships for {task!r}; train one with `wm-envs train`")
        return rows
    headlines = {}
    for model in models:
        config = CompareConfig(
            task=task, model=model, episodes=compare_episodes, out=f"{out}/{model}"
        )
        print(
            f"\nshipped {model} vs {env_id}: {compare_episodes} held-out seeds from {config.seed}, "
            f"same actions (noisy expert / random), open loop for {config.horizon} steps"
        )
        headlines[model] = compare(config)["headline"]
        written = sorted(path.name for path in Path(config.out).iterdir())
        print(f"written to {config.out}/: {', '.join(written)}")
    agents = {
        name: agent_segment(name, env_id, out, min(episodes, 5)) for name in shipped_agents(task)
    }
    results = CHECKOUT / "benchmarks" / "results"  # absent from an installed copy
    report = write_report(Path(out) / "report.html", results if results.is_dir() else None, [out])
    print(f"\nreport (every shipped model against physics, one HTML page): {report}")
    return {"physics": rows, "learned": headlines, "agents": agents, "report": report}


def agent_segment(name: str, env_id: str, out: str, episodes: int = 5) -> dict:
    """A shipped agent, trained only in a learned simulator, acting on the physics: its
    success on a few held-out seeds and a video of them."""
    config = EvaluateConfig(policy=name, env=env_id, episodes=episodes, seed=7000)
    print(f"\nshipped agent {name} (trained only in its world model) on {env_id}:")
    frames: list = []
    records = run_policy(config, frames)
    video = Path(out) / f"{name}-{env_id}.mp4"
    write_video(video, frames, fps=25)
    success = float(np.mean([r["success"] for r in records]))
    print(f"success {success:.0%} over seeds {config.seed}-{config.seed + episodes - 1}; {video}")
    return {"success_rate": success, "episodes": records}


def physics_table(env_id: str, episodes: int, out: str, video_episodes: int = 3) -> dict:
    """Expert and random policies on ``env_id``: a table on stdout and an mp4 in ``out``."""
    rows = {}
    seeds = list(range(1000, 1000 + episodes))
    for name in ("expert", "random"):
        with gym.make(env_id, obs_mode="state") as env:
            rows[name] = policy_summary(env, ScriptedPolicy(env, name, seed=0), seeds)
    frames: list = []
    with gym.make(env_id, render_mode="rgb_array", width=256, height=256) as env:
        policy_summary(env, ScriptedPolicy(env, "expert"), seeds[:video_episodes], frames)
    video = Path(out) / f"{env_id}-expert.mp4"
    write_video(video, frames, fps=env.metadata["render_fps"])
    print(f"\n{env_id}: {episodes} episodes (seeds {seeds[0]}-{seeds[-1]})\n")
    print("| policy | success | mean return | steps/s |")
    print("|--------|---------|-------------|---------|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['success']:.0%} | {row['mean_return']:.2f} "
            f"| {row['steps_per_s']:.0f} |"
        )
    print(f"\nvideo: {video}")
    return rows


def learned_env_kwargs(env_id: str, model: str | None, checkpoint: str | None) -> dict:
    """The ``gym.make`` kwargs choosing a WM-* env's learned simulator: ``model`` defaults to
    the checkpoint's, else the env's default; a Phys-* env refuses them."""
    if model is None and checkpoint is None:
        return {}
    if not env_id.split(":")[-1].startswith("WM-"):
        twin = f"WM-{TASKS[task_of(env_id)].name}-v0"
        raise ValueError(
            f"model and checkpoint choose the learned simulator of a WM-* env; {env_id} is "
            f"simulated by physics. Drop them, or play {twin}"
        )
    if model is None:
        model = read_card(checkpoint)["model"]
    return {"model": model, "checkpoint": checkpoint}


def play(
    env_id: str,
    policy: str = "expert",
    episodes: int = 3,
    seed: int = 0,
    out: str = "play.mp4",
    model: str | None = None,
    checkpoint: str | None = None,
    **env_kwargs,
) -> dict:
    """Run the expert or random policy on any registered env (Phys-* or WM-*), print its
    success and return, and write the rendered episodes as an mp4.

    ``model`` and ``checkpoint`` choose a WM-* env's learned simulator (``learned_env_kwargs``)."""
    env_kwargs |= learned_env_kwargs(env_id, model, checkpoint)
    frames: list = []
    with gym.make(env_id, render_mode="rgb_array", **env_kwargs) as env:
        actor = ScriptedPolicy(env, policy, seed=seed)
        result = policy_summary(env, actor, list(range(seed, seed + episodes)), frames)
        fps = env.metadata["render_fps"]
    write_video(
        out,
        [np.kron(f, np.ones((256 // f.shape[0],) * 2 + (1,), np.uint8)) for f in frames],
        fps=fps,
    )
    print(f"{env_id} ({policy}): {result}; video: {out}")
    return result
