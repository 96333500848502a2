"""Scripted experts: privileged controllers that solve each task, used to make datasets.

``make_expert(env)`` is the one entry point; call ``expert.reset()`` at each episode start and
``action = expert(obs)`` each step. Experts read the simulator's privileged state through
``env.unwrapped.state_vector()``, so they work in every ``obs_mode``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from wm_envs.tasks import grasp


class ScriptedExpert:
    """Base class: Gaussian action noise and clipping around a task's ``plan``."""

    def __init__(self, env: gym.Env, noise: float = 0.0, seed: int | None = None) -> None:
        self.env = env.unwrapped
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Forget the previous episode."""

    def plan(self, state: np.ndarray) -> np.ndarray:
        """The noiseless action for the current privileged state."""
        raise NotImplementedError

    def __call__(self, obs: Any) -> np.ndarray:
        action = self.plan(self.env.state_vector())
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class GraspExpert(ScriptedExpert):
    """Hover above the object, descend, close, lift; start over if the object slips out."""

    def reset(self) -> None:
        self.phase = "approach"
        self.closed_steps = 0

    def plan(self, state: np.ndarray) -> np.ndarray:
        gripper, gap, obj, half_height = state[0:3], state[6], state[7:10], state[23]
        grasp_z = max(obj[2] + grasp.FINGERTIP_OFFSET, grasp.WORKSPACE_LOW[2])
        hover_z = grasp_z + 0.08
        xy_error = np.linalg.norm(obj[:2] - gripper[:2])
        if self.phase == "lift" and obj[2] - half_height < 0.01 and gripper[2] > grasp_z + 0.04:
            self.phase, self.closed_steps = "approach", 0  # dropped it: try again
        if self.phase == "approach":
            target, close = np.array([*obj[:2], hover_z]), -1.0
            if xy_error < 0.008 and abs(gripper[2] - hover_z) < 0.02:
                self.phase = "descend"
        if self.phase == "descend":
            target, close = np.array([*obj[:2], grasp_z]), -1.0
            if abs(gripper[2] - grasp_z) < 0.006:
                self.phase = "close"
        if self.phase == "close":
            target, close = np.array([*gripper[:2], grasp_z]), 1.0
            self.closed_steps += 1
            if self.closed_steps >= 5 and gap < 2 * half_height + 0.1:
                self.phase = "lift"
        if self.phase == "lift":
            target, close = np.array([*gripper[:2], grasp_z + 0.17]), 1.0
        move = np.clip((target - gripper) / grasp.MAX_DELTA, -1.0, 1.0)
        return np.array([*move, close])


def make_expert(env: gym.Env, noise: float = 0.0, seed: int | None = None) -> ScriptedExpert:
    """The scripted expert of ``env``'s task, with optional Gaussian action noise."""
    expert_class = getattr(env.unwrapped, "expert_class", None)
    if expert_class is None:
        raise ValueError(f"{env.unwrapped.__class__.__name__} has no scripted expert")
    return expert_class(env, noise=noise, seed=seed)
