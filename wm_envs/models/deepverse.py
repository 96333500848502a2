"""DeepVerse-style 4D world model at CPU scale: autoregressive, action-conditioned RGB-D
frames with the camera's motion.

DeepVerse (Chen et al. 2025) predicts, for every frame, RGB, disparity and a ray map from
which it recovers the camera; past frames enter its transformer as history tokens, actions
as conditioning, and long rollouts slide a window of frames. This model keeps that shape and
drops what a 2-core CPU cannot carry (the video diffusion backbone, text actions):

* **Frame tokens.** A conv encoder turns each frame's RGB and disparity (inverse depth, in
  units of the data's mean) into a grid of latent tokens (8x8 at 64x64 pixels), beside one
  token of the state vector and one of the action taken from that frame.
* **Action encoders keyed by an action spec.** The task declares what its action controls
  (``TaskSpec.action_spec``): an ``arm`` (dx, dy, dz and a grip or strike command) or a
  ``vehicle`` (steer, throttle, brake). Each spec has its own encoder (``ACTION_ENCODERS``);
  an unknown spec is refused by name, and a new kind of control adds one entry.
* **Causal space-time transformer** (Genie's blocks, ``models.genie.transformer``): within
  a frame every token sees every other; across time each token sees its own position in the
  last ``context - 1`` frames and itself (history tokens, fused token-wise).
* **Heads** on the tokens of frame t predict frame t+1: RGB and disparity (a conv decoder,
  whose RGB is painted with an alpha mask over what ``background`` names: the data's static
  median under a fixed camera; nothing, so it paints every pixel; or frame t reprojected
  into the next view by the predicted depth and camera motion, ``geometry.warp``, so under
  a moving camera the decoder paints only what the warp cannot carry over: new ground at
  the edges, moving and non-planar things), the camera's motion from t to t+1 (translation
  and axis-angle; identity under Grasp's fixed camera, the ego-motion under Drive's chase
  camera), the state vector (its change, integrated from the last real state, as in the
  RSSM), reward, termination, success.
* **Losses**: RGB and disparity errors, pose, state change and the outcome heads, plus two
  geometric terms (``geometric_losses``): the predicted depth and pose of frame t+1 must warp
  the real frame t onto the real frame t+1 (photometric reprojection, zero for a perfect
  warp), and the warped points' depth must match frame t's depth where they land (temporal
  depth consistency).

**Rolling out past the window.** The model state caches each block's temporal keys and values
of the last ``context - 1`` frames (rotary time embeddings keep them valid for later frames),
so a step runs only the newest frame: its tokens (the predicted RGB-D frame re-encoded, the
integrated state vector, the new action) attend to the cache; then the cache drops its oldest
frame and takes this one. Training masks attention to the same ``context`` frames, so a
rollout of any length sees what training showed: a sliding window of ``context`` frames.

The camera pose the learned env reports (``extra_info``) starts at the task camera's pose for
the last real frame (``TaskSpec.camera``) and composes each step's predicted relative pose.
The model is deterministic: the protocol's ``generator`` is accepted and unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from wm_envs import geometry
from wm_envs.models.base import (
    Batch,
    ModelSpec,
    State,
    WorldModel,
    float_to_images,
    images_to_float,
    motion_scale,
    state_motion,
)
from wm_envs.models.genie.transformer import STTransformer, temporal_mask
from wm_envs.models.layers import median_frame, mlp, paint_over, paint_over_warped
from wm_envs.tasks import TASKS, camera_intrinsics, camera_poses

MIN_DISPARITY = 1e-3  # 1/m: depth is clamped at 1 km
#: What the decoder paints over (``DeepVerseConfig.background``).
BACKGROUNDS = ("static", "none", "warp")


@dataclass(frozen=True)
class DeepVerseConfig:
    patch: int = 8  # pixels per token side: 8x8 tokens per 64x64 frame
    width: int = 64  # token width
    depth: int = 2  # transformer blocks
    heads: int = 4
    context: int = 4  # frames in the sliding window (the current one and context - 1 past)
    channels: int = 16  # conv width at 32x32; doubles per halving of resolution
    hidden: int = 128  # width of the heads and action encoders
    #: What the decoder paints over: "static", the data's per-pixel median (a fixed camera);
    #: "none", nothing (it paints every pixel); "warp", the current frame reprojected into
    #: the next view by the predicted depth and relative pose (a moving camera).
    background: str = "static"
    rgb_weight: float = 1.0
    disparity_weight: float = 1.0
    pose_weight: float = 1.0
    state_weight: float = 1.0
    reward_weight: float = 1.0
    done_weight: float = 0.1
    photometric_weight: float = 0.5  # warp frame t onto t+1 with predicted depth and pose
    depth_consistency_weight: float = 0.5  # warped depth against frame t's depth
    #: Share of each training window fed with the model's own (detached) predictions in a
    #: second pass, so that rollouts see inputs like their own; 0 = teacher forcing only.
    feedback_weight: float = 1.0
    action_spec: str = ""  # "" = the task's (TaskSpec.action_spec)
    task: str = ""  # the task of the training data (the trainer sets it)


PRESETS = {
    "tiny": {"patch": 16, "width": 16, "depth": 1, "heads": 2, "channels": 4, "hidden": 16},
    "small": {},  # ~0.3M parameters: ~2 s per update of 16 x 8 frames on one loaded core
    "medium": {"width": 256, "depth": 6, "heads": 8, "context": 8, "channels": 64},  # a GPU
}


# -- action encoders ------------------------------------------------------------------------------
class ArmActionEncoder(nn.Module):
    """An arm's action (dx, dy, dz, grip or strike in [-1, 1]) -> a token [B, E]: the
    displacement and its length, and the tool command on its own path."""

    action_dim = 4

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.move = nn.Linear(4, hidden)  # dx, dy, dz, |d|
        self.tool = nn.Linear(1, hidden)
        self.out = mlp(hidden, hidden, width)

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        move = action[:, :3]  # [B, 3]
        features = torch.cat([move, move.norm(dim=-1, keepdim=True)], -1)
        return self.out(F.silu(self.move(features) + self.tool(action[:, 3:4])))


class VehicleActionEncoder(nn.Module):
    """A vehicle's action (steer, throttle, brake in [-1, 1]) -> a token [B, E]: steering,
    forward and reverse throttle apart, and the brake as the env reads it (above 0 brakes
    and overrides the throttle)."""

    action_dim = 3

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.inputs = nn.Linear(5, hidden)
        self.out = mlp(hidden, hidden, width)

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        steer, throttle, brake = action.unbind(-1)  # [B] each
        braking = (brake > 0).to(action.dtype)
        drive = throttle * (1 - braking)
        features = torch.stack(
            [steer, drive.clamp_min(0), (-drive).clamp_min(0), brake.clamp_min(0), braking], -1
        )
        return self.out(F.silu(self.inputs(features)))


#: Action spec name -> its encoder class; a task names its spec in ``TaskSpec.action_spec``.
ACTION_ENCODERS: dict[str, type[nn.Module]] = {
    "arm": ArmActionEncoder,
    "vehicle": VehicleActionEncoder,
}


def action_encoder(spec: str, action_dim: int, width: int, hidden: int) -> nn.Module:
    """The encoder of action spec ``spec`` for actions of ``action_dim`` numbers."""
    if spec not in ACTION_ENCODERS:
        raise ValueError(f"unknown action spec {spec!r}; known: {sorted(ACTION_ENCODERS)}")
    encoder = ACTION_ENCODERS[spec]
    if encoder.action_dim != action_dim:
        raise ValueError(
            f"action spec {spec!r} encodes {encoder.action_dim} numbers, the data's actions "
            f"have {action_dim}"
        )
    return encoder(width, hidden)


# -- geometry -------------------------------------------------------------------------------------
def geometric_losses(
    source: torch.Tensor,
    source_depth: torch.Tensor,
    target: torch.Tensor,
    target_depth: torch.Tensor,
    relative: torch.Tensor,
    camera: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two geometric consistency terms of a frame pair -> (photometric, depth) [].

    The target frame's (predicted) depth [N, H, W] and the relative pose [N, 6] (source
    camera from target camera) warp the source RGB [N, 3, H, W] onto the target view
    (``geometry.warp``). Photometric: the mean absolute difference to the target RGB
    [N, 3, H, W]. Depth: the mean absolute difference, in disparity (1/m), between each
    warped point's depth in the source camera and the source depth [N, H, W] sampled where
    it lands. Both average over the pixels that land inside the source frame, and both are
    zero for a perfect warp of a static scene.
    """
    sources = torch.cat([source, source_depth[:, None]], 1)  # [N, 4, H, W]
    warped, z, inside = geometry.warp(sources, target_depth, geometry.pose_matrix(relative), camera)
    weight = inside.to(source.dtype)  # [N, H, W]
    count = weight.sum().clamp_min(1)
    photometric = ((warped[:, :3] - target).abs().mean(1) * weight).sum() / count
    disparity = (1 / z.clamp_min(1e-3) - 1 / warped[:, 3].clamp_min(1e-3)).abs()
    return photometric, (disparity * weight).sum() / count


# -- the model ----------------------------------------------------------------------------------
class FrameEncoder(nn.Module):
    """Model-space RGB-D [N, 4, H, W] -> a grid of tokens [N, P, E]."""

    def __init__(self, config: DeepVerseConfig) -> None:
        super().__init__()
        c, layers, width = config.channels, [], 4
        halvings = (config.patch).bit_length() - 1
        for i in range(halvings):
            out = config.width if i == halvings - 1 else c * 2**i
            layers += [nn.Conv2d(width, out, 4, 2, 1)] + ([nn.SiLU()] if i < halvings - 1 else [])
            width = out
        self.convs = nn.Sequential(*layers)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return rearrange(self.convs(pixels), "n e h w -> n (h w) e")


class FrameDecoder(nn.Module):
    """Tokens [N, P, E] -> RGB, alpha and disparity maps [N, 5, H, W]."""

    def __init__(self, size: int, config: DeepVerseConfig) -> None:
        super().__init__()
        self.grid = size // config.patch
        halvings = (config.patch).bit_length() - 1
        layers, width = [], config.width
        for i in reversed(range(halvings)):
            out = 5 if i == 0 else config.channels * 2 ** (i - 1)
            layers += [nn.ConvTranspose2d(width, out, 4, 2, 1)] + ([nn.SiLU()] if i else [])
            width = out
        self.deconvs = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.deconvs(rearrange(tokens, "n (h w) e -> n e h w", h=self.grid))


class DeepVerse(WorldModel):
    """DeepVerse-style RGB-D world model with camera pose (see module docstring)."""

    name = "deepverse"
    config_class = DeepVerseConfig

    def __init__(self, spec: ModelSpec, config: DeepVerseConfig) -> None:
        super().__init__(spec, config)
        c = config
        if not spec.depth:
            raise ValueError(
                "deepverse models RGB-D frames; train it on a dataset collected with "
                "`wm-envs collect --obs-mode rgbd`"
            )
        if c.background not in BACKGROUNDS:
            raise ValueError(
                f"deepverse background must be one of {BACKGROUNDS}, got {c.background!r}"
            )
        if c.patch < 2 or c.patch & (c.patch - 1) or spec.image_size % c.patch:
            raise ValueError(
                f"deepverse patch must be a power of two >= 2 dividing the image size "
                f"{spec.image_size}, got {c.patch}"
            )
        if c.context < 2:
            raise ValueError(f"deepverse context must be >= 2 frames, got {c.context}")
        if c.task not in TASKS or not TASKS[c.task].camera:
            raise ValueError(
                f"deepverse needs the data's task and its camera model (TaskSpec.camera); "
                f"got task {c.task!r}"
            )
        self.action_spec = c.action_spec or TASKS[c.task].action_spec
        self.memory = c.context - 1
        size = spec.image_size
        self.tokens = (size // c.patch) ** 2  # image tokens per frame
        self.encoder = FrameEncoder(c)
        self.state_in = nn.Linear(spec.state_dim, c.width)
        self.action_in = action_encoder(self.action_spec, spec.action_dim, c.width, c.hidden)
        self.position = nn.Parameter(torch.randn(self.tokens + 2, c.width) * 0.02)
        self.transformer = STTransformer(c.width, c.depth, c.heads, self.memory)
        self.decoder = FrameDecoder(size, c)
        self.pose_head = mlp(2 * c.width, c.hidden, 6)
        self.motion_head = mlp(2 * c.width + spec.state_dim, c.hidden, spec.state_dim)
        self.outcome_head = mlp(2 * c.width, c.hidden, 3)  # reward, terminated, success
        self.register_buffer("background", torch.zeros(4, size, size))
        self.register_buffer("disparity_mean", torch.ones(()))
        self.register_buffer("motion_std", torch.ones(spec.state_dim))
        self.register_buffer("pose_std", torch.ones(6))
        self.register_buffer("camera", camera_intrinsics(c.task, size))

    @property
    def feature_dim(self) -> int:
        return self.config.width + self.spec.state_dim

    # -- data -----------------------------------------------------------------------------------
    def prepare(self, batch: Batch) -> None:
        super().prepare(batch)
        self.disparity_mean.copy_((1 / batch["depth"].clamp_min(1e-3)).mean())
        if self.config.background == "static":
            self.background.copy_(median_frame(self._pixels(batch)))
        self.motion_std.copy_(motion_scale(batch))
        valid = state_motion(batch)[1]  # [B, T]
        pose = self._relative_poses(batch["state"])  # [B, T-1, 6]
        self.pose_std.copy_(pose[valid[:, 1:]].std(0).clamp_min(1e-4))

    def _pixels(self, batch: Batch) -> torch.Tensor:
        """Model-space frames [..., 4, H, W]: RGB in [-0.5, 0.5] and disparity in units of
        the data's mean."""
        disparity = 1 / batch["depth"].clamp_min(1e-3)  # [..., H, W, 1]
        disparity = rearrange(disparity, "... h w c -> ... c h w") / self.disparity_mean
        return torch.cat([images_to_float(batch["image"]), disparity], -3)

    def _relative_poses(self, states: torch.Tensor) -> torch.Tensor:
        """The task camera's motion between consecutive frames: states [B, T, S] ->
        relative poses [B, T-1, 6] (camera t from camera t+1)."""
        poses = camera_poses(self.config.task, states)  # [B, T, 4, 4]
        return geometry.relative_pose(poses[:, :-1], poses[:, 1:])

    def depth_of(self, disparity: torch.Tensor) -> torch.Tensor:
        """Model-space disparity [N, H, W] (a frame's channel 3) -> depth [N, H, W], metres."""
        return 1 / (disparity * self.disparity_mean).clamp_min(MIN_DISPARITY)

    # -- the network ------------------------------------------------------------------------------
    def _frame_tokens(
        self, pixels: torch.Tensor, vector: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        """Frames [N, 4, H, W], their state vectors [N, S] and the actions taken from them
        [N, A] -> tokens [N, P + 2, E]."""
        image = self.encoder(pixels)  # [N, P, E]
        state = self.state_in(self.normalise_state(vector))[:, None]  # [N, 1, E]
        act = self.action_in(action)[:, None]  # [N, 1, E]
        return torch.cat([image, state, act], 1) + self.position

    def _predict(
        self, out: torch.Tensor, vector: torch.Tensor, frame: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Output tokens of frames [N, P + 2, E], their state vectors [N, S] and model-space
        pixels [N, 4, H, W] -> the next frame's model-space pixels [N, 4, H, W], normalised
        state change [N, S], normalised relative pose [N, 6] and outcome logits [N, 3]."""
        pooled = torch.cat([out[:, : self.tokens].mean(1), out[:, self.tokens]], -1)  # [N, 2E]
        motion = self.motion_head(torch.cat([pooled, self.normalise_state(vector)], -1))
        pose = self.pose_head(pooled)
        pixels = self._paint(self.decoder(out[:, : self.tokens]), frame, pose * self.pose_std)
        return pixels, motion, pose, self.outcome_head(pooled)

    def _paint(self, maps: torch.Tensor, frame: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Decoder maps [N, 5, H, W] -> the next frame's model-space pixels [N, 4, H, W],
        painted over the configured background. Under "warp" that is ``frame`` [N, 4, H, W]
        seen from the next camera (relative pose [N, 6]) by the decoder's own depth; the
        disparity is the decoder's, and pixels the warp cannot fill are painted outright."""
        background = self.config.background
        if background != "warp":
            return paint_over(maps, self.background if background == "static" else None)
        depth = self.depth_of(maps[:, 4])  # [N, H, W]: the decoder's disparity
        relative = geometry.pose_matrix(pose)
        return paint_over_warped(maps, frame[:, :3], depth, relative, self.camera)

    def _run(
        self,
        pixels: torch.Tensor,
        vector: torch.Tensor,
        action: torch.Tensor,
        segment: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced pass over frames [B, T, 4, H, W] with states [B, T, S], the
        actions taken from them [B, T, A] and episode numbers [B, T] -> ``_predict``'s
        outputs for every frame, [B*T, ...]."""
        size, time = vector.shape[:2]
        tokens = self._frame_tokens(
            pixels.flatten(0, 1), vector.flatten(0, 1), action.flatten(0, 1)
        )
        tokens = tokens.view(size, time, *tokens.shape[1:])  # [B, T, P+2, E]
        out, _ = self.transformer(tokens, temporal_mask(segment, self.memory))
        return self._predict(out.flatten(0, 1), vector.flatten(0, 1), pixels.flatten(0, 1))

    # -- training ---------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        pixels = self._pixels(batch)  # [B, T, 4, H, W]
        states, is_first = batch["state"], batch["is_first"]
        size, time = states.shape[:2]
        # frame t (inputs, t < T-1) predicts frame t+1 (targets) under action[t+1]
        segment = is_first.cumsum(1)[:, :-1]  # [B, T-1]
        valid = (~is_first[:, 1:]).flatten().float()  # [N]: t+1 in the same episode
        inputs, vectors = pixels[:, :-1], states[:, :-1]
        actions = batch["action"][:, 1:]
        predicted = self._run(inputs, vectors, actions, segment)
        total, metrics = self._prediction_losses(batch, pixels, predicted, valid)
        if c.feedback_weight:
            # Second pass: frames after each window's first come from the first pass's
            # predictions (detached), as in a rollout; the first frame stays real.
            fed_pixels = predicted[0].detach().view(size, time - 1, *pixels.shape[2:])
            fed_states = vectors + predicted[1].detach().view_as(vectors) * self.motion_std
            fed = torch.cat([inputs[:, :1], fed_pixels[:, :-1]], 1)
            fed_vectors = torch.cat([vectors[:, :1], fed_states[:, :-1]], 1)
            first = (segment == segment[:, :1]).flatten().float()  # the window's first episode
            second = self._run(fed, fed_vectors, actions, segment)
            fed_total, fed_metrics = self._prediction_losses(
                {**batch, "state": torch.cat([states[:, :1], fed_vectors], 1)},
                torch.cat([pixels[:, :1], fed], 1),
                second,
                valid * first,
                targets=(pixels, states),
            )
            total = total + c.feedback_weight * fed_total
            metrics |= {f"fed/{key}": value for key, value in fed_metrics.items()}
        return total, {"loss": total.item(), **metrics}

    def _prediction_losses(
        self,
        batch: Batch,
        pixels: torch.Tensor,
        predicted: tuple[torch.Tensor, ...],
        valid: torch.Tensor,
        targets: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The losses of one pass: ``pixels`` [B, T, 4, H, W] and ``batch["state"]`` are the
        inputs it saw (frame t predicts t+1), ``targets`` the real frames and states (default:
        the same); ``valid`` [N] marks predictions whose target is in the same episode."""
        c = self.config
        frames, motion, pose, outcome = predicted
        true_pixels, true_states = targets or (pixels, batch["state"])
        target = true_pixels[:, 1:].flatten(0, 1)  # [N, 4, H, W]
        count = valid.sum().clamp_min(1)
        mean = lambda x: (x * valid).sum() / count  # noqa: E731
        error = (frames - target).square()  # [N, 4, H, W]
        rgb_loss = mean(error[:, :3].sum((1, 2, 3)))
        disparity_loss = mean(error[:, 3].sum((1, 2)))
        before = batch["state"][:, :-1].flatten(0, 1)  # [N, S]: what the pass integrated from
        motion_target = (true_states[:, 1:].flatten(0, 1) - before) / self.motion_std
        state_loss = mean(F.huber_loss(motion, motion_target, reduction="none").sum(-1))
        pose_target = self._relative_poses(true_states).flatten(0, 1) / self.pose_std  # [N, 6]
        pose_loss = mean((pose - pose_target).square().sum(-1))
        reward, terminated, success = outcome.unbind(-1)
        bce = F.binary_cross_entropy_with_logits
        reward_loss = mean((reward - batch["reward"][:, 1:].flatten()).square())
        done_loss = mean(
            bce(terminated, batch["terminated"][:, 1:].flatten().float(), reduction="none")
            + bce(success, batch["success"][:, 1:].flatten().float(), reduction="none")
        )
        # geometry: the predicted depth and pose of t+1 warp the real frame t onto t+1
        source = true_pixels[:, :-1].flatten(0, 1)  # [N, 4, H, W]
        keep = valid.bool()
        photometric, depth_consistency = geometric_losses(
            source[keep, :3],
            self.depth_of(source[keep, 3]),
            target[keep, :3],
            self.depth_of(frames[keep, 3]),
            pose[keep] * self.pose_std,
            self.camera,
        )
        total = (
            c.rgb_weight * rgb_loss
            + c.disparity_weight * disparity_loss
            + c.state_weight * state_loss
            + c.pose_weight * pose_loss
            + c.reward_weight * reward_loss
            + c.done_weight * done_loss
            + c.photometric_weight * photometric
            + c.depth_consistency_weight * depth_consistency
        )
        return total, {
            "rgb": rgb_loss.item(),
            "disparity": disparity_loss.item(),
            "state": state_loss.item(),
            "pose": pose_loss.item(),
            "reward": reward_loss.item(),
            "done": done_loss.item(),
            "photometric": photometric.item(),
            "depth_consistency": depth_consistency.item(),
        }

    # -- the protocol -----------------------------------------------------------------------------
    def init_state(
        self,
        obs_context: Batch,
        action_context: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> State:
        """State after the real RGB-D frames of ``obs_context`` [B, K, ...]: the last one is
        the current frame; those before it run through the transformer as in training (each
        with the action taken from it, ``action_context[:, 1:]``; zeros if None) and the
        last ``context - 1`` of them fill the cache."""
        pixels = self._pixels(obs_context)  # [B, K, 4, H, W]
        vectors = obs_context["state"]
        size, frames = vectors.shape[:2]
        memory = self.memory
        past = min(frames - 1, memory)
        width = self.config.width
        keys = pixels.new_zeros(size, self.config.depth, memory, self.tokens + 2, width)
        values = torch.zeros_like(keys)
        if past:
            actions = action_context
            if actions is None:
                actions = vectors.new_zeros(size, frames, self.spec.action_dim)
            tokens = self._frame_tokens(
                pixels[:, :-1].flatten(0, 1),
                vectors[:, :-1].flatten(0, 1),
                actions[:, 1:].flatten(0, 1),
            ).view(size, frames - 1, self.tokens + 2, width)
            segment = torch.zeros(size, frames - 1, dtype=torch.long, device=pixels.device)
            _, cache = self.transformer(tokens, temporal_mask(segment, memory))
            keys[:, :, memory - past :] = torch.stack([k[:, -past:] for k, _ in cache], 1)
            values[:, :, memory - past :] = torch.stack([v[:, -past:] for _, v in cache], 1)
        valid = torch.arange(memory, device=pixels.device).expand(size, -1) >= memory - past
        current = vectors[:, -1]
        return {
            "frame": pixels[:, -1],
            "vector": current,
            "keys": keys,
            "values": values,
            "valid": valid,
            "time": torch.full((size,), frames - 1, device=pixels.device),
            "outcome": current.new_tensor([0.0, -20.0, -20.0]).expand(size, 3),
            "pose": current.new_zeros(size, 6),
            "camera": camera_poses(self.config.task, current).to(current.device),
        }

    @torch.no_grad()
    def step(
        self, state: State, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> State:
        """One transition: the current frame's tokens (with ``action`` [B, A]) attend to the
        cached window; the heads give the next frame; the cache slides by one frame."""
        if action.dim() != 2 or action.shape[1] != self.spec.action_dim:
            raise ValueError(
                f"actions must be [B, {self.spec.action_dim}], got {tuple(action.shape)}"
            )
        tokens = self._frame_tokens(state["frame"], state["vector"], action.float())[:, None]
        keys, values = state["keys"], state["values"]  # [B, L, M, P+2, E]
        past = list(zip(keys.unbind(1), values.unbind(1), strict=True))
        valid = F.pad(state["valid"], (0, 1), value=True)  # [B, M+1]
        time = state["time"][:, None]  # [B, 1]
        out, cache = self.transformer(tokens, valid[:, None], time, past)
        pixels, motion, pose, outcome = self._predict(out[:, 0], state["vector"], state["frame"])
        pose = pose * self.pose_std  # [B, 6]
        new_keys = torch.stack([k for k, _ in cache], 1)  # [B, L, 1, P+2, E]
        new_values = torch.stack([v for _, v in cache], 1)
        return {
            "frame": pixels,
            "vector": state["vector"] + motion * self.motion_std,
            "keys": torch.cat([keys, new_keys], 2)[:, :, 1:],
            "values": torch.cat([values, new_values], 2)[:, :, 1:],
            "valid": valid[:, 1:],
            "time": state["time"] + 1,
            "outcome": outcome,
            "pose": pose,
            "camera": state["camera"] @ geometry.pose_matrix(pose),
        }

    def decode(self, state: State) -> dict[str, torch.Tensor]:
        frame = state["frame"]
        return {
            "image": float_to_images(frame[:, :3]),
            "state": state["vector"],
            "depth": self.depth_of(frame[:, 3])[..., None],  # [B, H, W, 1], metres
        }

    def state_vector(self, state: State) -> torch.Tensor:
        return state["vector"]

    def extra_info(self, state: State) -> dict[str, torch.Tensor]:
        """The predicted camera: world-from-camera pose [B, 4, 4] and the last step's
        relative pose [B, 6] (translation m, axis-angle rad; camera before from camera after)."""
        return {"camera_pose": state["camera"], "camera_relative_pose": state["pose"]}

    def outcome_scores(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reward, terminated, success = state["outcome"].unbind(-1)
        return reward, terminated.sigmoid(), success.sigmoid()

    def features(self, state: State) -> torch.Tensor:
        image = self.encoder(state["frame"]).mean(1)  # [B, E]
        return torch.cat([image, self.normalise_state(state["vector"])], -1)
