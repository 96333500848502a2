"""Dreamer's recurrent state-space model (RSSM), lean enough to train on a 2-core CPU.

A GRU carries the deterministic path ``h``; a discrete stochastic latent ``z`` (groups of
categoricals, straight-through gradients, 1% uniform mix) carries what the frame adds.
Heads on ``[h, z]`` decode the image, the privileged state vector, depth (if trained on
rgbd), reward, termination and success. KL balancing with free bits as in DreamerV3.

Three choices keep a small model honest on a static scene: the image decoder paints RGB and an
alpha mask over a fixed background (the per-pixel median of the first batch), so capacity goes
to what moves; pixels that differ from that background can weigh more in the image loss (a fresh
model finds the object sooner; a trained one paints a halo for it, an uncertain edge being
cheaper in the object's colour, so the weight is lowered late in training); and the state vector
is a training target, which forces the latent to know where the object is even when it covers a
handful of pixels. With ``background="anchor"`` the decoder paints over the last real frame the
state was given instead (the context's last frame, replaced on every ``observe``, carried in the
state through a rollout), so what did not move comes from a real frame and the decoder paints
only what changed; see ``anchor_frames`` for how training matches that. Under a moving camera
(Drive's chase view) no pixel stays put: with ``background="warp"`` (RGB-D data and a task
camera model, ``TaskSpec.camera``) the decoder paints over that last real frame reprojected
into the current view, by the decoded depth and the camera moved from the anchor's state to
the state now (``layers.paint_over_warped``), so it paints only what the reprojection cannot
carry over: the car, which moves with the camera, and ground that comes into view. With
``background="none"`` it paints every pixel. Either way no pixel weighs more. Training
windows restart the latent at a random step (``cold_start_rate``), so the model learns to know a
scene from one real frame anywhere in an episode, not only from an episode's first frame.

The state vector a rollout reports is integrated, not read off the latent: it starts at the
last real state of the context and each step adds the change the motion head predicts. An
absolute read-out is off by its approximation error (~1 cm here) from the first step on,
while an object at rest moves by millimetres; integrated, the error grows only with what
the model gets wrong about the motion. The motion head reads what a rollout has: prior
features (no look at the frame it predicts) and the state it integrates, whose gripper-object
geometry and velocities are exact at the start where the latent only approximates them.

An optional physics prior (``conservation_weight``) holds the motion head to what an untouched
rigid object does, on the steps the task's rule marks (``TaskSpec.free_motion``): free flight
(horizontal velocity kept, g downward) and rest. It acts on the one-step predictions and on
short prior rollouts under another window's actions, where the data has no target at all
(see ``RSSM.conservation_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from wm_envs.geometry import camera_from
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
from wm_envs.models.layers import median_frame, mlp, paint_over, paint_over_warped
from wm_envs.tasks import TASKS, FreeMotion, camera_intrinsics, camera_poses

#: What the decoder paints over (``RSSMConfig.background``).
BACKGROUNDS = ("static", "anchor", "warp", "none")
#: Real frames a rollout of ``rollout_image_loss`` starts after: compare's mid-episode context.
ROLLOUT_CONTEXT = 4


@dataclass(frozen=True)
class RSSMConfig:
    deter: int = 160  # GRU width
    groups: int = 16  # stochastic latent: groups x classes one-hots
    classes: int = 16
    hidden: int = 160  # MLP width
    head_hidden: int = 128  # width of the reward / terminated / success head
    channels: int = 16  # conv width at 32x32; doubles per halving of resolution
    unimix: float = 0.01
    free_nats: float = 1.0
    kl_dynamics: float = 0.5
    kl_representation: float = 0.1
    image_weight: float = 1.0
    #: "static": the decoder paints over the data's per-pixel median (a fixed camera);
    #: "anchor": over the last real frame the state was given (a scene that mostly stays put,
    #: but not where the median shows: Collapse's structure); "warp": over that frame seen
    #: from the current camera (a moving camera; needs depth and the task's camera model);
    #: "none": it paints every pixel.
    background: str = "static"
    foreground_weight: float = 9.0  # extra loss weight of pixels that differ from background
    state_weight: float = 1.0
    motion_weight: float = 1.0  # the state change per step (what rollouts integrate)
    #: Weight of the image loss on one-step prior features (what a rollout decodes, with no
    #: look at the frame): the decoder learns to hedge where the prior is unsure (0: off).
    prior_image_weight: float = 0.0
    reward_weight: float = 1.0
    done_weight: float = 0.1  # terminated and success heads
    #: Weight of the reward, terminated and success losses again on one-step prior features
    #: (what a rollout scores, with no look at the frame): the heads that score imagined
    #: states and plans are trained on such states, not only on filtered ones (0: off).
    prior_outcome_weight: float = 0.0
    cold_start_rate: float = 0.0  # share of training windows restarted at a random step
    #: Weight of the free-flight and rest prior on the object's motion (0: off); it needs the
    #: task's ``TaskSpec.free_motion``. See ``RSSM.conservation_loss``.
    conservation_weight: float = 0.0
    conservation_horizon: int = 5  # prior steps imagined from each posterior state for it
    #: Weight of the open-loop state error over ``overshoot_horizon`` prior steps from every
    #: posterior state (0: off). See ``RSSM.overshoot_loss``.
    overshoot_weight: float = 0.0
    overshoot_horizon: int = 8
    #: Weight of the image error of open-loop rollouts of ``rollout_image_horizon`` steps
    #: (0: off): the decoder learns to paint what a learned env's rollout gives it, drifted
    #: latent and camera included. See ``RSSM.rollout_image_loss``.
    rollout_image_weight: float = 0.0
    rollout_image_horizon: int = 15
    task: str = ""  # the task of the training data (the trainer sets it)


PRESETS = {
    "tiny": {
        "deter": 32,
        "groups": 4,
        "classes": 4,
        "hidden": 32,
        "head_hidden": 16,
        "channels": 4,
    },  # tests
    "small": {},  # ~1.5M parameters: trains on a 2-core CPU
    "medium": {
        "deter": 512,
        "groups": 32,
        "classes": 32,
        "hidden": 512,
        "head_hidden": 256,
        "channels": 48,
    },
    "large": {
        "deter": 2048,
        "groups": 32,
        "classes": 32,
        "hidden": 1024,
        "head_hidden": 512,
        "channels": 96,
    },
}


def decode_chunk(device: torch.device) -> int | None:
    """Frames to decode per pass on ``device``: 64 on a CPU, which is cache-bound (64 frames
    decode 4x faster per frame than 256); None (the whole batch at once) on an accelerator,
    which decodes a batch in parallel."""
    return 64 if device.type == "cpu" else None


class Encoder(nn.Module):
    """Image [B, 3, 64, 64] and normalised state [B, S] -> embedding [B, hidden]."""

    def __init__(self, spec: ModelSpec, config: RSSMConfig) -> None:
        super().__init__()
        c = config.channels
        layers, width, size = [], 3 + spec.depth, spec.image_size
        for out in (c, 2 * c, 4 * c, 4 * c):
            layers += [nn.Conv2d(width, out, 4, 2, 1), nn.SiLU()]
            width, size = out, size // 2
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.state = nn.Sequential(nn.Linear(spec.state_dim, config.hidden), nn.SiLU())
        self.out = mlp(width * size * size + config.hidden, config.hidden, config.hidden)

    def forward(self, image: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.convs(image), self.state(state)], -1))


class Decoder(nn.Module):
    """Features [B, F] -> RGB, alpha and (optionally) depth maps [B, 4 or 5, 64, 64]."""

    def __init__(self, spec: ModelSpec, features: int, config: RSSMConfig) -> None:
        super().__init__()
        c = config.channels
        self.start = spec.image_size // 16
        self.width = 4 * c
        self.linear = nn.Linear(features, self.width * self.start**2)
        layers, width = [], self.width
        for out in (2 * c, c, c // 2):
            layers += [nn.ConvTranspose2d(width, out, 4, 2, 1), nn.SiLU()]
            width = out
        layers.append(nn.ConvTranspose2d(width, 4 + spec.depth, 4, 2, 1))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        grid = self.linear(features).view(-1, self.width, self.start, self.start)
        return self.deconvs(grid)


class RSSM(WorldModel):
    """Dreamer RSSM world model (see module docstring)."""

    name = "rssm"
    config_class = RSSMConfig

    def __init__(self, spec: ModelSpec, config: RSSMConfig) -> None:
        super().__init__(spec, config)
        c = config
        if c.background not in BACKGROUNDS:
            raise ValueError(f"RSSM background must be one of {BACKGROUNDS}, got {c.background!r}")
        if c.background in ("warp", "none") and c.foreground_weight:
            raise ValueError(
                "RSSM foreground_weight weighs pixels that differ from a fixed background; "
                f"with background={c.background!r} set foreground_weight=0"
            )
        if c.background == "warp" and not (spec.depth and c.task in TASKS and TASKS[c.task].camera):
            raise ValueError(
                "RSSM background='warp' reprojects frames by depth and the task camera: train "
                "it on data collected with `wm-envs collect --obs-mode rgbd` of a task with a "
                f"camera model (TaskSpec.camera); got task {c.task!r}, depth={spec.depth}"
            )
        self.free_motion = free_motion_of(c.task) if c.conservation_weight else None
        for name in ("conservation_horizon", "overshoot_horizon"):
            if getattr(c, name) < 0:
                raise ValueError(f"RSSM {name} must be >= 0, got {getattr(c, name)}")
        self.stoch = c.groups * c.classes
        self.encoder = Encoder(spec, c)
        self.action_in = nn.Sequential(
            nn.Linear(self.stoch + spec.action_dim, c.hidden), nn.LayerNorm(c.hidden), nn.SiLU()
        )
        self.gru = nn.GRUCell(c.hidden, c.deter)
        self.prior = mlp(c.deter, c.hidden, self.stoch)
        self.posterior = mlp(c.deter + c.hidden, c.hidden, self.stoch)
        features = c.deter + self.stoch
        self.decoder = Decoder(spec, features, c)
        if c.background in ("anchor", "warp"):  # start as the copy: the anchor shows through
            nn.init.constant_(self.decoder.deconvs[-1].bias[3], -3.0)
        self.state_head = mlp(features, c.hidden, spec.state_dim)  # a training target only
        self.motion_head = mlp(features + spec.state_dim, c.hidden, spec.state_dim)
        self.outcome_head = mlp(features, c.head_hidden, 3)  # reward, terminated, success
        size = spec.image_size
        self.register_buffer("background", torch.zeros(3 + spec.depth, size, size))
        self.register_buffer("motion_std", torch.ones(spec.state_dim))

    @property
    def feature_dim(self) -> int:
        return self.config.deter + self.stoch

    def adapt_weights(
        self, weights: dict[str, torch.Tensor], spec: ModelSpec, config: dict
    ) -> dict[str, torch.Tensor]:
        """As ``WorldModel.adapt_weights``, and an RGB checkpoint continues on RGB-D data (so
        that a trained twin can take up ``background="warp"``): the encoder's depth input
        starts at zero weight, so the latent is the checkpoint's until training moves it; the
        decoder's depth map starts as this model's (its bias at the data's mean depth). A
        checkpoint that painted every pixel (``background="none"``) never trained its alpha,
        so a compositing model takes its own, which starts by showing the background."""
        if spec.depth or replace(spec, depth=True) != self.spec:
            return super().adapt_weights(weights, spec, config)
        own, weights = self.state_dict(), dict(weights)

        def joined(name: str, dim: int, kept: int) -> torch.Tensor:
            """The checkpoint's first ``kept`` channels along ``dim``, this model's after."""
            ours = own[name].narrow(dim, kept, own[name].shape[dim] - kept)
            return torch.cat([weights[name].narrow(dim, 0, kept), ours], dim)

        conv = "encoder.convs.0.weight"  # [out, 3 (+ depth), k, k]
        weights[conv] = torch.cat([weights[conv], torch.zeros_like(own[conv][:, 3:])], 1)
        last = f"decoder.deconvs.{len(self.decoder.deconvs) - 1}"  # out: RGB, alpha, depth
        kept = 3 if config.get("background") == "none" and self.config.background != "none" else 4
        weights[f"{last}.weight"] = joined(f"{last}.weight", 1, kept)  # [in, out, k, k]
        weights[f"{last}.bias"] = joined(f"{last}.bias", 0, kept)
        weights["background"] = joined("background", 0, 3)  # [3 (+ depth), H, W]
        return weights

    # -- data statistics ----------------------------------------------------------------
    def prepare(self, batch: Batch) -> None:
        super().prepare(batch)
        if self.config.background == "static":
            self.background.copy_(median_frame(self._pixels(batch)))
        if self.config.background == "warp":  # decoded depth starts where the warp lands inside
            with torch.no_grad():
                self.decoder.deconvs[-1].bias[4] = batch["depth"].mean()
        self.motion_std.copy_(motion_scale(batch))

    def _pixels(self, batch: Batch) -> torch.Tensor:
        """Model-space pixels [..., C, H, W]: RGB in [-0.5, 0.5] (+ depth in metres)."""
        image = images_to_float(batch["image"])
        if self.spec.depth:
            depth = rearrange(batch["depth"], "... h w c -> ... c h w")
            image = torch.cat([image, depth], -3)
        return image

    # -- latent dynamics --------------------------------------------------------------------
    def _distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits [B, G*K] -> probabilities [B, G, K] with a uniform mix."""
        probs = logits.view(-1, self.config.groups, self.config.classes).softmax(-1)
        return (1 - self.config.unimix) * probs + self.config.unimix / self.config.classes

    def _draw(
        self, probs: torch.Tensor, generator: torch.Generator | None, straight_through: bool = False
    ) -> torch.Tensor:
        """One-hot latent [B, G*K]: a sample (with ``generator``), else the mode."""
        if generator is None and not straight_through:
            index = probs.argmax(-1)
        else:
            flat = probs.reshape(-1, self.config.classes)
            index = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
        one_hot = F.one_hot(index, self.config.classes).to(probs.dtype)
        if straight_through:
            one_hot = one_hot + probs - probs.detach()
        return one_hot.flatten(1)

    def _transition(
        self, deter: torch.Tensor, stoch: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        return self.gru(self.action_in(torch.cat([stoch, action], -1)), deter)

    def _filter_step(
        self,
        deter: torch.Tensor,
        stoch: torch.Tensor,
        action: torch.Tensor,
        embed: torch.Tensor,
        generator: torch.Generator | None,
        straight_through: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One posterior step [B, ...]: the new deterministic state, the prior and posterior
        probabilities, and the latent drawn from the posterior."""
        deter = self._transition(deter, stoch, action)
        prior = self._distribution(self.prior(deter))
        post = self._distribution(self.posterior(torch.cat([deter, embed], -1)))
        return deter, prior, post, self._draw(post, generator, straight_through)

    def _observe(self, batch: Batch, generator: torch.Generator | None, straight_through: bool):
        """Filter a [B, T] batch through the posterior; returns per-step tensors [B, T, ...]."""
        pixels = self._pixels(batch)  # [B, T, C, H, W]
        size, time = pixels.shape[:2]
        state = self.normalise_state(batch["state"])
        embed = self.encoder(pixels.flatten(0, 1), state.flatten(0, 1)).view(size, time, -1)
        deter = pixels.new_zeros(size, self.config.deter)
        stoch = pixels.new_zeros(size, self.stoch)
        is_first = batch["is_first"].to(pixels.dtype)  # [B, T]
        deters, stochs, priors, posts = [], [], [], []
        for t in range(time):
            keep = (1.0 - is_first[:, t])[:, None]
            deter, prior, post, stoch = self._filter_step(
                deter * keep,
                stoch * keep,
                batch["action"][:, t] * keep,
                embed[:, t],
                generator,
                straight_through,
            )
            deters.append(deter)
            stochs.append(stoch)
            priors.append(prior)
            posts.append(post)
        stack = lambda xs: torch.stack(xs, 1)  # noqa: E731
        return stack(deters), stack(stochs), stack(priors), stack(posts)

    # -- the protocol -------------------------------------------------------------------------
    def init_state(
        self,
        obs_context: Batch,
        action_context: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> State:
        size, time = obs_context["state"].shape[:2]
        actions = action_context
        if actions is None:
            actions = obs_context["state"].new_zeros(size, time, self.spec.action_dim)
        is_first = torch.zeros(size, time, dtype=torch.bool, device=actions.device)
        is_first[:, 0] = True
        batch = {**obs_context, "action": actions, "is_first": is_first}
        deter, stoch, _, _ = self._observe(batch, generator, straight_through=False)
        state = {
            "deter": deter[:, -1],
            "stoch": stoch[:, -1],
            "vector": obs_context["state"][:, -1],
        }
        return state | self._anchor({key: value[:, -1] for key, value in obs_context.items()})

    def observe(
        self,
        state: State,
        action: torch.Tensor,
        obs: Batch,
        generator: torch.Generator | None = None,
    ) -> State:
        embed = self.encoder(self._pixels(obs), self.normalise_state(obs["state"]))  # [B, E]
        deter, _, _, stoch = self._filter_step(
            state["deter"], state["stoch"], action, embed, generator, straight_through=False
        )
        return {"deter": deter, "stoch": stoch, "vector": obs["state"]} | self._anchor(obs)

    def _anchor(self, obs: Batch) -> State:
        """The state entries of ``background="anchor"`` and ``"warp"``: a real frame (image
        [B, H, W, 3], ...) as model-space pixels {"anchor": [B, C, H, W]} and, to warp it,
        the camera that saw it {"anchor_camera": [B, 4, 4]}; none for the other backgrounds."""
        background = self.config.background
        if background not in ("anchor", "warp"):
            return {}
        anchor = {"anchor": self._pixels(obs)}
        if background == "warp":
            anchor["anchor_camera"] = camera_poses(self.config.task, obs["state"])
        return anchor

    def step(
        self, state: State, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> State:
        deter = self._transition(state["deter"], state["stoch"], action)
        stoch = self._draw(self._distribution(self.prior(deter)), generator)
        vector = state["vector"]  # [B, S]
        motion = self._motion(torch.cat([deter, stoch], -1), vector) * self.motion_std
        stepped = {"deter": deter, "stoch": stoch, "vector": vector + motion}
        # the last real frame (and its camera) stays the background of the rollout
        return stepped | {key: state[key] for key in ("anchor", "anchor_camera") if key in state}

    def _motion(self, features: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        """Features [N, F] and the state before the step [N, S] -> its normalised change [N, S]."""
        return self.motion_head(torch.cat([features, self.normalise_state(vector)], -1))

    def features(self, state: State) -> torch.Tensor:
        return torch.cat([state["deter"], state["stoch"]], -1)

    def _render(
        self,
        features: torch.Tensor,
        anchor: torch.Tensor | None = None,
        relative: torch.Tensor | None = None,
        chunk: int | None = None,
    ) -> torch.Tensor:
        """Features [N, F] -> model-space pixels [N, C, H, W] composited over the background:
        the static median, ``anchor`` [N, C, H, W] (``background="anchor"``), the anchor
        seen from the camera ``relative`` to it [N, 4, 4] (``"warp"``) or none; ``chunk``
        frames per pass (None: all at once)."""
        if chunk is not None and len(features) > chunk:
            parts = [
                [None] * -(-len(features) // chunk) if x is None else x.split(chunk)
                for x in (features, anchor, relative)
            ]
            return torch.cat([self._render(*part) for part in zip(*parts, strict=True)])
        background = self.config.background
        if background in ("anchor", "warp") and anchor is None:
            raise ValueError(
                f"an RSSM with background={background!r} renders over a state's 'anchor'"
            )
        maps = self.decoder(features)  # [N, 4 + D, H, W]
        if background == "warp":
            camera = camera_intrinsics(self.config.task, self.spec.image_size).to(maps)
            return paint_over_warped(maps, anchor[:, :3], maps[:, 4], relative, camera)
        return paint_over(maps, {"static": self.background, "anchor": anchor}.get(background))

    def decode(self, state: State) -> dict[str, torch.Tensor]:
        features = self.features(state)  # [B, F]
        chunk = decode_chunk(features.device)
        relative = None
        if "anchor_camera" in state:  # the anchor's camera from the task camera now
            now = camera_poses(self.config.task, state["vector"])  # [B, 4, 4]
            relative = camera_from(state["anchor_camera"], now)
        pixels = self._render(features, state.get("anchor"), relative, chunk)  # [B, C, H, W]
        out = {"image": float_to_images(pixels[:, :3]), "state": self.state_vector(state)}
        if self.spec.depth:
            out["depth"] = rearrange(pixels[:, 3:].clamp_min(0), "b c h w -> b h w c")
        return out

    def state_vector(self, state: State) -> torch.Tensor:
        return state["vector"]

    def outcome_scores(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reward, terminated, success = self.outcome_head(self.features(state)).unbind(-1)
        return reward, terminated.sigmoid(), success.sigmoid()

    # -- training -------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        episode_starts = batch["is_first"]  # [B, T]: real episode starts, not cold starts
        if c.cold_start_rate > 0:
            batch = {**batch, "is_first": cold_starts(batch["is_first"], c.cold_start_rate)}
        deter, stoch, prior, post = self._observe(batch, None, straight_through=True)
        features = torch.cat([deter, stoch], -1).flatten(0, 1)  # [B*T, F]
        pixels = self._pixels(batch)  # [B, T, C, H, W]
        target = pixels.flatten(0, 1)  # [B*T, C, H, W]
        anchor = relative = None
        if c.background in ("anchor", "warp"):
            anchor = anchor_frames(pixels, batch["is_first"]).flatten(0, 1)  # [B*T, C, H, W]
        if c.background == "warp":  # each anchor's camera from the task camera at each step
            cameras = camera_poses(c.task, batch["state"])  # [B, T, 4, 4]
            anchor_cameras = anchor_frames(cameras, batch["is_first"])
            relative = camera_from(anchor_cameras, cameras).flatten(0, 1)  # [B*T, 4, 4]
        image_loss = self._image_error(features, target, anchor, relative).mean()
        # The motion head reads what a rollout has: the deterministic path, a prior sample and
        # the state before the step.
        prior_stoch = self._draw(prior.flatten(0, 1), None, straight_through=True)  # [B*T, G*K]
        prior_features = torch.cat([deter.flatten(0, 1), prior_stoch.detach()], -1)
        motion, valid = state_motion(batch)  # [B, T, S], [B, T]
        previous = (batch["state"] - motion).flatten(0, 1)  # [B*T, S]
        motion_target = (motion / self.motion_std).flatten(0, 1)  # [B*T, S]
        motion_prediction = self._motion(prior_features, previous)
        motion_loss = F.huber_loss(motion_prediction, motion_target, reduction="none")
        motion_loss = (motion_loss.sum(-1) * valid.flatten()).sum() / valid.sum().clamp_min(1)
        reward, terminated, success = self.outcome_head(features).unbind(-1)  # [B*T] each
        state_loss, reward_loss, done_loss = self.head_losses(
            batch, self.state_head(features), reward, terminated, success
        )
        dynamics = categorical_kl(post.detach(), prior).clamp_min(c.free_nats).mean()
        representation = categorical_kl(post, prior.detach()).clamp_min(c.free_nats).mean()
        total = (
            c.image_weight * image_loss
            + c.state_weight * state_loss
            + c.motion_weight * motion_loss
            + c.reward_weight * reward_loss
            + c.done_weight * done_loss
            + c.kl_dynamics * dynamics
            + c.kl_representation * representation
        )
        metrics = {
            "image": image_loss.item(),
            "state": state_loss.item(),
            "motion": motion_loss.item(),
            "reward": reward_loss.item(),
            "done": done_loss.item(),
            "kl": categorical_kl(post, prior).mean().item(),
        }
        if c.prior_image_weight:  # it draws nothing: the samples below stay those without it
            prior_error = self._image_error(prior_features, target, anchor, relative)  # [B*T]
            prior_image = (prior_error * valid.flatten()).sum() / valid.sum().clamp_min(1)
            total = total + c.prior_image_weight * prior_image
            metrics["prior_image"] = prior_image.item()
        if c.prior_outcome_weight:  # it draws nothing either
            outcomes = self.outcome_head(prior_features).unbind(-1)  # [B*T] each
            prior_reward, prior_done = self.outcome_losses(batch, *outcomes)
            prior_outcome = c.reward_weight * prior_reward + c.done_weight * prior_done
            total = total + c.prior_outcome_weight * prior_outcome
            metrics["prior_outcome"] = prior_outcome.item()
        if c.overshoot_weight:
            overshoot = self.overshoot_loss(batch, episode_starts, deter, stoch)
            total = total + c.overshoot_weight * overshoot
            metrics["overshoot"] = overshoot.item()
        if c.rollout_image_weight:  # it draws nothing
            rollout_image = self.rollout_image_loss(batch, episode_starts, deter, stoch, pixels)
            total = total + c.rollout_image_weight * rollout_image
            metrics["rollout_image"] = rollout_image.item()
        if c.conservation_weight:  # last: the other terms draw the same samples without it
            one_step = (previous, prior_features, valid.flatten())
            conservation, marked = self.conservation_loss(batch, deter, stoch, one_step)
            total = total + c.conservation_weight * conservation
            metrics |= {"conservation": conservation.item(), "conservation_marked": marked}
        return total, {"loss": total.item(), **metrics}

    def _image_error(
        self,
        features: torch.Tensor,
        target: torch.Tensor,
        anchor: torch.Tensor | None,
        relative: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Features [N, F], target pixels [N, C, H, W], the anchors [N, C, H, W] and their
        cameras relative to now [N, 4, 4] (as ``_render``) -> the weighted squared image
        error of each frame [N].

        Pixels that differ from the background (gripper, object; with an anchor, what moved)
        weigh 1 + ``foreground_weight``: a 10 px object must not drown in a 4096 px table."""
        error = (self._render(features, anchor, relative) - target).square()  # [N, C, H, W]
        if self.config.foreground_weight:
            background = self.background if anchor is None else anchor  # [(N,) C, H, W]
            foreground = (target[:, :3] - background[..., :3, :, :]).abs().amax(1, keepdim=True)
            error = (1.0 + self.config.foreground_weight * (foreground > 0.08).float()) * error
        return error.sum((1, 2, 3))

    def overshoot_loss(
        self, batch: Batch, episode_starts: torch.Tensor, deter: torch.Tensor, stoch: torch.Tensor
    ) -> torch.Tensor:
        """The open-loop state error a rollout makes (PlaNet's latent overshooting, on the
        state vector).

        From every posterior state (``deter``, ``stoch`` [B, T, ...]) the prior steps
        ``overshoot_horizon`` times under the window's own next actions, and the state vector
        integrates the motion head's changes from the true state, as ``step`` does in a
        learned env (the prior's mode, with straight-through gradients; it draws nothing at
        random). Its Huber error against the data's states, in units of the data's std
        and summed over the vector (as the state loss), is averaged over every imagined step
        that stays in the start's episode (``episode_starts`` [B, T]; cold starts do not cut
        it). Gradients reach the transition, the prior and the motion head through the whole
        rollout, so the latent learns what must last: one-step losses alone let a weld break
        or a strike's effect fade within a few imagined steps."""
        horizon = self.config.overshoot_horizon
        starts = deter.shape[1] - horizon  # start steps with `horizon` steps after them
        if horizon == 0 or starts <= 0:
            return deter.new_zeros(())
        deter = deter[:, :starts].flatten(0, 1)  # [N, D], N = B * starts
        stoch = stoch[:, :starts].flatten(0, 1)  # [N, G*K]
        vector = batch["state"][:, :starts].flatten(0, 1)  # [N, S]
        inside = torch.ones(len(vector), dtype=torch.bool, device=vector.device)  # [N]
        total, count = vector.new_zeros(()), vector.new_zeros(())
        for k in range(1, horizon + 1):
            step = slice(k, k + starts)
            inside = inside & ~episode_starts[:, step].flatten().bool()
            deter = self._transition(deter, stoch, batch["action"][:, step].flatten(0, 1))
            probs = self._distribution(self.prior(deter))  # [N, G, K]
            stoch = self._draw(probs, None) + (probs - probs.detach()).flatten(1)
            motion = self._motion(torch.cat([deter, stoch], -1), vector)  # [N, S]
            vector = vector + motion * self.motion_std
            target = batch["state"][:, step].flatten(0, 1)  # [N, S]
            error = F.huber_loss(
                self.normalise_state(vector), self.normalise_state(target), reduction="none"
            ).sum(-1)  # [N]
            total = total + (error * inside).sum()
            count = count + inside.sum()
        return total / count.clamp_min(1)

    def rollout_image_loss(
        self,
        batch: Batch,
        episode_starts: torch.Tensor,
        deter: torch.Tensor,
        stoch: torch.Tensor,
        pixels: torch.Tensor,
    ) -> torch.Tensor:
        """The image error of open-loop rollouts, as a learned env shows them.

        From each window's posterior after ``ROLLOUT_CONTEXT`` frames (fewer where a cold
        start cut them), the prior steps ``rollout_image_horizon`` times under the window's
        next actions and the state vector integrates the motion head, as ``step`` does (the
        prior's mode). Each imagined frame is rendered over the real frame the rollout
        started from, for ``background="warp"`` seen from the camera at the integrated state,
        and scored against the real frame (``_image_error``), averaged over the imagined
        steps that stay in the start's episode. The rollout is detached: this term trains
        the decoder to paint what a drifted latent and camera give it, not the dynamics."""
        start = ROLLOUT_CONTEXT - 1
        horizon = min(self.config.rollout_image_horizon, deter.shape[1] - 1 - start)
        if horizon <= 0:
            return deter.new_zeros(())
        with torch.no_grad():
            state = {"deter": deter[:, start], "stoch": stoch[:, start]}
            state["vector"] = batch["state"][:, start]  # [B, S]
            features, vectors = [], []
            for t in range(start + 1, start + horizon + 1):
                state = self.step(state, batch["action"][:, t])
                features.append(self.features(state))  # [B, F]
                vectors.append(state["vector"])
        steps = slice(start + 1, start + horizon + 1)
        inside = episode_starts[:, steps].cumsum(1) == 0  # [B, H]: still the start's episode
        anchor = pixels[:, start, None].expand(-1, horizon, -1, -1, -1)  # [B, H, C, H, W]
        relative = None
        if self.config.background == "warp":
            started = camera_poses(self.config.task, batch["state"][:, start])  # [B, 4, 4]
            cameras = camera_poses(self.config.task, torch.stack(vectors, 1))  # [B, H, 4, 4]
            relative = camera_from(started[:, None], cameras).flatten(0, 1)
        error = self._image_error(
            torch.stack(features, 1).flatten(0, 1),  # [B*H, F]
            pixels[:, steps].flatten(0, 1),
            anchor.flatten(0, 1) if self.config.background in ("anchor", "warp") else None,
            relative,
        )  # [B*H]
        return (error * inside.flatten()).sum() / inside.sum().clamp_min(1)

    def conservation_loss(
        self,
        batch: Batch,
        deter: torch.Tensor,
        stoch: torch.Tensor,
        one_step: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, float]:
        """The free-flight and rest prior, and the share of steps it marks.

        On the steps the task's rule marks from the state before the step (``FreeMotion``), the
        motion head's predicted change of the object's position and velocity is held to the
        law: in free flight Δv = (0, 0, -g·dt) and Δp = v·dt + (0, 0, -g·dt²/2), v the velocity
        before the step (horizontal velocity constant); at rest Δp = 0 and Δv = 0. The
        residual is in units of ``motion_std`` (the data's per-step change), through the motion
        loss's Huber, summed over the 6 components and averaged over the marked steps: a
        component off by one data std costs 0.5, as it does in the motion loss (which sums 24).
        Two kinds of steps: ``one_step`` (the states before each step [B*T, S], the prior
        features the motion head reads there [B*T, F] and where the step is defined [B*T]),
        and ``conservation_horizon`` prior steps from every posterior state (``deter``,
        ``stoch`` [B, T, ...]) whose state vector integrates the head's own predictions, under
        the actions of the next window in the batch: another episode's, so the data has no
        target there, and untouched objects must stay put or fly as they would. The imagined
        latents take the prior's mode, as a learned env steps, so the prior draws nothing at
        random (a run with it makes the same random draws as one without). Neither the
        targets nor the features carry gradient: the prior trains the motion head alone, which
        only the integrated state vector reads; the latent, images and outcome heads learn
        from the other terms (letting it reach the latent cost success agreement: the
        README's "Physics prior")."""
        before, features, defined = one_step
        befores, defineds = [before], [defined]
        predictions = [self._motion(features.detach(), before)]  # [B*T, S]
        horizon = self.config.conservation_horizon
        starts = deter.shape[1] - horizon  # start steps with `horizon` actions after them
        if horizon and starts > 0:
            actions = batch["action"].roll(1, 0)  # [B, T, A]: another window's
            deter = deter[:, :starts].flatten(0, 1).detach()  # [N, D], N = B * starts
            stoch = stoch[:, :starts].flatten(0, 1).detach()  # [N, G*K]
            vector = batch["state"][:, :starts].flatten(0, 1)  # [N, S]
            for k in range(1, horizon + 1):
                with torch.no_grad():  # the latent rollout is given
                    action = actions[:, k : k + starts].flatten(0, 1)  # [N, A]
                    deter = self._transition(deter, stoch, action)
                    stoch = self._draw(self._distribution(self.prior(deter)), None)  # the mode
                motion = self._motion(torch.cat([deter, stoch], -1), vector)  # [N, S]
                befores.append(vector)
                predictions.append(motion)
                defineds.append(defined.new_ones(len(vector)))
                vector = vector + motion * self.motion_std
        before, predicted = torch.cat(befores), torch.cat(predictions)  # [M, S]
        error, marked = self._free_motion_error(before, predicted)  # [M]
        marked = marked & torch.cat(defineds)
        loss = (error * marked).sum() / marked.sum().clamp_min(1)
        return loss, marked.float().mean().item()

    def _free_motion_error(
        self, before: torch.Tensor, predicted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """States before a step [M, S] and the predicted normalised change [M, S] -> the
        Huber residual against the free-motion law [M] and whether the rule marks the step
        [M] (``conservation_loss``)."""
        law: FreeMotion = self.free_motion
        position, velocity = slice(*law.position), slice(*law.velocity)
        with torch.no_grad():
            flight, rest = law.phases(before.float())  # [M] each
            v = before[:, velocity].float()  # [M, 3]
            gravity = v.new_tensor([0.0, 0.0, -law.gravity])
            target = torch.zeros_like(before, dtype=torch.float32)  # rest: no change
            fly = flight[:, None].float()
            target[:, position] = fly * (v * law.dt + 0.5 * gravity * law.dt**2)
            target[:, velocity] = fly * gravity * law.dt
            target = target / self.motion_std
        columns = [*range(*law.position), *range(*law.velocity)]
        error = F.huber_loss(predicted[:, columns].float(), target[:, columns], reduction="none")
        return error.sum(-1), flight | rest


def free_motion_of(task: str) -> FreeMotion:
    """The free-motion declaration of ``task``, which the physics prior needs."""
    if task not in TASKS:
        raise ValueError(
            f"RSSM conservation_weight needs the data's task (config task, which the trainer "
            f"sets); got {task!r}, known: {sorted(TASKS)}"
        )
    if TASKS[task].free_motion is None:
        raise ValueError(
            f"RSSM conservation_weight needs the task to declare its free-moving object "
            f"(TaskSpec.free_motion); {task!r} declares none"
        )
    return TASKS[task].free_motion


def anchor_frames(pixels: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
    """The frame each step of a training window composites over with ``background="anchor"``:
    pixels [B, T, C, H, W] and ``is_first`` [B, T] (cold starts included) -> [B, T, C, H, W].

    A rollout paints over the last real frame before the frames it predicts, and its latent
    has filtered real frames up to there. In training the latent restarts at every window
    start, episode start and cold start, so step t composites over the frame of the last such
    restart at or before t: the posterior of a frame never paints over that frame itself
    (except at the restart, where a rollout's decoded start frame is its anchor too), and it
    learns to paint what changed since the anchor, up to a window's length apart."""
    source = episode_starts(is_first)  # [B, T]: the last restart
    rows = torch.arange(len(pixels), device=pixels.device)[:, None]  # [B, 1]
    return pixels[rows, source]


def cold_starts(is_first: torch.Tensor, rate: float) -> torch.Tensor:
    """``is_first`` [B, T] with one more restart, at a random step, in a ``rate`` share of the
    windows. The latent starts cold there, as it does when the learned env starts from a real
    mid-episode frame; episode starts alone teach only the first frames' few layouts."""
    size, time = is_first.shape
    step = torch.randint(1, time, (size,), device=is_first.device)  # [B]
    chosen = torch.rand(size, device=is_first.device) < rate  # [B]
    return is_first.bool() | (F.one_hot(step, time).bool() & chosen[:, None])


def categorical_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of grouped categoricals [..., G, K], summed over groups -> [...]."""
    return (p * (p.log() - q.log())).sum((-2, -1))
