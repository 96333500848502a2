"""Run a policy closed-loop on a Phys-* or WM-* env and record how often it succeeds.

    wm-envs evaluate --policy expert:noise=0.3 --env Phys-Grasp-v0 --episodes 50 --seed 7000

Episode i is reset with seed ``seed + i``. On a ``WM-*`` env each episode starts from the
real first frame of the same seed in the physics twin, so a policy meets the same worlds in
both and ``wm-envs transfer`` can pair them. An episode succeeds if ``info["is_success"]``
is set at any step (physics ends the episode on success; a learned env ends it when its
termination head fires, or with ``--success-from state`` when the task's own success rule
holds on the predicted state).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from wm_envs.agents.dreamer import AGENT_FORMAT, DreamerPolicy
from wm_envs.agents.planner import LatentPlanner, PlannerConfig
from wm_envs.agents.scripted import ScriptedPolicy
from wm_envs.assets import AGENTS
from wm_envs.checkpoint import load_checkpoint, read_card, read_unit_card, shipped_checkpoint
from wm_envs.config import parse_settings
from wm_envs.device import resolve_device
from wm_envs.io import write_json
from wm_envs.tasks import TASKS, task_function, task_of
from wm_envs.wrappers import LatentObservation

#: Where a latent agent meets a WM-* env (``EvaluateConfig.agents_in``).
AGENTS_IN = ("own", "env")


@dataclass(frozen=True)
class EvaluateConfig:
    policy: str = "expert"  # scripted spec, "planner[:settings]", agent name or folder
    env: str = "Phys-Grasp-v0"
    episodes: int = 20
    seed: int = 7000
    out: str = ""  # a JSON file; empty = print only
    model: str = "rssm"  # the world model of a WM-* env and of the planner
    checkpoint: str = ""  # its checkpoint folder; empty = the shipped one
    device: str = "auto"
    success_from: str = "head"  # a WM-* env's success: "head" (learned) or "state" (task rule)
    #: Where a trained agent meets a WM-* env: "env" = the env of ``model`` / ``checkpoint``,
    #: seen through its own world model's filter; "own" = the env of its own world model.
    agents_in: str = "env"


@dataclass(frozen=True)
class PolicyPlan:
    """What a policy needs of the env it acts on, and how to build it for that env."""

    obs_mode: str  # "state" (scripted), "dict" (planner: frames), "latent" (agents)
    world_model: str | None  # the checkpoint a latent policy's features come from
    build: Callable[[gym.Env], Any]


def agent_folder(spec: str) -> Path | None:
    """The folder of a trained agent that ``spec`` names (a shipped agent's name, or a
    folder holding an agent card); None if it names no folder with a card."""
    for folder in (AGENTS / spec, Path(spec)):
        try:
            read_unit_card(folder, AGENT_FORMAT)  # a card of another kind is refused by name
        except FileNotFoundError:
            continue
        return folder
    return None


def required_agent_folder(spec: str, named_by: str) -> Path:
    """``agent_folder(spec)``, or a ValueError saying what ``named_by`` (the option that
    named it) got wrong."""
    folder = agent_folder(spec)
    if folder is None:
        raise ValueError(f"{named_by} {spec!r} is neither a shipped agent nor an agent folder")
    return folder


def plan_policy(config: EvaluateConfig) -> PolicyPlan:
    """Resolve ``config.policy``: a scripted spec (``wm_envs.agents.scripted``), the latent
    planner in ``config.model`` / ``config.checkpoint`` (``planner:samples=128`` overrides
    its PlannerConfig; ``planner:agent=dreamer-grasp`` plans in that agent's world model with
    its critic and actor), or a trained agent (``dreamer-grasp``, or an agent folder), which
    acts on the features of the world model it was trained in."""
    kind, _, settings = config.policy.partition(":")
    if kind == "planner":
        planner_config = parse_settings(PlannerConfig, settings, config.policy)
        task = task_of(config.env)
        folder = config.checkpoint or shipped_checkpoint(config.model, task)
        agent = None
        if planner_config.agent:
            found = required_agent_folder(planner_config.agent, "planner agent")
            agent = DreamerPolicy(found, config.device)
            folder = agent.world_model  # the critic reads this model's features
        model, _, _ = load_checkpoint(folder, resolve_device(config.device))
        progress = task_function(task, "goal_progress") if planner_config.goal_margin else None
        return PolicyPlan(
            "dict",
            None,
            lambda env: LatentPlanner(model, planner_config, env.action_space, agent, progress),
        )
    folder = agent_folder(config.policy)
    if folder is not None:
        agent = DreamerPolicy(folder, config.device)
        return PolicyPlan("latent", agent.world_model, lambda env: agent)
    return PolicyPlan(
        "state", None, lambda env: ScriptedPolicy(env, config.policy, seed=config.seed)
    )


def make_env(config: EvaluateConfig, plan: PolicyPlan, render: bool = False) -> gym.Env:
    """The env to evaluate on, observed as the policy needs. A WM-* env gets ``config``'s
    model and checkpoint, or with ``agents_in="own"`` a latent agent's own world model; any
    other env a latent agent meets is filtered through its world model
    (``LatentObservation``). ``render``: frames for a video (``render_mode="rgb_array"``)."""
    if not config.env.startswith(("WM-", "Phys-")):
        raise ValueError(f"--env must be a Phys-* or WM-* id, got {config.env!r}")
    if config.agents_in not in AGENTS_IN:
        raise ValueError(f"agents_in must be one of {AGENTS_IN}, got {config.agents_in!r}")
    latent = plan.obs_mode == "latent"
    learned = config.env.startswith("WM-")
    own = learned and latent and config.agents_in == "own"  # the env serves the agent's features
    filtered = latent and not own
    obs_mode = "dict" if filtered else plan.obs_mode
    render_mode = "rgb_array" if render else None
    if learned:
        checkpoint = plan.world_model if own else config.checkpoint or None
        env = gym.make(
            config.env,
            model=read_card(checkpoint)["model"] if own else config.model,
            checkpoint=checkpoint,
            obs_mode=obs_mode,
            device=config.device,
            render_mode=render_mode,
            success_from=config.success_from,
        )
    else:
        env = gym.make(config.env, obs_mode=obs_mode, render_mode=render_mode)
    if filtered:
        return LatentObservation(env, checkpoint=plan.world_model, device=config.device)
    return env


def run_episode(
    env: gym.Env, policy, seed: int, twin: gym.Env | None = None, frames: list | None = None
) -> dict:
    """One closed-loop episode: its seed, success, return and length. With ``twin`` (the
    physics env in dict mode), the episode starts from the twin's real first frame; with
    ``frames``, the rendered frames are appended to it."""
    options = None
    if twin is not None:
        options = {"observation": twin.reset(seed=seed)[0]}
    obs, info = env.reset(seed=seed, options=options)
    policy.reset()
    total, length, success, done = 0.0, 0, False, False
    while not done:
        if frames is not None:
            frames.append(env.render())
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        total += float(reward)
        length += 1
        success = success or bool(info.get("is_success", False))
        done = terminated or truncated
    return {"seed": seed, "success": success, "return": total, "length": length}


def run_policy(config: EvaluateConfig, frames: list | None = None) -> list[dict]:
    """Per-episode records of ``config.policy`` on ``config.env``, seeds from ``config.seed``
    (and their rendered frames, appended to ``frames`` when given)."""
    if config.episodes < 1:
        raise ValueError(f"episodes must be positive, got {config.episodes}")
    seeds = range(config.seed, config.seed + config.episodes)
    plan = plan_policy(config)
    with ExitStack() as stack:
        env = stack.enter_context(make_env(config, plan, render=frames is not None))
        twin = None
        if config.env.startswith("WM-"):
            twin_id = f"Phys-{TASKS[task_of(config.env)].name}-v0"
            twin = stack.enter_context(gym.make(twin_id, obs_mode="dict"))
        policy = plan.build(env)
        return [run_episode(env, policy, seed, twin, frames) for seed in seeds]


def evaluate(config: EvaluateConfig) -> dict:
    """Success rate, mean return and per-episode records of ``config.policy`` on
    ``config.env``; written to ``config.out`` when given."""
    records = run_policy(config)
    result = {
        "config": asdict(config),
        "success_rate": float(np.mean([r["success"] for r in records])),
        "return_mean": float(np.mean([r["return"] for r in records])),
        "episodes": records,
    }
    print(
        f"{config.policy} on {config.env}: success {result['success_rate']:.0%} over "
        f"{config.episodes} episodes (seeds {config.seed}-{config.seed + config.episodes - 1}), "
        f"mean return {result['return_mean']:.2f}"
    )
    if config.out:
        write_json(Path(config.out), result)
    return result
