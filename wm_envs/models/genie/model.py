"""Genie (Bruce et al. 2024) as a world model: tokenizer, latent actions, MaskGIT dynamics.

Three parts, trained one after the other by the trainer (``stages``), then their heads again:

1. ``tokenizer`` -- an FSQ autoencoder turns each 64x64 frame into 8x8 discrete tokens.
2. ``latent_actions`` -- a latent action model learns, without action labels, a handful of
   discrete actions (8 by default) that explain how one frame becomes the next.
3. ``dynamics`` -- a MaskGIT transformer predicts the next frame's tokens from past frames
   and the latent action. Trained in the same stage on top of its features: heads for the
   24-dim state, reward, termination and success, and the *action adapter*, which maps the
   task's continuous action to the latent action the LAM infers for that transition.
4. ``heads`` -- the heads once more, now on the features of frames the model generates open
   loop, which is what they read in a rollout (``Genie.rollout_head_loss``).

Two ways to act (``action_mode``): ``"env"`` (default) takes the task's actions [B, A]
through the adapter; ``"latent"`` takes latent action indices [B] directly (Genie's own
control, a ``Discrete(n_latent_actions)`` space).

The model state holds the current frame's tokens and the FSQ codes it decodes from (the
expected codes of generated tokens, see ``Dynamics.generate``), the last real frame's decoding
and the tokenizer's error on it (added back where a decoding has not moved from it:
``residual_tolerance``), the dynamics' cached temporal keys and values of the last ``memory``
frames (so a step runs only the new frame), the current frame's time (for the rotary time
embedding), its features and, with ``integrate_state``, the integrated state vector (with
``outcome_history``, those of the last frames too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wm_envs.models.base import (
    Batch,
    ModelSpec,
    State,
    WorldModel,
    episode_starts,
    float_to_images,
    images_to_float,
    motion_scale,
    state_motion,
)
from wm_envs.models.genie.controllability import controllability
from wm_envs.models.genie.dynamics import Dynamics
from wm_envs.models.genie.latent_actions import LatentActionModel
from wm_envs.models.genie.tokenizer import Tokenizer
from wm_envs.models.genie.transformer import temporal_mask
from wm_envs.models.layers import median_frame, mlp


@dataclass(frozen=True)
class GenieConfig:
    patch: int = 8  # 8x8-pixel patches: 64 tokens per 64x64 frame (the count sets the cost)
    heads: int = 4
    tokenizer_width: int = 96
    tokenizer_depth: int = 2  # transformer blocks of the decoder (the encoder is per patch)
    token_levels: tuple[int, ...] = (8, 5, 5, 5)  # FSQ: 1000 token codes
    action_width: int = 64
    action_depth: int = 2
    action_levels: tuple[int, ...] = (2, 2, 2)  # FSQ: 8 latent actions
    action_balance: float = 1.0  # weight of the terms that keep every latent action in use
    dynamics_width: int = 96
    dynamics_depth: int = 4
    memory: int = 4  # past frames each frame attends to
    feature_channels: int = 8  # features: this many per token (the `latent` observation)
    hidden: int = 128  # width of the heads and of the action adapter
    maskgit_steps: int = 4  # generation passes per frame (the model attribute may change it)
    temperature: float = 1.0  # sampling temperature when a generator is given
    state_weight: float = 1.0
    reward_weight: float = 1.0
    done_weight: float = 0.1  # terminated and success heads
    adapter_weight: float = 1.0
    #: The adapter also reads the current frame's features, so that one task action can map
    #: to different latent actions in contact and in free space.
    adapter_context: bool = False
    #: The dynamics also reads the task action itself beside the latent action, so that task
    #: actions drive rollouts whatever latent action the adapter picks.
    task_action_input: bool = False
    #: The share of transitions on which training hides the task action (zeros) from the parts
    #: that read it (the dynamics with ``task_action_input``, the motion head), so that they
    #: still work without one (``action_mode="latent"``, the LAM's inferred actions).
    task_action_dropout: float = 0.5
    #: The share of transitions on which training hides the latent action from the dynamics
    #: (the index "none"), so that with ``task_action_input`` it also learns to generate the
    #: next frame from the task action alone (``env_action_route="task"``).
    latent_action_dropout: float = 0.0
    #: What ``action_mode="env"`` steps on: "adapter" (the latent action the adapter maps the
    #: task action to, and with ``task_action_input`` the task action too) or "task" (the task
    #: action alone, the latent action "none"; needs ``task_action_input`` and
    #: ``latent_action_dropout``), which skips the adapter's guess of a latent action where
    #: one task action moves the gripper differently in contact and in free space.
    env_action_route: str = "adapter"
    #: Loss weight of the dynamics' target tokens that differ from the frame before, against
    #: 1 for the others (see ``Dynamics``).
    changed_token_weight: float = 1.0
    #: Above 0: the dynamics' training mask ratios are uniform between this and 1 (the Genie
    #: paper: 0.5), not MaskGIT's cosine schedule over [0, 1].
    mask_ratio_min: float = 0.0
    #: The state vector a rollout reports starts at the last real state and adds the change a
    #: motion head reads off the features of the frame before and the frame generated and the
    #: task action, as the RSSM's does; otherwise the state head reads it off the generated
    #: frame's features.
    integrate_state: bool = True
    motion_weight: float = 1.0
    #: Above 0 (with ``integrate_state``): the reward, terminated and success heads also read
    #: the state vectors of the last this many frames (a rollout's integrated ones), so that
    #: an outcome the state's course decides (Grasp: a lift held for 5 steps) can be read
    #: where generated frames show it too faintly.
    outcome_history: int = 0
    #: Above 0: each heads-stage update starts its rollouts after a number of real frames
    #: drawn uniformly from this to ``memory`` (1: as a rollout from an episode's first
    #: frame), not always after ``memory``.
    rollout_context_min: int = 0
    #: In the heads stage, the terminated and success heads must fire on at least one of
    #: the last this many steps up to each step physics flags (the largest logit there is
    #: scored as the positive; the other steps of the window are not scored), not exactly
    #: on it: a rollout that lags physics by a step or two still scores where it fires.
    flag_window: int = 1
    #: The terminated and success heads' flags fire above this probability. A head that
    #: reads a rollout's drifting state spreads a success over the steps around it, so its
    #: peak may stay below 0.5 (an inference setting too).
    done_threshold: float = 0.5
    #: Above 0: a decoded frame adds back the tokenizer's error on the last real frame
    #: wherever it differs from that frame's decoding by less than this (pixels in
    #: [-0.5, 0.5]; fading to none at it), so what has not moved keeps its real pixels.
    residual_tolerance: float = 0.1
    #: Generation's guidance by the latent action: each FSQ dimension's log-probabilities
    #: under the action plus (this - 1) times their excess over the mean probability under
    #: all latent actions (classifier-free guidance with the action marginalised out, so no
    #: training is needed). 1: off; above 1 an action's effect is drawn more sharply; each
    #: MaskGIT pass then runs every latent action (an inference setting too). A step on the
    #: task action alone (``env_action_route="task"``) has no latent action to guide by.
    action_guidance: float = 1.0


PRESETS = {
    "tiny": {
        "patch": 16,
        "heads": 2,
        "tokenizer_width": 32,
        "tokenizer_depth": 1,
        "token_levels": (5, 5),
        "action_width": 32,
        "action_depth": 1,
        "action_levels": (2, 2),
        "dynamics_width": 32,
        "dynamics_depth": 1,
        "memory": 2,
        "feature_channels": 2,
        "hidden": 32,
        "maskgit_steps": 2,
    },  # tests
    "small": {},  # 1.45M parameters: the shipped Grasp model trained in 1.8 h on 2 CPU cores
    # GPU: wider and deeper parts, a longer memory, more MaskGIT passes; "large" also halves
    # the patch (4x4 pixels: 256 tokens per frame) for sharper frames.
    "medium": {
        "heads": 8,
        "tokenizer_width": 256,
        "tokenizer_depth": 4,
        "action_width": 128,
        "action_depth": 4,
        "dynamics_width": 384,
        "dynamics_depth": 8,
        "memory": 8,
        "feature_channels": 16,
        "hidden": 512,
        "maskgit_steps": 8,
    },
    "large": {
        "patch": 4,
        "heads": 8,
        "tokenizer_width": 512,
        "tokenizer_depth": 8,
        "action_width": 256,
        "action_depth": 6,
        "dynamics_width": 768,
        "dynamics_depth": 12,
        "memory": 16,
        "feature_channels": 4,
        "hidden": 1024,
        "maskgit_steps": 12,
    },
}


def scatter_valid(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Values [M] of the ``valid`` [B, T] steps back into the [B, T] grid, -inf elsewhere."""
    grid = values.new_full(valid.shape, float("-inf"))
    return grid.masked_scatter(valid, values)


def windowed_flag_loss(
    logits: torch.Tensor, flags: torch.Tensor, valid: torch.Tensor, window: int
) -> torch.Tensor:
    """Binary cross-entropy of a flag head that must fire on at least one of the ``window``
    steps up to each flagged step (the largest logit there is the positive) and on no
    ``valid`` step outside those windows: logits [B, T], flags and valid [B, T] bool -> []."""
    steps = logits.shape[1]
    late = [F.pad(logits[:, : steps - k], (k, 0), value=float("-inf")) for k in range(window)]
    best = torch.stack(late).amax(0)  # [B, T]: the largest logit of the window ending at t
    ahead = [F.pad(flags[:, k:], (0, k)) for k in range(window)]
    near = torch.stack(ahead).any(0)  # [B, T]: a flag here or within window - 1 steps
    positives, negatives = best[flags], logits[valid & ~near]
    losses = torch.cat(
        [
            F.binary_cross_entropy_with_logits(
                positives, torch.ones_like(positives), reduction="none"
            ),
            F.binary_cross_entropy_with_logits(
                negatives, torch.zeros_like(negatives), reduction="none"
            ),
        ]
    )
    return losses.mean()


class Genie(WorldModel):
    """Genie world model (see module docstring)."""

    name = "genie"
    config_class = GenieConfig
    stages = ("tokenizer", "latent_actions", "dynamics", "heads")
    action_modes = ("env", "latent")
    #: Generation passes per frame (with none, every token stays masked), the sampling
    #: temperature (above zero: the logits are divided by it), the residual tolerance
    #: (0: frames exactly as their codes decode), the heads' done threshold and the latent
    #: action's guidance (1: off; 0: the action is marginalised out).
    inference_settings = {
        "maskgit_steps": (1, 64),
        "temperature": (1e-3, 100.0),
        "residual_tolerance": (0.0, 1.0),
        "done_threshold": (0.01, 0.99),
        "action_guidance": (0.0, 10.0),
    }

    def __init__(self, spec: ModelSpec, config: GenieConfig) -> None:
        super().__init__(spec, config)
        if spec.depth:
            raise ValueError("genie models RGB frames; train it on a dataset without depth")
        if spec.image_size % config.patch:
            raise ValueError(
                f"image size {spec.image_size} is not a multiple of the patch size {config.patch}"
            )
        c = config
        size = spec.image_size
        self.tokenizer = Tokenizer(
            size, c.patch, c.tokenizer_width, c.tokenizer_depth, c.heads, c.token_levels
        )
        self.latent_actions = LatentActionModel(
            size,
            c.patch,
            c.action_width,
            c.action_depth,
            c.heads,
            c.action_levels,
            c.action_balance,
        )
        self.n_latent_actions = self.latent_actions.fsq.size
        tokens = (size // c.patch) ** 2
        self.dynamics = Dynamics(
            tokens,
            c.token_levels,
            self.n_latent_actions,
            c.dynamics_width,
            c.dynamics_depth,
            c.heads,
            c.memory,
            c.feature_channels,
            spec.action_dim if c.task_action_input else 0,
            c.changed_token_weight,
            c.mask_ratio_min,
        )
        if c.env_action_route not in ("adapter", "task"):
            raise ValueError(
                f"env_action_route must be 'adapter' or 'task', got {c.env_action_route!r}"
            )
        if c.env_action_route == "task" and not (
            c.task_action_input and c.latent_action_dropout > 0
        ):
            raise ValueError(
                "env_action_route='task' steps on the task action alone: it needs "
                "task_action_input and a latent_action_dropout above 0 to have learned that"
            )
        if c.outcome_history and not c.integrate_state:
            raise ValueError("outcome_history reads the integrated state: set integrate_state")
        if c.flag_window < 1:
            raise ValueError(f"flag_window must be at least 1, got {c.flag_window}")
        if not 0 <= c.rollout_context_min <= c.memory:
            raise ValueError(
                f"rollout_context_min must lie in [0, memory={c.memory}], "
                f"got {c.rollout_context_min}"
            )
        features = tokens * c.feature_channels
        outcome_inputs = features + c.outcome_history * spec.state_dim
        self.heads = nn.ModuleDict(
            {
                "state": mlp(features, c.hidden, spec.state_dim),
                "reward": mlp(outcome_inputs, c.hidden, 1),
                "terminated": mlp(outcome_inputs, c.hidden, 1),
                "success": mlp(outcome_inputs, c.hidden, 1),
            }
        )
        adapter_inputs = spec.action_dim + (features if c.adapter_context else 0)
        self.adapter = mlp(adapter_inputs, c.hidden, self.n_latent_actions)
        self.parts = {
            "tokenizer": [self.tokenizer],
            "latent_actions": [self.latent_actions],
            "dynamics": [self.dynamics, self.heads, self.adapter],
            "heads": [self.heads],
        }
        if c.integrate_state:
            motion_inputs = 2 * features + spec.state_dim + spec.action_dim
            self.motion_head = mlp(motion_inputs, c.hidden, spec.state_dim)
            self.register_buffer("motion_std", torch.ones(spec.state_dim))
            self.parts["dynamics"].append(self.motion_head)
            self.parts["heads"].append(self.motion_head)
        self.stage = self.stages[-1]
        #: Generation, decoding and outcomes; envs and benchmarks may change these between steps.
        self.maskgit_steps, self.temperature = c.maskgit_steps, c.temperature
        self.residual_tolerance, self.done_threshold = c.residual_tolerance, c.done_threshold
        self.action_guidance = c.action_guidance

    @property
    def feature_dim(self) -> int:
        return self.dynamics.tokens * self.config.feature_channels

    # -- training -------------------------------------------------------------------------------
    def prepare(self, batch: Batch) -> None:
        super().prepare(batch)
        self.tokenizer.background.copy_(median_frame(images_to_float(batch["image"])))
        if self.config.integrate_state:
            self.motion_std.copy_(motion_scale(batch))

    def adapt_weights(
        self, weights: dict[str, torch.Tensor], spec: ModelSpec, config: dict
    ) -> dict[str, torch.Tensor]:
        """As ``WorldModel.adapt_weights``, and a checkpoint with a shorter ``outcome_history``
        (or none) continues with a longer one: the outcome heads' weights on the added, oldest
        state vectors start at zero, so the heads read as the checkpoint's until training
        moves them."""
        weights = super().adapt_weights(weights, spec, config)
        saved, wanted = config.get("outcome_history", 0), self.config.outcome_history
        if saved > wanted:
            raise ValueError(
                f"the checkpoint's outcome heads read {saved} state vectors; this model's "
                f"outcome_history is {wanted}, and a shorter history cannot continue them"
            )
        weights, added = dict(weights), (wanted - saved) * self.spec.state_dim
        for head in ("reward", "terminated", "success"):
            name = f"heads.{head}.0.weight"  # [hidden, F + H * S]
            old = weights[name]
            zeros = old.new_zeros(old.shape[0], added)
            weights[name] = torch.cat(
                [old[:, : self.feature_dim], zeros, old[:, self.feature_dim :]], 1
            )
        return weights

    def set_stage(self, stage: str) -> None:
        """Train only the part of ``stage``; the others are frozen."""
        if stage not in self.parts:
            raise ValueError(f"unknown genie stage {stage!r}; stages: {self.stages}")
        self.stage = stage
        for modules in self.parts.values():
            for module in modules:
                module.requires_grad_(any(module is part for part in self.parts[stage]))

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        pixels = images_to_float(batch["image"])  # [B, T, 3, H, W]
        if self.stage == "tokenizer":
            loss = self.tokenizer.loss(pixels.flatten(0, 1))
            return loss, {"loss": loss.item()}
        if self.stage == "latent_actions":
            loss, metrics = self.latent_actions.loss(pixels, batch["is_first"])
            return loss, {"loss": loss.item(), **metrics}
        if self.stage == "heads":
            return self.rollout_head_loss(batch)
        return self._dynamics_loss(batch, pixels)

    def _dynamics_loss(
        self, batch: Batch, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        size, frames = pixels.shape[:2]
        is_first = batch["is_first"]
        with torch.no_grad():
            tokens = self.tokenizer.tokenize(pixels.flatten(0, 1)).view(size, frames, -1)
            actions = self.infer_actions(pixels, is_first)  # [B, T]
        labelled = actions != self.n_latent_actions  # transitions with an inferred action
        task = None  # [B, T, A]: drawn only where read, so that other runs draw as before
        if c.task_action_input or c.integrate_state:
            task = self.shown_actions(batch["action"]) * labelled[..., None]
        dynamics_task = task if c.task_action_input else None
        dynamics_actions = actions  # [B, T]: with latent_action_dropout, some hidden ("none")
        if c.latent_action_dropout > 0:
            hidden_latent = torch.rand(actions.shape, device=actions.device)
            dynamics_actions = actions.masked_fill(
                hidden_latent < c.latent_action_dropout, self.n_latent_actions
            )
        token_loss, hidden, metrics = self.dynamics.loss(
            tokens, dynamics_actions, is_first.cumsum(1), dynamics_task
        )
        features = self.dynamics.features(hidden)  # [B, T, F]
        history = self.state_history(batch["state"], is_first) if c.outcome_history else None
        state_loss, reward_loss, done_loss, _ = self._head_losses(batch, features, history)
        previous = F.pad(features[:, :-1], (0, 0, 1, 0))  # [B, T, F]: frame t-1's
        adapter_inputs = self.adapter_inputs(previous.detach(), batch["action"])  # [B, T, A (+ F)]
        adapter_logits = self.adapter(adapter_inputs[labelled])  # [M, n]
        adapter_loss = F.cross_entropy(adapter_logits, actions[labelled])
        motion_loss = torch.zeros(())
        if c.integrate_state:
            motion, moved = state_motion(batch)  # [B, T, S], [B, T]
            motion_loss = self._motion_loss(previous, features, batch["state"], motion, task, moved)
        total = (
            token_loss
            + c.state_weight * state_loss
            + c.reward_weight * reward_loss
            + c.done_weight * done_loss
            + c.adapter_weight * adapter_loss
            + c.motion_weight * motion_loss
        )
        adapter_accuracy = (adapter_logits.argmax(-1) == actions[labelled]).float().mean()
        return total, {
            "loss": total.item(),
            "tokens": token_loss.item(),
            "state": state_loss.item(),
            "reward": reward_loss.item(),
            "done": done_loss.item(),
            "adapter": adapter_loss.item(),
            "motion": motion_loss.item(),
            "adapter/accuracy": adapter_accuracy.item(),
            **metrics,
        }

    def rollout_head_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The heads' losses (and the motion head's) on the features of the frames the model
        generates open loop under the window's task actions, after ``memory`` real frames.

        In the dynamics stage the heads read the features of real frames; a rollout gives
        them the features of generated ones, which drift from those. Here the generation is
        done as a rollout does it (the adapter's latent action, the mode of each MaskGIT
        pass) and does not train; each generated frame is scored against the real step's
        state, reward and flags, until an episode starts in the window. The motion head
        reads the generated frame, the one generated before it and the task action; it is
        scored on one step from the real state before, and on the state it integrates over
        the whole rollout from the last real one, as a rollout reports it. The rollout
        starts after ``memory`` real frames, or with ``rollout_context_min`` after the last
        ``shown`` of them, drawn per update."""
        c = self.config
        context, frames = c.memory, batch["image"].shape[1]
        if frames <= context:
            raise ValueError(
                f"the heads stage generates frames after {context} real ones; train it on "
                f"windows longer than that (--window {context + 1} or more), got {frames}"
            )
        shown = context
        if c.rollout_context_min:
            shown = int(torch.randint(c.rollout_context_min, context + 1, ()))
        is_first = batch["is_first"].clone()  # [B, T]: the first shown frame starts the course
        is_first[:, context - shown] = True
        with torch.no_grad():
            real = {key: batch[key][:, context - shown : context] for key in ("image", "state")}
            state = self.init_state(real, batch["action"][:, context - shown : context])
            before, after = [], []
            for t in range(context, frames):
                before.append(state["features"])
                state = self.step(state, batch["action"][:, t])
                after.append(state["features"])
        previous, features = torch.stack(before, 1), torch.stack(after, 1)  # [B, T-K, F]
        started = batch["is_first"][:, 1:].cumsum(1) > 0  # [B, T-1]: an episode began by t
        valid = ~started[:, context - 1 :]  # [B, T-K]: the rollout is still in its episode
        if not valid.any():  # every window starts an episode within its context: no score
            return self.heads["state"](features[valid]).sum(), {"loss": 0.0}  # 0, in the graph
        targets = {
            key: batch[key][:, context:][valid]
            for key in ("state", "reward", "terminated", "success")
        }  # [M, ...]
        motion_loss = integrated_loss = torch.zeros(())
        history = None
        if c.integrate_state:
            motion, moved = state_motion(batch)  # [B, T, S], [B, T]
            tasks = self.shown_actions(batch["action"][:, context:])  # [B, T-K, A]
            motion_loss = self._motion_loss(
                previous,
                features,
                batch["state"][:, context:],
                motion[:, context:],
                tasks,
                moved[:, context:] & valid,
            )
            # The state a rollout reports: integrated from the last real one, the gradient
            # through every step, scored in units of the state's std as the state head is.
            vector, vectors, errors = batch["state"][:, context - 1], [], []  # [B, S]
            for j in range(frames - context):
                change = self.motion(previous[:, j], features[:, j], vector, tasks[:, j])
                vector = vector + change * self.motion_std
                vectors.append(vector)
                truth = self.normalise_state(batch["state"][:, context + j])
                errors.append(F.huber_loss(self.normalise_state(vector), truth, reduction="none"))
            integrated_loss = torch.stack(errors, 1)[valid].sum(-1).mean()  # [M, S] -> []
            if c.outcome_history:  # the context's real states, then the integrated ones
                course = torch.cat([batch["state"][:, :context], torch.stack(vectors, 1)], 1)
                history = self.state_history(course.detach(), is_first)[:, context:][valid]
        state_loss, reward_loss, done_loss, flags = self._head_losses(
            targets, features[valid], history
        )  # history: [M, H, S]
        success = flags["success"]
        if c.flag_window > 1:
            done_loss = sum(
                windowed_flag_loss(
                    scatter_valid(logits, valid),
                    batch[key][:, context:].bool() & valid,
                    valid,
                    c.flag_window,
                )
                for key, logits in flags.items()
            )
        total = (
            c.state_weight * state_loss
            + c.reward_weight * reward_loss
            + c.done_weight * done_loss
            + c.motion_weight * (motion_loss + integrated_loss)
        )
        return total, {
            "loss": total.item(),
            "state": state_loss.item(),
            "reward": reward_loss.item(),
            "done": done_loss.item(),
            "motion": motion_loss.item(),
            "integrated_state": integrated_loss.item(),
            "success_accuracy": ((success > 0) == targets["success"].bool()).float().mean().item(),
        }

    def _head_losses(
        self, targets: Batch, features: torch.Tensor, history: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``head_losses`` of the heads on features [..., F] and, with ``outcome_history``,
        the state history [..., H, S] against ``targets`` (state, reward and flags in the
        features' layout), and the terminated and success logits [...]."""
        outcome = self.outcome_inputs(features, history)
        flags = {key: self.heads[key](outcome).squeeze(-1) for key in ("terminated", "success")}
        losses = self.head_losses(
            targets,
            self.heads["state"](features),
            self.heads["reward"](outcome).squeeze(-1),
            flags["terminated"],
            flags["success"],
        )
        return *losses, flags

    def outcome_inputs(self, features: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """What the reward, terminated and success heads read: the features [..., F], with
        ``outcome_history`` followed by the normalised state history [..., H, S]."""
        if not self.config.outcome_history:
            return features
        return torch.cat([features, self.normalise_state(history).flatten(-2)], -1)

    def state_history(self, states: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
        """Each frame's last ``outcome_history`` state vectors, oldest first, not reaching
        back past its episode's first frame (repeated there): states [B, T, S] and
        is_first [B, T] -> [B, T, H, S]."""
        size, frames, dim = states.shape
        steps = torch.arange(frames, device=states.device)
        first = episode_starts(is_first)  # [B, T]
        back = torch.arange(self.config.outcome_history - 1, -1, -1, device=states.device)
        index = torch.maximum(steps[:, None] - back, first[..., None])  # [B, T, H]
        gathered = states.gather(1, index.flatten(1)[..., None].expand(-1, -1, dim))
        return gathered.view(size, frames, -1, dim)

    def _motion_loss(
        self,
        previous: torch.Tensor,
        features: torch.Tensor,
        states: torch.Tensor,
        motion: torch.Tensor,
        task: torch.Tensor | None,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """The motion head's one-step loss: from the features of frames t-1 and t [B, T, F],
        the real state before t (``states`` - ``motion``, each [B, T, S]) and the task action
        [B, T, A], the change into t in units of ``motion_std``, where ``mask`` [B, T]."""
        predicted = self.motion(previous, features, states - motion, task)  # [B, T, S]
        error = F.huber_loss(predicted, motion / self.motion_std, reduction="none").sum(-1)
        return (error * mask).sum() / mask.sum().clamp_min(1)

    def shown_actions(self, action: torch.Tensor) -> torch.Tensor:
        """Task actions [..., A] with each hidden (zeros) at ``task_action_dropout``."""
        shown = (
            torch.rand(action.shape[:-1], device=action.device) >= self.config.task_action_dropout
        )
        return action.float() * shown[..., None]

    def motion(
        self,
        previous: torch.Tensor,
        features: torch.Tensor,
        vector: torch.Tensor,
        action: torch.Tensor | None,
    ) -> torch.Tensor:
        """The state's change into a frame, in units of ``motion_std``: the features of the
        frame before [..., F] and of the frame [..., F], the state before [..., S] and the
        task action into the frame [..., A] (None: zeros, none known) -> [..., S]."""
        if action is None:
            action = vector.new_zeros(*vector.shape[:-1], self.spec.action_dim)
        inputs = torch.cat([previous, features, self.normalise_state(vector), action.float()], -1)
        return self.motion_head(inputs)

    def validation_metrics(self, batch: Batch, context: int) -> dict[str, float]:
        return controllability(self, batch, context)

    # -- latent actions ----------------------------------------------------------------------------
    def infer_actions(self, pixels: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
        """Latent action into each frame, from the frames: pixels [B, T, 3, H, W] -> [B, T];
        ``n_latent_actions`` ("none") at each episode's first frame and at t = 0."""
        codes = self.latent_actions.infer(pixels, is_first.cumsum(1))  # [B, T-1]
        actions = F.pad(codes, (1, 0), value=self.n_latent_actions)  # [B, T]
        return actions.masked_fill(is_first, self.n_latent_actions)

    def adapter_inputs(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The adapter's input: task actions [..., A], after them the features [..., F] of
        the frame they act on where ``adapter_context`` is set."""
        action = action.float()
        return torch.cat([action, features], -1) if self.config.adapter_context else action

    def latent_action(
        self, state: State, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """What ``step`` was given in ``state`` -> latent action indices [B], per
        ``action_mode``: for task actions [B, A] the adapter's choice (the mode, or a sample
        with ``generator``) or with ``env_action_route="task"`` "none", or the indices [B]
        themselves."""
        if self.action_mode == "latent":
            if action.dim() != 1 or action.dtype.is_floating_point or action.dtype == torch.bool:
                raise ValueError(
                    f"latent actions are integer indices [B], got "
                    f"{action.dtype} {tuple(action.shape)}"
                )
            if action.numel() and (action.min() < 0 or action.max() >= self.n_latent_actions):
                raise ValueError(
                    f"latent actions must lie in [0, {self.n_latent_actions}), got "
                    f"{action.min().item()}..{action.max().item()}"
                )
            return action.long()
        if self.action_mode != "env":
            raise ValueError(
                f"action_mode must be one of {self.action_modes}, got {self.action_mode!r}"
            )
        if action.dim() != 2 or action.shape[1] != self.spec.action_dim:
            raise ValueError(
                f"actions must be [B, {self.spec.action_dim}], got {tuple(action.shape)}"
            )
        if self.config.env_action_route == "task":
            return action.new_full(action.shape[:1], self.n_latent_actions, dtype=torch.long)
        logits = self.adapter(self.adapter_inputs(state["features"], action))  # [B, n]
        if generator is None:
            return logits.argmax(-1)
        return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]

    # -- the protocol ------------------------------------------------------------------------------
    def init_state(
        self,
        obs_context: Batch,
        action_context: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> State:
        """State after the real frames ``obs_context["image"]`` [B, K, H, W, 3]. The latent
        actions between them are inferred from the frames (as in training), so
        ``action_context`` is not needed."""
        pixels = images_to_float(obs_context["image"])  # [B, K, 3, H, W]
        size, frames = pixels.shape[:2]
        is_first = torch.zeros(size, frames, dtype=torch.bool, device=pixels.device)
        is_first[:, 0] = True
        tokens = self.tokenizer.tokenize(pixels.flatten(0, 1)).view(size, frames, -1)
        actions = self.infer_actions(pixels, is_first)
        mask = temporal_mask(is_first.cumsum(1), self.config.memory)
        task = None
        if self.config.task_action_input and action_context is not None:
            task = action_context.float().clone()  # [B, K, A]: the action into each frame
            task[:, 0] = 0.0  # nothing led into the first
        hidden, cache = self.dynamics(tokens, actions, mask, task_action=task)
        memory = self.config.memory
        keys = torch.stack([k for k, _ in cache], 1)[:, :, -memory:]  # [B, L, <=K, P, E]
        values = torch.stack([v for _, v in cache], 1)[:, :, -memory:]
        missing = memory - keys.shape[2]  # fewer context frames than memory: pad, invalid
        pad = (0, 0, 0, 0, missing, 0)
        valid = torch.arange(memory, device=pixels.device).expand(size, -1) >= missing
        features = self.dynamics.features(hidden[:, -1])  # [B, F]
        codes = self.tokenizer.fsq.indices_to_codes(tokens[:, -1])  # [B, P, d]
        anchor = self.tokenizer.decode(codes)  # [B, 3, H, W]
        state = {
            "tokens": tokens[:, -1],
            "codes": codes,
            "anchor": anchor,
            "residual": pixels[:, -1] - anchor,
            "keys": F.pad(keys, pad),
            "values": F.pad(values, pad),
            "valid": valid,
            "time": torch.full((size,), frames - 1, device=pixels.device),
            "features": features,
        }
        if self.config.integrate_state:  # the last real state; without one, the head's reading
            known = obs_context.get("state")
            if known is None:
                state["vector"] = self.denormalise_state(self.heads["state"](features))
                known = state["vector"][:, None]  # [B, 1, S]
            else:
                state["vector"] = known[:, -1].float()  # [B, S]
            if self.config.outcome_history:
                history = self.state_history(known.float(), is_first[:, : known.shape[1]])
                state["history"] = history[:, -1]  # [B, H, S]
        return state

    def step(
        self, state: State, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> State:
        """One transition under ``action``: task actions [B, A] (``action_mode="env"``) or
        latent action indices [B] (``"latent"``)."""
        latent = self.latent_action(state, action, generator)
        task = action if self.action_mode == "env" else None
        return self.step_latent(state, latent, generator, task)

    @torch.no_grad()
    def step_latent(
        self,
        state: State,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        task_action: torch.Tensor | None = None,
    ) -> State:
        """One transition under latent action indices [B] and, where known, task actions
        [B, A] (read by a model with ``task_action_input`` and by the motion head):
        MaskGIT-generate the next frame's tokens, then run the finished frame once more to
        cache its keys and values."""
        keys, values = state["keys"], state["values"]  # [B, L, K, P, E]
        past = list(zip(keys.unbind(1), values.unbind(1), strict=True))  # per block [B, K, P, E]
        valid = F.pad(state["valid"], (0, 1), value=True)  # [B, K+1]: memory and the new frame
        mask = valid[:, None]  # [B, 1, K+1]
        time = state["time"][:, None] + 1  # [B, 1]
        tokens, codes = self.dynamics.generate(
            past,
            mask,
            time,
            actions,
            self.maskgit_steps,
            self.temperature,
            generator,
            task_action,
            self.action_guidance,
        )  # [B, P], [B, P, d]
        task = None if task_action is None else task_action[:, None]  # [B, 1, A]
        hidden, cache = self.dynamics(tokens[:, None], actions[:, None], mask, time, past, task)
        new_keys = torch.stack([k for k, _ in cache], 1)  # [B, L, 1, P, E]
        new_values = torch.stack([v for _, v in cache], 1)
        features = self.dynamics.features(hidden[:, 0])  # [B, F]
        stepped = {
            "tokens": tokens,
            "codes": codes,
            "anchor": state["anchor"],
            "residual": state["residual"],
            "keys": torch.cat([keys[:, :, 1:], new_keys], 2),
            "values": torch.cat([values[:, :, 1:], new_values], 2),
            "valid": valid[:, 1:],
            "time": time[:, 0],
            "features": features,
        }
        if self.config.integrate_state:
            motion = self.motion(state["features"], features, state["vector"], task_action)
            stepped["vector"] = state["vector"] + motion * self.motion_std
        if self.config.outcome_history:
            latest = stepped["vector"][:, None]  # [B, 1, S]
            stepped["history"] = torch.cat([state["history"][:, 1:], latest], 1)
        return stepped

    def decode(self, state: State) -> dict[str, torch.Tensor]:
        pixels = self.tokenizer.decode(state["codes"])  # [B, 3, H, W]
        if self.residual_tolerance > 0:
            change = (pixels - state["anchor"]).abs().amax(1, keepdim=True)  # [B, 1, H, W]
            kept = (1 - change / self.residual_tolerance).clamp_min(0)
            pixels = (pixels + kept * state["residual"]).clamp(-0.5, 0.5)
        return {"image": float_to_images(pixels), "state": self.state_vector(state)}

    def state_vector(self, state: State) -> torch.Tensor:
        if self.config.integrate_state:
            return state["vector"]
        return self.denormalise_state(self.heads["state"](state["features"]))

    def outcome_scores(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = self.outcome_inputs(state["features"], state.get("history"))
        reward = self.heads["reward"](inputs).squeeze(-1)
        terminated = self.heads["terminated"](inputs).squeeze(-1).sigmoid()
        return reward, terminated, self.heads["success"](inputs).squeeze(-1).sigmoid()

    def features(self, state: State) -> torch.Tensor:
        return state["features"]
