"""Dreamer's behaviour learning (DreamerV3): an actor-critic trained only in imagination.

    python -m wm_envs.agents.dreamer --world-model assets/checkpoints/rssm-grasp \
        --data data --dataset-id grasp/mixed-600-v0 --out runs/dreamer-grasp

Every update starts imagination from model states filtered from real dataset windows that
end anywhere in an episode (``init_state`` over ``context`` real frames), rolls the world
model forward ``horizon`` steps under the actor in one batched call per step, and learns
from what its heads predict:

* the **critic** predicts a two-hot distribution over symlog-spaced bins of the λ-return
  (λ = 0.95), regularised toward a slow EMA copy of itself, which also gives the bootstrap;
* the **actor** maximises the normalised λ-returns (5th-95th percentile range of returns,
  an EMA, at least 1) plus an entropy bonus.

Actor gradients (``actor_gradient``): ``"backprop"`` (the default) differentiates the returns
through the frozen model's dynamics -- the RSSM's deterministic path is differentiable, the
actions are reparameterised; ``"reinforce"`` uses the score function with the critic as
baseline, as DreamerV3 does for every action space, and keeps imagination under ``no_grad``.
Measured on Grasp with the shipped RSSM: REINFORCE (entropy 3e-3) learned nothing in 211
updates (0% on physics), back-propagation (entropy 3e-4) reached 30% on validation seeds
within 200 updates. Its cost is that the actor follows the model's gradient into the
model's errors; the number of updates is chosen on validation seeds for that reason.

The policy acts on the world model's features: in ``WM-*`` with ``obs_mode="latent"``, in
``Phys-*`` through ``wm_envs.wrappers.LatentObservation`` (the same model's posterior).
Re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from wm_envs.assets import CHECKPOINTS
from wm_envs.checkpoint import load_checkpoint, read_unit, write_unit
from wm_envs.config import add_config_arguments
from wm_envs.data.windows import WindowDataset
from wm_envs.device import resolve_device
from wm_envs.models.base import State, WorldModel
from wm_envs.models.layers import mlp
from wm_envs.tasks import task_function
from wm_envs.train import Logger, StopRequest
from wm_envs.wrappers import LatentFilter

AGENT_FORMAT = "wm-envs-agent/1"


@dataclass
class DreamerConfig:
    world_model: str = "assets/checkpoints/rssm-grasp"  # the checkpoint it imagines in
    data: str = "data"  # Minari root of the real windows imagination starts from
    dataset_id: str = "grasp/mixed-600-v0"
    out: str = "runs/dreamer-grasp"
    updates: int = 200  # in total over all resumed runs (chosen on validation seeds)
    starts: int = 256  # imagined trajectories per update
    horizon: int = 15
    context: int = 4  # real frames filtered before imagination starts
    refresh_every: int = 50  # updates between new pools of start states
    pool: int = 1024  # start states per pool
    discount: float = 0.985
    lam: float = 0.95
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    entropy: float = 3e-4
    actor_gradient: str = "backprop"  # through the model's dynamics; or "reinforce"
    hidden: int = 256
    bins: int = 255
    slow_critic: float = 0.02  # EMA rate of the slow critic
    return_decay: float = 0.99  # EMA of the 5th-95th percentile return range
    grad_clip: float = 100.0
    save_every: int = 250
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    max_minutes: float = 0.0
    #: Past the goal by this fraction, an imagined step earns up to ``margin_reward`` more
    #: (a ramp from the goal, on the task's ``goal_progress`` of the predicted state). A
    #: model a little optimistic near the goal then stops paying for its near misses. 0: off.
    goal_margin: float = 0.0
    margin_reward: float = 0.5
    #: An agent folder whose actor, critic and return scale this run starts from (a fresh
    #: optimizer): the Dreamer loop keeps one agent learning while its world model does.
    init_from: str = ""


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class TwoHotCritic(nn.Module):
    """Value as a distribution over ``bins`` symlog-spaced bins between symexp(-20) and
    symexp(20); the prediction is the expectation, trained with two-hot targets."""

    def __init__(self, features: int, hidden: int, bins: int) -> None:
        super().__init__()
        self.net = mlp(features, hidden, bins)
        nn.init.zeros_(self.net[-1].weight)  # start at value 0 everywhere
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("edges", torch.linspace(-20.0, 20.0, bins))

    def value(self, features: torch.Tensor) -> torch.Tensor:
        """Expected value [...] of features [..., F]."""
        return self.expectation(self.net(features).log_softmax(-1))

    def expectation(self, log_probs: torch.Tensor) -> torch.Tensor:
        """The value [...] a distribution over the bins [..., bins] predicts."""
        return symexp((log_probs.exp() * self.edges).sum(-1))

    def loss(self, log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy [...] of a distribution over the bins [..., bins] against the
        two-hot encoding of symlog(target) [...]."""
        position = symlog(target).clamp(-20.0, 20.0)
        index = torch.bucketize(position, self.edges).clamp(1, len(self.edges) - 1)
        low, high = self.edges[index - 1], self.edges[index]
        weight_high = (position - low) / (high - low)
        picked_low = log_probs.gather(-1, (index - 1)[..., None]).squeeze(-1)
        picked_high = log_probs.gather(-1, index[..., None]).squeeze(-1)
        return -((1 - weight_high) * picked_low + weight_high * picked_high)


class Actor(nn.Module):
    """A Gaussian policy on features: mean in [-1, 1] (tanh), std in [0.1, 1]."""

    def __init__(self, features: int, hidden: int, actions: int) -> None:
        super().__init__()
        self.net = mlp(features, hidden, 2 * actions)

    def distribution(self, features: torch.Tensor) -> torch.distributions.Normal:
        mean, spread = self.net(features).chunk(2, -1)
        return torch.distributions.Normal(mean.tanh(), 0.1 + 0.9 * spread.sigmoid())

    @torch.inference_mode()
    def act(self, features: torch.Tensor) -> torch.Tensor:
        """The deterministic action (the mean) for features [B, F] -> [B, A]."""
        return self.distribution(features).mean


def sample_action(
    policy: torch.distributions.Normal, generator: torch.Generator | None
) -> torch.Tensor:
    """An action [B, A] drawn from ``policy`` with ``generator`` (seeded sampling, which
    ``Normal.sample`` does not take)."""
    noise = torch.randn(policy.mean.shape, generator=generator, device=policy.mean.device)
    return policy.mean + policy.stddev * noise


def lambda_returns(
    reward: torch.Tensor, continues: torch.Tensor, value: torch.Tensor, discount: float, lam: float
) -> torch.Tensor:
    """λ-returns [H, B] from rewards and continue probabilities [H, B] (of the step into
    t + 1) and values [H + 1, B]; the last value bootstraps."""
    returns = [value[-1]]
    for t in reversed(range(reward.shape[0])):
        blend = (1 - lam) * value[t + 1] + lam * returns[-1]
        returns.append(reward[t] + discount * continues[t] * blend)
    return torch.stack(returns[::-1][:-1])


def check_goal_margin(goal_margin: float, goal_progress: Callable | None) -> None:
    """A goal margin is >= 0 and measured on the task's ``goal_progress``."""
    if goal_margin < 0 or (goal_margin and goal_progress is None):
        raise ValueError(
            f"goal_margin must be >= 0 and needs the task's goal_progress, got "
            f"{goal_margin} with {goal_progress}"
        )


def margin_bonus(
    model: WorldModel,
    state: State,
    goal_progress: Callable[[torch.Tensor], torch.Tensor],
    goal_margin: float,
    margin_reward: float,
) -> torch.Tensor:
    """``margin_reward`` times how far [0, 1] each predicted state [B] is along the ramp from
    the goal (``goal_progress`` 1) to ``goal_margin`` past it -> [B]."""
    progress = goal_progress(model.state_vector(state))  # [B]
    return margin_reward * ((progress - 1.0) / goal_margin).clamp(0.0, 1.0)


class Dreamer:
    """The actor, critic and slow critic learning in ``world_model``'s imagination."""

    def __init__(
        self,
        config: DreamerConfig,
        world_model: WorldModel,
        goal_progress: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """``goal_progress``: the task's (``TaskSpec.goal_progress``); ``goal_margin`` needs it."""
        check_goal_margin(config.goal_margin, goal_progress)
        if config.actor_gradient not in ("reinforce", "backprop"):
            raise ValueError(
                f"actor_gradient must be 'reinforce' or 'backprop', got {config.actor_gradient!r}"
            )
        self.config, self.goal_progress = config, goal_progress
        self.model = world_model.requires_grad_(False).eval()
        device = world_model.device
        features, actions = world_model.feature_dim, world_model.spec.action_dim
        self.actor = Actor(features, config.hidden, actions).to(device)
        self.critic = TwoHotCritic(features, config.hidden, config.bins).to(device)
        self.slow_critic = TwoHotCritic(features, config.hidden, config.bins).to(device)
        self.slow_critic.load_state_dict(self.critic.state_dict())
        self.slow_critic.requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), config.actor_lr, eps=1e-5)
        self.critic_optimizer = torch.optim.Adam(
            self.critic.parameters(), config.critic_lr, eps=1e-5
        )
        self.return_scale = torch.ones((), device=device)  # EMA of the 5-95% return range

    def imagine(self, start: State, differentiable: bool = False) -> dict[str, torch.Tensor]:
        """Roll the model ``horizon`` steps from ``start`` [B] under the actor: features
        [H + 1, B, F], actions [H, B, A], reward and continue and success probabilities
        [H, B] (of the state each action leads to). ``differentiable`` keeps the graph from
        the actor's (reparameterised) actions to everything after them."""
        with torch.set_grad_enabled(differentiable):
            return self._imagine(start, differentiable)

    def _imagine(self, start: State, differentiable: bool) -> dict[str, torch.Tensor]:
        c, state = self.config, start
        features = [self.model.features(state)]
        actions, rewards, continues, successes = [], [], [], []
        for _ in range(c.horizon):
            policy = self.actor.distribution(features[-1])
            action = policy.rsample() if differentiable else policy.sample()
            action = action + (action.clamp(-1.0, 1.0) - action).detach()  # clip, pass grads
            state = self.model.step(state, action)
            reward, terminated, success = self.model.outcome_scores(state)
            if c.goal_margin:
                reward = reward + margin_bonus(
                    self.model, state, self.goal_progress, c.goal_margin, c.margin_reward
                )
            features.append(self.model.features(state))
            actions.append(action)
            rewards.append(reward)
            continues.append(1.0 - terminated)
            successes.append(success)
        stack = torch.stack
        return {
            "features": stack(features).float(),
            "actions": stack(actions),
            "reward": stack(rewards).float(),
            "continues": stack(continues).float(),
            "success": stack(successes).float(),
        }

    def update(self, start: State) -> dict[str, float]:
        """One actor and one critic update on trajectories imagined from ``start``."""
        c = self.config
        backprop = c.actor_gradient == "backprop"
        rollout = self.imagine(start, differentiable=backprop)
        # with backprop, returns carry gradients through the model back to the actions
        with torch.set_grad_enabled(backprop):
            value = self.slow_critic.value(rollout["features"])  # [H + 1, B]
            differentiable_returns = lambda_returns(
                rollout["reward"], rollout["continues"], value, c.discount, c.lam
            )  # [H, B]
        returns, value = differentiable_returns.detach(), value.detach()
        features = rollout["features"].detach()  # [H + 1, B, F]
        with torch.no_grad():
            alive = torch.cumprod(
                torch.cat([torch.ones_like(rollout["continues"][:1]), rollout["continues"][:-1]]),
                0,
            )  # [H, B]: the weight of step t, 0 once an earlier step ended the episode
            low, high = torch.quantile(returns.flatten(), torch.tensor([0.05, 0.95]).to(returns))
            self.return_scale.lerp_(high - low, 1 - c.return_decay)
        log_probs = self.critic.net(features[:-1]).log_softmax(-1)  # [H, B, bins]
        with torch.no_grad():
            baseline = self.critic.expectation(log_probs)
            advantage = (returns - baseline) / self.return_scale.clamp_min(1.0)

        policy = self.actor.distribution(features[:-1])
        entropy = policy.entropy().sum(-1)  # [H, B]
        if backprop:
            objective = differentiable_returns / self.return_scale.clamp_min(1.0)
        else:
            objective = policy.log_prob(rollout["actions"].detach()).sum(-1) * advantage
        actor_loss = -(alive * (objective + c.entropy * entropy)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        nn.utils.clip_grad_norm_(self.actor.parameters(), c.grad_clip)
        self.actor_optimizer.step()

        critic_loss = self.critic.loss(log_probs, returns)
        critic_loss = critic_loss + self.critic.loss(log_probs, value[:-1])  # toward the slow
        critic_loss = (alive * critic_loss).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        nn.utils.clip_grad_norm_(self.critic.parameters(), c.grad_clip)
        self.critic_optimizer.step()
        with torch.no_grad():
            for slow, fast in zip(
                self.slow_critic.parameters(), self.critic.parameters(), strict=True
            ):
                slow.lerp_(fast, c.slow_critic)
        return {
            "actor_loss": actor_loss.item(),
            "critic_loss": critic_loss.item(),
            "imagined_return": returns[0].mean().item(),
            "imagined_reward": rollout["reward"].mean().item(),
            "imagined_success": rollout["success"].amax(0).mean().item(),
            "entropy": entropy.mean().item(),
            "return_scale": self.return_scale.item(),
        }


class DreamerRun:
    """One training run: start pools, the update loop, checkpoints and resume."""

    def __init__(self, config: DreamerConfig, command: str = "") -> None:
        self.config, self.command = config, command
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device)
        self.out = Path(config.out)
        world_model, self.world_card, _ = load_checkpoint(config.world_model, self.device)
        self.windows = WindowDataset(
            config.data, config.dataset_id, config.context, "train", within_episodes=True
        )
        if self.windows.env_spec.id != self.world_card["env_id"]:
            raise ValueError(
                f"dataset {config.dataset_id!r} was collected on {self.windows.env_spec.id}; "
                f"the world model {config.world_model} simulates {self.world_card['env_id']}"
            )
        torch.manual_seed(config.seed)
        task = self.world_card["task"]
        progress = task_function(task, "goal_progress") if config.goal_margin else None
        self.agent = Dreamer(config, world_model, progress)
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        self.step, self.elapsed, self.metrics = 0, 0.0, {}
        self.pool: State | None = None  # start states [P, ...]
        if (self.out / AGENT_CARD).exists():
            self._resume()
        elif config.init_from:
            self._init_from(Path(config.init_from))

    # -- checkpoints ---------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {
            "actor": self.agent.actor,
            "critic": self.agent.critic,
            "slow_critic": self.agent.slow_critic,
        }

    def card(self) -> dict:
        c = self.config
        dataset = self.world_card["dataset"]
        return {
            "format": AGENT_FORMAT,
            "agent": "dreamer",
            "config": asdict(c),
            "world_model": {
                "checkpoint": c.world_model,
                "shipped": shipped_name(c.world_model),
                "model": self.world_card["model"],
                "task": self.world_card["task"],
                "env_id": self.world_card["env_id"],
                "env_kwargs": self.world_card.get("env_kwargs", {}),
            },
            "feature_dim": self.agent.model.feature_dim,
            "action_dim": self.agent.model.spec.action_dim,
            "recipe": {
                "command": self.command,
                "updates": self.step,
                "wall_time_s": round(self.elapsed, 1),
                "imagined_transitions": self.step * c.starts * c.horizon,
                # physics is used only to make the world model's data; the start windows
                # (c.dataset_id) are real frames too, counted on their own
                "physics_steps_world_model_data": dataset.get("train_steps", 0),
                "physics_steps_start_windows": int(len(self.windows.data["reward"])),
            },
            "metrics": self.metrics,
        }

    def save(self) -> None:
        tensors = {
            f"{name}/{key}": value.detach().cpu().contiguous()
            for name, module in self.modules().items()
            for key, value in module.state_dict().items()
        }
        tensors["return_scale"] = self.agent.return_scale.detach().cpu().reshape(1)
        trainer = {
            "step": self.step,
            "elapsed": self.elapsed,
            "metrics": self.metrics,
            "actor_optimizer": self.agent.actor_optimizer.state_dict(),
            "critic_optimizer": self.agent.critic_optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
        }
        write_unit(
            self.out,
            {
                AGENT_WEIGHTS: lambda path: save_file(tensors, str(path)),
                AGENT_TRAINER: lambda path: torch.save(trainer, path),
            },
            self.card(),
        )

    def _resume(self) -> None:
        card, part = read_unit(self.out, AGENT_FORMAT)
        mine = {k: v for k, v in asdict(self.config).items() if k in AGENT_IDENTITY}
        theirs = {k: v for k, v in card["config"].items() if k in AGENT_IDENTITY}
        if mine != theirs:
            raise ValueError(
                f"{self.out} holds a different agent run ({theirs}); use another --out"
            )
        load_agent_weights(self.modules(), self.agent, part(AGENT_WEIGHTS))
        saved = torch.load(part(AGENT_TRAINER), weights_only=False)
        self.agent.actor_optimizer.load_state_dict(saved["actor_optimizer"])
        self.agent.critic_optimizer.load_state_dict(saved["critic_optimizer"])
        self.step, self.elapsed, self.metrics = saved["step"], saved["elapsed"], saved["metrics"]
        self.rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        self.generator.set_state(saved["generator"])
        print(f"resumed {self.out}: update {self.step}, {self.elapsed / 60:.1f} min so far")

    def _init_from(self, folder: Path) -> None:
        """Start from another agent's weights, refused unless its networks fit this run's."""
        card, part = read_unit(folder, AGENT_FORMAT)
        theirs = {key: card[key] for key in ("feature_dim", "action_dim")}
        theirs |= {key: card["config"][key] for key in ("hidden", "bins")}
        mine = {
            "feature_dim": self.agent.model.feature_dim,
            "action_dim": self.agent.model.spec.action_dim,
            "hidden": self.config.hidden,
            "bins": self.config.bins,
        }
        if theirs != mine:
            raise ValueError(
                f"--init-from {folder} holds an agent for {theirs}; this run needs {mine}"
            )
        load_agent_weights(self.modules(), self.agent, part(AGENT_WEIGHTS))
        print(f"starting from the agent in {folder} ({card['recipe']['updates']} updates)")

    # -- the loop ------------------------------------------------------------------------------
    @torch.no_grad()
    def start_pool(self) -> State:
        """Model states filtered from ``pool`` real windows of ``context`` frames, each
        ending anywhere in an episode: [P, ...]."""
        c = self.config
        windows = self.windows.sample(c.pool, self.rng)
        states = []
        for rows in torch.arange(c.pool).split(512):
            chunk = {key: value[rows].to(self.device) for key, value in windows.items()}
            context = {key: chunk[key] for key in ("image", "state", "depth") if key in chunk}
            states.append(self.agent.model.init_state(context, chunk["action"]))
        return {key: torch.cat([s[key] for s in states]) for key in states[0]}

    def update(self) -> dict[str, float]:
        """One update from ``starts`` states of the current pool (a new pool every
        ``refresh_every`` updates, and first of all)."""
        c = self.config
        if self.pool is None or self.step % c.refresh_every == 0:
            self.pool = self.start_pool()
        rows = torch.randint(c.pool, (c.starts,), generator=self.generator, device=self.device)
        metrics = self.agent.update({key: value[rows] for key, value in self.pool.items()})
        self.step += 1
        return metrics

    def run(self) -> dict[str, float]:
        c = self.config
        print(f"dreamer in {c.world_model}: {asdict(c)}")
        logger = Logger(self.out)
        run_start = last = time.time()
        with (
            StopRequest() as stop,
            tqdm(total=c.updates, initial=self.step, unit="upd", desc="dreamer") as bar,
        ):
            while self.step < c.updates:
                metrics = self.update()
                now = time.time()
                self.elapsed += now - last
                last = now
                self.metrics = {**metrics, "updates": self.step}
                logger.log(self.step, {f"dreamer/{k}": v for k, v in metrics.items()})
                bar.update(1)
                bar.set_postfix(
                    ret=f"{metrics['imagined_return']:.2f}",
                    succ=f"{metrics['imagined_success']:.2f}",
                )
                out_of_time = c.max_minutes and now - run_start > 60 * c.max_minutes
                if (
                    self.step % c.save_every == 0
                    or self.step == c.updates
                    or out_of_time
                    or stop.requested
                ):
                    self.save()
                if out_of_time or stop.requested:
                    print(f"stopping at update {self.step}; re-run to resume")
                    break
        return self.metrics


#: Config fields that identify an agent run; the others may change between resumed runs.
AGENT_IDENTITY = {
    "world_model",
    "data",
    "dataset_id",
    "starts",
    "horizon",
    "hidden",
    "bins",
    "seed",
}
AGENT_WEIGHTS, AGENT_TRAINER, AGENT_CARD = "agent.safetensors", "trainer.pt", "card.json"


def shipped_name(folder: str | Path) -> str | None:
    """The name of a shipped world-model checkpoint ``folder`` is, if it is one: how an
    agent's card finds its world model wherever the package is installed."""
    path = Path(folder).resolve()
    return path.name if path.parent == CHECKPOINTS.resolve() else None


def world_model_folder(card: dict, folder: Path) -> Path:
    """The world model an agent card names: bundled in the agent's folder (an agent trained
    in a world model fine-tuned for it, the Dreamer loop's), a shipped one by name, or the
    path it was trained with."""
    world_model = card["world_model"]
    if world_model.get("bundled"):
        return folder / world_model["bundled"]
    if world_model.get("shipped"):
        return CHECKPOINTS / world_model["shipped"]
    return Path(world_model["checkpoint"])


def load_agent_weights(modules: dict[str, nn.Module], agent, path: Path) -> None:
    """Fill ``modules`` (and the return scale) from an agent's safetensors file."""
    tensors = load_file(str(path))
    for name, module in modules.items():
        module.load_state_dict(
            {k.removeprefix(f"{name}/"): v for k, v in tensors.items() if k.startswith(f"{name}/")}
        )
    if agent is not None:
        agent.return_scale.copy_(tensors["return_scale"][0])


class DreamerPolicy:
    """A trained agent as ``features -> action`` (the actor's mean), with the world-model
    checkpoint it was trained in: evaluate it on ``WM-*`` in ``obs_mode="latent"`` or on
    ``Phys-*`` through ``LatentObservation`` with that checkpoint. Its critic (the slow one,
    which bootstraps its returns) serves the planner as a terminal value."""

    def __init__(self, folder: str | Path, device: str = "auto") -> None:
        self.card, part = read_unit(folder, AGENT_FORMAT)
        self.world_model = str(world_model_folder(self.card, Path(folder)))
        self.device = resolve_device(device)
        config = DreamerConfig(**self.card["config"])
        features, actions = self.card["feature_dim"], self.card["action_dim"]
        self.actor = Actor(features, config.hidden, actions)
        self.critic = TwoHotCritic(features, config.hidden, config.bins)
        modules = {"actor": self.actor, "slow_critic": self.critic}
        load_agent_weights(modules, None, part(AGENT_WEIGHTS))
        for module in modules.values():
            module.to(self.device).eval()

    def reset(self) -> None:
        """The world model's filter (the env wrapper) carries the memory; nothing here."""

    def __call__(self, features: np.ndarray) -> np.ndarray:
        tensor = torch.as_tensor(features, dtype=torch.float32, device=self.device)[None]
        return self.actor.act(tensor)[0].cpu().numpy().astype(np.float32)


class DreamerOnObservations:
    """A trained agent acting on a physics env's dict observations directly: it filters them
    with its own world model (``LatentFilter``), and with ``seed`` samples its actions (the
    exploration the Dreamer loop collects) instead of taking the mean."""

    def __init__(self, folder: str | Path, seed: int | None = None, device: str = "auto") -> None:
        self.policy = DreamerPolicy(folder, device)
        model, _, _ = load_checkpoint(self.policy.world_model, self.policy.device)
        self.filter = LatentFilter(model, self.policy.device)
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator(self.policy.device).manual_seed(seed)

    def reset(self) -> None:
        self.action = None

    @torch.inference_mode()
    def __call__(self, obs: dict) -> np.ndarray:
        if self.action is None:
            features = self.filter.start(obs)
        else:
            features = self.filter.update(self.action, obs)
        tensor = torch.as_tensor(features, device=self.policy.device)[None]
        policy = self.policy.actor.distribution(tensor)
        action = policy.mean if self.generator is None else sample_action(policy, self.generator)
        self.action = action.clamp(-1.0, 1.0)[0].cpu().numpy().astype(np.float32)
        return self.action


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser, DreamerConfig)
    argv = sys.argv[1:] if argv is None else argv
    config = DreamerConfig(**vars(parser.parse_args(argv)))
    command = "python -m wm_envs.agents.dreamer " + " ".join(shlex.quote(a) for a in argv)
    print(json.dumps(DreamerRun(config, command).run()))


if __name__ == "__main__":
    main()
