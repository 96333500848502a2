"""The WorldModel protocol: the few batched torch calls a learned env makes of a model.

In the spirit of TD-MPC2's ``encode / next / reward / termination``:

* ``init_state(obs_context, action_context)`` -- a model state from K real frames
* ``step(state, action)`` -- one transition for the whole batch
* ``decode(state)`` -- image (uint8 [B, H, W, 3]), state vector, depth if trained on it
* ``outcome_scores(state)`` -- learned reward and termination / success probabilities [B]
  (``outcomes``: the flags a learned env reports; ``reward / terminated / success`` one each)
* ``observe(state, action, obs)`` -- the one-step filter: the posterior given a real frame
* ``features(state)`` -- a flat latent [B, feature_dim], the ``latent`` observation
* ``loss(batch)`` -- what the trainer minimises (``forward`` is ``loss``, for DDP)

Every model keeps the data's state statistics as the buffers ``state_mean`` and
``state_std`` (fitted by ``prepare``): it reads and predicts state vectors in units of them,
and learned envs read them to judge start states.

A model state is a dict of batch-first tensors, so envs can select and merge states of
individual envs (autoreset) without knowing what is inside. Token models (Genie, DeepVerse)
keep token grids and context frames in it; the RSSM keeps its deterministic and stochastic
parts. Batches follow DreamerV3's replay layout (see ``wm_envs.data.windows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

State = dict[str, torch.Tensor]
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """The shapes a model is built for; they must match the env it simulates."""

    image_size: int
    state_dim: int
    action_dim: int
    depth: bool = False


class WorldModel(nn.Module):
    """Base class of every learned simulator; see the module docstring for the protocol."""

    #: Registry name (``--model``).
    name: ClassVar[str]
    #: Dataclass of hyper-parameters; ``PRESETS`` maps a preset name to overrides of it.
    config_class: ClassVar[type]
    #: Training stages run in order by the trainer; most models have one.
    stages: ClassVar[tuple[str, ...]] = ("all",)
    #: What ``step`` may take: "env" = the task's actions [B, A]; models that learn their
    #: own discrete controls add "latent" (indices [B] below ``n_latent_actions``).
    action_modes: ClassVar[tuple[str, ...]] = ("env",)
    #: Attributes a learned env may set at inference (``model_settings=``), e.g. the
    #: number of generation passes, each with the inclusive (low, high) bounds it accepts.
    inference_settings: ClassVar[dict[str, tuple[float, float]]] = {}
    #: The observation modes a learned env can serve from it: a model with no image decoder
    #: (JEPA, symbolic) serves "state" and "latent" only.
    obs_modes: ClassVar[tuple[str, ...]] = ("dict", "state", "pixels", "rgbd", "latent")
    #: The probability above which the terminated and success heads' flags fire. A model
    #: whose heads cannot time a rare event to the step may lower it (Genie's
    #: ``done_threshold``, chosen on the validation seeds).
    done_threshold: float = 0.5

    def __init__(self, spec: ModelSpec, config) -> None:
        super().__init__()
        self.spec = spec
        self.config = config
        self.action_mode = "env"
        self.register_buffer("state_mean", torch.zeros(spec.state_dim))
        self.register_buffer("state_std", torch.ones(spec.state_dim))

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the model lives (read from a buffer: a fitted symbolic model has no
        parameters)."""
        return self.state_mean.device

    def prepare(self, batch: Batch) -> None:
        """Fit data statistics from a first batch, before training: here the state
        normaliser; models that fit more (a background) extend this."""
        states = batch["state"].flatten(0, 1)  # [N, S]
        self.state_mean.copy_(states.mean(0))
        self.state_std.copy_(states.std(0).clamp_min(1e-3))

    def normalise_state(self, state: torch.Tensor) -> torch.Tensor:
        """State vectors [..., S] -> in units of the data's statistics [..., S]."""
        return (state - self.state_mean) / self.state_std

    def denormalise_state(self, normalised: torch.Tensor) -> torch.Tensor:
        """The inverse of ``normalise_state``: [..., S] -> state vectors [..., S]."""
        return normalised * self.state_std + self.state_mean

    def adapt_weights(
        self, weights: dict[str, torch.Tensor], spec: ModelSpec, config: dict
    ) -> dict[str, torch.Tensor]:
        """A checkpoint's weights, saved by a model of ``spec`` and ``config`` (its card's), as
        weights this model can continue from (``wm-envs train --init-from``). Here the specs
        must be equal; a model whose architecture can absorb a difference (the RSSM: RGB to
        RGB-D) extends this."""
        if spec != self.spec:
            raise ValueError(
                f"the checkpoint is a {self.name} for {spec}, not for {self.spec}; "
                f"{self.name} cannot continue it"
            )
        return weights

    def set_stage(self, stage: str) -> None:
        """Select which parts train (multi-stage models)."""

    def init_state(
        self,
        obs_context: Batch,
        action_context: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> State:
        """State after observing ``obs_context`` (image uint8 [B, K, H, W, 3], state
        [B, K, S]); ``action_context`` [B, K, A] holds the action that led into each frame
        (the first is ignored). ``generator`` makes stochastic models sample; None = mode."""
        raise NotImplementedError

    def step(
        self, state: State, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> State:
        """One transition under ``action`` [B, A]."""
        raise NotImplementedError

    def decode(self, state: State) -> dict[str, torch.Tensor]:
        """``image`` uint8 [B, H, W, 3], ``state`` [B, S] and, if trained on it, ``depth``."""
        raise NotImplementedError

    def state_vector(self, state: State) -> torch.Tensor:
        """The state vector [B, S] alone, without the cost of decoding images."""
        return self.decode(state)["state"]

    def outcome_scores(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reward and the probabilities of termination and success [B], from the learned
        heads: what planners and imagined returns score (each model implements this one)."""
        raise NotImplementedError

    def outcomes(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reward [B] and the terminated and success flags [B] (bool) a learned env reports."""
        reward, terminated, success = self.outcome_scores(state)
        return reward, terminated > self.done_threshold, success > self.done_threshold

    def reward(self, state: State) -> torch.Tensor:
        return self.outcomes(state)[0]

    def terminated(self, state: State) -> torch.Tensor:
        return self.outcomes(state)[1]

    def success(self, state: State) -> torch.Tensor:
        return self.outcomes(state)[2]

    def observe(
        self,
        state: State,
        action: torch.Tensor,
        obs: Batch,
        generator: torch.Generator | None = None,
    ) -> State:
        """The one-step filter: the state after ``action`` [B, A] led from ``state`` to the
        real observation ``obs`` (image uint8 [B, H, W, 3], state [B, S]), i.e. the posterior.
        What acting on a real env with a latent policy needs."""
        raise NotImplementedError(f"a {self.name} model has no one-step filter")

    def features(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def extra_info(self, state: State) -> dict[str, torch.Tensor]:
        """What a learned env adds to ``info`` besides the outcome flags, batch-first
        tensors [B, ...] by name (DeepVerse: its predicted camera pose); most models: none."""
        return {}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def validation_metrics(self, batch: Batch, context: int) -> dict[str, float]:
        """Model-specific metrics on held-out episode windows (image [B, T, H, W, 3], ...)
        observed for ``context`` frames; the trainer logs them beside open-loop PSNR."""
        return {}

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(batch)

    def head_losses(
        self,
        batch: Batch,
        state: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        success: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Losses of the heads on a model's features: the normalised state vector [..., S],
        the reward [...] and the terminated and success logits [...], each in the batch's
        [B, T] layout or flattened to [B*T] -> (state, reward, done) losses [].

        The state loss is a Huber loss in units of the data's std (velocities are
        heavy-tailed: a tumbling object), summed over the vector; reward a squared error;
        done the binary cross-entropies of terminated and success, summed."""
        state_target = self.normalise_state(batch["state"]).reshape(state.shape)
        state_loss = F.huber_loss(state, state_target, reduction="none").sum(-1).mean()
        return state_loss, *self.outcome_losses(batch, reward, terminated, success)

    def outcome_losses(
        self, batch: Batch, reward: torch.Tensor, terminated: torch.Tensor, success: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward and done losses of ``head_losses`` alone -> (reward, done) losses []."""
        reward_loss = (reward - batch["reward"].reshape(reward.shape)).square().mean()
        bce = F.binary_cross_entropy_with_logits
        done_loss = bce(terminated, batch["terminated"].reshape(terminated.shape).float()) + bce(
            success, batch["success"].reshape(success.shape).float()
        )
        return reward_loss, done_loss


def state_motion(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Change of the state vector into each step [B, T, S] and where it is defined [B, T]
    (not at the first step of an episode)."""
    states = batch["state"]
    previous = torch.cat([states[:, :1], states[:, :-1]], 1)
    valid = ~batch["is_first"].bool()
    valid[:, 0] = False  # the window's first step has no previous state in the window
    return states - previous, valid


def episode_starts(is_first: torch.Tensor) -> torch.Tensor:
    """For each step of a window, the index of its episode's first step there: the last step
    at or before it with ``is_first``, else the window's first. [B, T] -> [B, T]."""
    steps = torch.arange(is_first.shape[1], device=is_first.device)
    return torch.where(is_first.bool(), steps, 0).cummax(1).values


def motion_scale(batch: Batch) -> torch.Tensor:
    """The std of the state's change per step [S]: the unit motion heads predict in, so that
    every dimension weighs alike in their loss."""
    motion, valid = state_motion(batch)
    return motion[valid].std(0).clamp_min(1e-4)


def select_state(mask: torch.Tensor, new: State, old: State) -> State:
    """Per batch row, ``new`` where ``mask`` [B] is true, else ``old``."""
    return {
        key: torch.where(mask.view(-1, *([1] * (old[key].dim() - 1))), new[key], old[key])
        for key in old
    }


def images_to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-0.5, 0.5]."""
    return image.permute(*range(image.dim() - 3), -1, -3, -2).float() / 255.0 - 0.5


def float_to_images(image: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] in [-0.5, 0.5] -> uint8 [..., H, W, 3]."""
    pixels = ((image + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(*range(pixels.dim() - 3), -2, -1, -3)
