"""MPPI in a world model's latent space (PlaNet / TD-MPC2 style), acting on a real env.

Every control step the planner re-anchors the model on the last ``context`` real frames and
the actions that led into them (``init_state``), then refines a Gaussian over action
sequences for ``iterations`` rounds: ``samples`` sequences of ``horizon`` actions are rolled
out in one batched model call per step, scored by the learned heads (reward, plus a bonus
for predicted success, discounted, and nothing after a predicted termination), and the mean
moves to their softmax-weighted average. The first action of the mean is taken; the rest
warm-starts the next step.

Given a trained agent (``agent=``, a Dreamer trained in the same world model) it plans as
TD-MPC2 does: the agent's critic values the state each sequence ends in, so the planner looks
past its horizon (a grasp is judged by the lift it allows, not by the first contact), and
``policy_samples`` of the sequences come from the agent's actor rolled out in the model.

Given a goal observation (``set_goal``) it plans toward the goal instead, as V-JEPA 2-AC and
DINO-WM do in an embedding space: each step of a sequence scores minus the mean squared
distance of the model's features to those of the goal frame held at rest, and the learned
heads are not used.

    planner = LatentPlanner(model, PlannerConfig(), action_space)
    planner.reset(); action = planner(obs)      # obs: a dict observation (image, state)
    planner.set_goal(goal_obs)                  # optional: reach what goal_obs shows
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from wm_envs.agents.dreamer import DreamerPolicy, check_goal_margin, margin_bonus, sample_action
from wm_envs.models.base import State, WorldModel


@dataclass(frozen=True)
class PlannerConfig:
    samples: int = 256
    horizon: int = 12
    iterations: int = 4
    elites: int = 32  # the best sequences that set the new mean and spread
    temperature: float = 0.5  # of the softmax over elite returns (normalised to [0, 1])
    init_std: float = 0.6
    min_std: float = 0.05
    discount: float = 0.97
    success_bonus: float = 10.0  # return for each step the model predicts success
    #: As ``DreamerConfig.goal_margin``: each step earns up to ``margin_reward`` more past
    #: the goal by this fraction of it (the task's ``goal_progress`` of the predicted state).
    goal_margin: float = 0.0
    margin_reward: float = 1.0
    context: int = 4  # real frames the model is re-anchored on every step
    seed: int = 0
    #: A Dreamer agent trained in the planner's world model (shipped name or folder): its
    #: critic values the end of every sequence, its actor proposes ``policy_samples`` of them.
    agent: str = ""
    policy_samples: int = 32


class LatentPlanner:
    """``obs -> action`` with ``reset()``, planning in ``model`` (any WorldModel)."""

    def __init__(
        self,
        model: WorldModel,
        config: PlannerConfig,
        space: gym.spaces.Box,
        agent: DreamerPolicy | None = None,
        goal_progress: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """``agent``: the loaded ``config.agent``, whose features must be ``model``'s;
        ``goal_progress``: the task's (``TaskSpec.goal_progress``), for ``goal_margin``."""
        check_goal_margin(config.goal_margin, goal_progress)
        if agent is not None and agent.card["feature_dim"] != model.feature_dim:
            raise ValueError(
                f"the agent acts on {agent.card['feature_dim']} features, the planner's world "
                f"model has {model.feature_dim}: plan in the agent's own world model"
            )
        if agent is not None and not 0 <= config.policy_samples < config.samples:
            raise ValueError(
                f"policy_samples must lie in [0, samples={config.samples}), "
                f"got {config.policy_samples}"
            )
        self.model, self.config, self.agent = model, config, agent
        self.goal_progress = goal_progress
        self.low = torch.as_tensor(space.low, device=self.model.device)
        self.high = torch.as_tensor(space.high, device=self.model.device)
        self.generator = torch.Generator(self.model.device).manual_seed(config.seed)
        self.goal: torch.Tensor | None = None  # features [F] of the goal frame, if any

    def reset(self) -> None:
        c = self.config
        self.frames: deque[dict] = deque(maxlen=c.context)
        self.actions: deque[np.ndarray] = deque(maxlen=c.context)
        self.mean = torch.zeros(c.horizon, len(self.low), device=self.model.device)  # [H, A]
        self.last_action = np.zeros(len(self.low), np.float32)

    @torch.inference_mode()
    def set_goal(self, goal: dict | None) -> None:
        """Plan toward the dict observation ``goal`` (image, state) from now on: its features
        as the model sees it held still (two identical frames); None: back to the heads."""
        if goal is None:
            self.goal = None
            return
        context = {
            key: torch.as_tensor(np.stack([goal[key]] * 2), device=self.model.device)[None]
            for key in ("image", "state")
        }  # [1, 2, ...]
        actions = torch.zeros(1, 2, len(self.low), device=self.model.device)
        self.goal = self.model.features(self.model.init_state(context, actions))[0]

    def __call__(self, obs: dict) -> np.ndarray:
        self.frames.append(obs)
        self.actions.append(self.last_action)
        self.last_action = self.plan(self._anchor()).cpu().numpy().astype(np.float32)
        return self.last_action

    @torch.inference_mode()
    def _anchor(self) -> dict[str, torch.Tensor]:
        """The model state after the real context, repeated for every sample: [N, ...]."""
        device = self.model.device
        context = {
            key: torch.as_tensor(np.stack([frame[key] for frame in self.frames]), device=device)[
                None
            ]
            for key in self.frames[0]
            if key in ("image", "state", "depth")
        }  # [1, K, ...]
        actions = torch.as_tensor(np.stack(self.actions), device=device)[None]  # [1, K, A]
        state = self.model.init_state(context, actions)
        return {
            key: value.expand(self.config.samples, *value.shape[1:]) for key, value in state.items()
        }

    @torch.inference_mode()
    def plan(self, start: dict[str, torch.Tensor]) -> torch.Tensor:
        """The first action [A] of the refined mean sequence from model state ``start``."""
        c = self.config
        mean, std = self.mean, torch.full_like(self.mean, c.init_std)
        discounts = c.discount ** torch.arange(c.horizon + 1, device=mean.device)  # [H + 1]
        proposals = self.propose(start) if self.agent is not None else None  # [P, H, A]
        for _ in range(c.iterations):
            noise = torch.randn(
                c.samples, *mean.shape, device=mean.device, generator=self.generator
            )  # [N, H, A]
            plans = (mean + std * noise).clamp(self.low, self.high)
            plans[0] = mean  # the current mean always competes
            if proposals is not None:
                plans[1 : 1 + len(proposals)] = proposals
            returns = self.rollout_returns(start, plans, discounts)  # [N]
            elite = returns.topk(c.elites).indices
            scores = returns[elite]
            span = (scores.max() - scores.min()).clamp_min(1e-6)
            weights = torch.softmax((scores - scores.max()) / span / c.temperature, 0)  # [E]
            elite_plans = plans[elite]  # [E, H, A]
            mean = (weights[:, None, None] * elite_plans).sum(0)
            spread = (weights[:, None, None] * (elite_plans - mean) ** 2).sum(0).sqrt()
            std = spread.clamp(c.min_std, c.init_std)
        self.mean = torch.cat([mean[1:], torch.zeros_like(mean[:1])])  # warm start
        return mean[0]

    def propose(self, start: State) -> torch.Tensor:
        """``policy_samples`` action sequences [P, H, A] of the agent's actor (sampled),
        rolled out in the model from ``start``."""
        c = self.config
        state = {key: value[: c.policy_samples] for key, value in start.items()}
        actions = []
        for _ in range(c.horizon):
            policy = self.agent.actor.distribution(self.model.features(state))
            actions.append(sample_action(policy, self.generator).clamp(self.low, self.high))
            state = self.model.step(state, actions[-1])
        return torch.stack(actions, 1)

    def rollout_returns(
        self, start: dict[str, torch.Tensor], plans: torch.Tensor, discounts: torch.Tensor
    ) -> torch.Tensor:
        """Discounted return [N] of action sequences ``plans`` [N, H, A]: learned (plus the
        agent's value of the last state, given an agent), or minus the distance to the
        goal's features."""
        c, state, alive = self.config, start, torch.ones(plans.shape[0], device=plans.device)
        total = torch.zeros_like(alive)
        for t in range(plans.shape[1]):
            state = self.model.step(state, plans[:, t])
            if self.goal is not None:
                distance = (self.model.features(state) - self.goal).square().mean(-1)  # [N]
                total -= discounts[t] * distance
                continue
            reward, terminated, success = self.model.outcome_scores(state)  # [N] each
            reward = reward + c.success_bonus * success
            if c.goal_margin:
                reward = reward + margin_bonus(
                    self.model, state, self.goal_progress, c.goal_margin, c.margin_reward
                )
            total += discounts[t] * alive * reward
            alive = alive * (1.0 - terminated)
        if self.agent is not None and self.goal is None:
            value = self.agent.critic.value(self.model.features(state).float())  # [N]
            total += discounts[-1] * alive * value
        return total
