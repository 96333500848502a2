"""JEPA: a joint-embedding predictive world model -- latent prediction, no pixel decoder.

An encoder maps each 64x64 frame to an embedding ``z`` (128 numbers); a predictor maps the
last two embeddings and the action to the next embedding. The loss lives in embedding space
(as in I-JEPA / V-JEPA 2-AC and DINO-WM): predicted embeddings against those an EMA *target*
encoder gives the real next frames, scored by InfoNCE (cosine similarity, temperature 0.1)
against every other frame of the batch -- which keeps the embedding from collapsing to a
constant -- plus the cosine distance itself. The predictor is trained on one-step
(teacher-forced) predictions and on open-loop rollouts of the window, since that is how the
learned env uses it.

The model state is ``(previous, embed)``: two embeddings carry velocity (one frame does
not), so ``features`` -- the ``latent`` observation -- is their concatenation, 256 numbers.
Heads on the features predict reward, termination and success; a *probe* reads the state
vector off the features. The probe is trained on frozen (detached) features of encoded and
of predicted frames, so it measures what the embedding knows without shaping it, and
serves ``obs_mode="state"`` and ``compare``. By default the state a rollout reports is
*integrated*, as the RSSM's is: it starts at the last real state and each step adds the change
a motion probe reads off the new features (also trained on frozen features), so an object at
rest stays put instead of taking on the absolute probe's ~2 cm error from the first step.
There is no image decoder: ``dict``, ``pixels`` and ``rgbd`` are refused by the learned env
(``obs_modes``), not faked with a nearest real frame.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wm_envs.models.base import (
    Batch,
    ModelSpec,
    State,
    WorldModel,
    images_to_float,
    motion_scale,
    state_motion,
)
from wm_envs.models.layers import mlp


@dataclass(frozen=True)
class JEPAConfig:
    embed: int = 128  # per frame; features are two frames' worth
    channels: int = 16  # conv width at 32x32; doubles per halving of resolution
    predictor_hidden: int = 384
    head_hidden: int = 128
    probe_hidden: int = 256
    target_momentum: float = 0.99  # EMA of the target encoder per update
    temperature: float = 0.1  # InfoNCE
    cosine_weight: float = 1.0
    contrastive_weight: float = 1.0
    rollout_weight: float = 1.0  # open-loop predictions, beside the one-step ones
    probe_weight: float = 1.0
    reward_weight: float = 1.0
    done_weight: float = 0.1
    #: How the state vector is read out: "absolute" -- the probe's reading of the features;
    #: "integrated" -- the last real state plus the changes a motion probe reads off each
    #: step's features (an object at rest stays put; the RSSM's integrated state does the
    #: same). Not trained: both probes always train.
    readout: str = "integrated"


PRESETS = {
    "tiny": {
        "embed": 16,
        "channels": 4,
        "predictor_hidden": 32,
        "head_hidden": 16,
        "probe_hidden": 16,
    },  # tests
    "small": {},  # ~0.5M parameters: trains on a 2-core CPU
    "medium": {
        "embed": 256,
        "channels": 64,
        "predictor_hidden": 1024,
        "head_hidden": 256,
        "probe_hidden": 512,
    },
}


class FrameEncoder(nn.Module):
    """Image [N, 3, 64, 64] -> embedding [N, E] (layer-normalised, no affine)."""

    def __init__(self, spec: ModelSpec, config: JEPAConfig) -> None:
        super().__init__()
        c = config.channels
        layers, width, size = [], 3, spec.image_size
        for out in (c, 2 * c, 4 * c, 4 * c):
            layers += [nn.Conv2d(width, out, 4, 2, 1), nn.SiLU()]
            width, size = out, size // 2
        self.net = nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(width * size * size, config.embed)
        )
        self.norm = nn.LayerNorm(config.embed, elementwise_affine=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(image))


class JEPA(WorldModel):
    """Joint-embedding predictive world model (see module docstring)."""

    name = "jepa"
    config_class = JEPAConfig
    obs_modes = ("state", "latent")

    def __init__(self, spec: ModelSpec, config: JEPAConfig) -> None:
        super().__init__(spec, config)
        if spec.depth:
            raise ValueError("the JEPA encodes RGB frames; train it on a dataset without depth")
        if config.readout not in ("absolute", "integrated"):
            raise ValueError(
                f"JEPA readout must be 'absolute' or 'integrated', got {config.readout!r}"
            )
        c = config
        self.encoder = FrameEncoder(spec, c)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = mlp(2 * c.embed + spec.action_dim, c.predictor_hidden, c.embed)
        self.norm = nn.LayerNorm(c.embed, elementwise_affine=False)
        self.outcome_head = mlp(2 * c.embed, c.head_hidden, 3)  # reward, terminated, success
        self.probe = mlp(2 * c.embed, c.probe_hidden, spec.state_dim)
        self.motion_probe = mlp(2 * c.embed, c.probe_hidden, spec.state_dim)
        self.register_buffer("motion_std", torch.ones(spec.state_dim))

    @property
    def feature_dim(self) -> int:
        return 2 * self.config.embed

    # -- the protocol -------------------------------------------------------------------------
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Frames uint8 [..., H, W, 3] -> embeddings [..., E]."""
        lead = image.shape[:-3]
        return self.encoder(images_to_float(image).flatten(0, len(lead) - 1)).view(*lead, -1)

    def predict(
        self, previous: torch.Tensor, embed: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        """Embeddings of frames t-1 and t [..., E] and the action [..., A] -> frame t+1's."""
        return self.norm(embed + self.predictor(torch.cat([previous, embed, action], -1)))

    def init_state(
        self,
        obs_context: Batch,
        action_context: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> State:
        embeds = self.encode(obs_context["image"])  # [B, K, E]
        previous = embeds[:, -2] if embeds.shape[1] > 1 else embeds[:, -1]  # one frame: at rest
        return {"previous": previous, "embed": embeds[:, -1], "vector": obs_context["state"][:, -1]}

    def step(
        self, state: State, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> State:
        embed = self.predict(state["previous"], state["embed"], action)  # [B, E]
        stepped = {"previous": state["embed"], "embed": embed}
        if self.config.readout == "integrated":
            motion = self.motion_probe(self.features(stepped)) * self.motion_std  # [B, S]
            stepped["vector"] = state["vector"] + motion
        return stepped

    def observe(
        self,
        state: State,
        action: torch.Tensor,
        obs: Batch,
        generator: torch.Generator | None = None,
    ) -> State:
        """The real frame's embedding replaces the prediction (the encoder is the filter)."""
        return {
            "previous": state["embed"],
            "embed": self.encode(obs["image"]),
            "vector": obs["state"],
        }

    def features(self, state: State) -> torch.Tensor:
        return torch.cat([state["previous"], state["embed"]], -1)

    def decode(self, state: State) -> dict[str, torch.Tensor]:
        return {"state": self.state_vector(state)}

    def state_vector(self, state: State) -> torch.Tensor:
        if self.config.readout == "integrated":
            return state["vector"]
        return self.denormalise_state(self.probe(self.features(state)))

    def outcome_scores(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reward, terminated, success = self.outcome_head(self.features(state)).unbind(-1)
        return reward, terminated.sigmoid(), success.sigmoid()

    # -- training -------------------------------------------------------------------------------
    def prepare(self, batch: Batch) -> None:
        super().prepare(batch)
        self.motion_std.copy_(motion_scale(batch))

    @torch.no_grad()
    def update_target(self) -> None:
        """Move the target encoder toward the online one (EMA)."""
        momentum = self.config.target_momentum
        for target, online in zip(
            self.target_encoder.parameters(), self.encoder.parameters(), strict=True
        ):
            target.lerp_(online, 1.0 - momentum)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        if self.training:
            self.update_target()
        embeds = self.encode(batch["image"])  # [B, T, E]
        with torch.no_grad():
            targets = self.target_encoder(images_to_float(batch["image"]).flatten(0, 1))
            targets = targets.view_as(embeds)  # [B, T, E]
        first = batch["is_first"].bool()  # [B, T]
        action = batch["action"]  # [B, T, A]: the action that led into each frame
        # Frame t-1's embedding beside frame t's; an episode's first frame is its own (at rest).
        previous = torch.where(first[..., None], embeds, embeds.roll(1, 1))  # [B, T, E]
        previous_known = first.clone()  # [B, T]: frame t-1 is in the window, or t starts
        previous_known[:, 1:] = True
        # One-step predictions of frames 1..T-1 from the encoded frames before them.
        one_step = self.predict(previous[:, :-1], embeds[:, :-1], action[:, 1:])  # [B, T-1, E]
        one_step_valid = previous_known[:, :-1] & ~first[:, 1:]  # [B, T-1]
        # Open loop: from frames (0, 1) of the window, predictions of frames 2..T-1.
        rolled, rolled_previous = [], []
        last, now = previous[:, 1], embeds[:, 1]
        for t in range(2, embeds.shape[1]):
            last, now = now, self.predict(last, now, action[:, t])
            rolled_previous.append(last)
            rolled.append(now)
        rollout = torch.stack(rolled, 1)  # [B, T-2, E]
        rollout_previous = torch.stack(rolled_previous, 1)
        rollout_valid = first[:, 2:].cumsum(1) == 0  # until the window crosses an episode start
        prediction_loss, metrics = self._embedding_losses(
            [(one_step, one_step_valid, 1.0), (rollout, rollout_valid, c.rollout_weight)],
            targets[:, 1:],
            offsets=(0, 1),
        )
        # Heads and probe on the features of encoded frames and of predicted ones.
        encoded_features = torch.cat([previous, embeds], -1)  # [B, T, 2E]
        rolled_features = torch.cat([rollout_previous, rollout], -1)  # [B, T-2, 2E]
        head_batch = {
            key: torch.cat([batch[key][previous_known], batch[key][:, 2:][rollout_valid]])
            for key in ("state", "reward", "terminated", "success")
        }
        features = torch.cat(
            [encoded_features[previous_known], rolled_features[rollout_valid]]
        )  # [N + M, 2E]
        reward, terminated, success = self.outcome_head(features).unbind(-1)
        probe_loss, reward_loss, done_loss = self.head_losses(
            head_batch, self.probe(features.detach()), reward, terminated, success
        )
        # The motion probe: the change of the state into each frame, where it is defined.
        motion, valid = state_motion(batch)  # [B, T, S], [B, T]
        encoded_valid = previous_known & valid
        rolled_valid = rollout_valid & valid[:, 2:]
        motion_features = torch.cat(
            [encoded_features[encoded_valid], rolled_features[rolled_valid]]
        ).detach()  # [M, 2E]
        motion_target = (
            torch.cat([motion[encoded_valid], motion[:, 2:][rolled_valid]]) / self.motion_std
        )
        motion_loss = (
            F.huber_loss(self.motion_probe(motion_features), motion_target, reduction="none")
            .sum(-1)
            .mean()
        )
        total = (
            prediction_loss
            + c.probe_weight * (probe_loss + motion_loss)
            + c.reward_weight * reward_loss
            + c.done_weight * done_loss
        )
        metrics |= {
            "loss": total.item(),
            "probe": probe_loss.item(),
            "motion_probe": motion_loss.item(),
            "reward": reward_loss.item(),
            "done": done_loss.item(),
            "embed_std": embeds.std(0).mean().item(),  # collapse shows as this going to 0
        }
        return total, metrics

    def _embedding_losses(
        self,
        predictions: list[tuple[torch.Tensor, torch.Tensor, float]],
        targets: torch.Tensor,
        offsets: tuple[int, ...],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cosine distance and InfoNCE of predicted embeddings [B, T', E] against the target
        embeddings of the frames they predict (``targets`` [B, T-1, E] from frame 1; each
        prediction set starts ``offset`` frames later), negatives: every target frame of the
        batch. One (predictions, valid mask [B, T'], weight) triple per kind."""
        c = self.config
        keys = F.normalize(targets.flatten(0, 1), dim=-1)  # [B*(T-1), E]
        index = torch.arange(targets.shape[0] * targets.shape[1], device=targets.device)
        index = index.view(targets.shape[:2])  # [B, T-1]: row of each target in ``keys``
        total, metrics = targets.new_zeros(()), {}
        for (predicted, valid, weight), offset, name in zip(
            predictions, offsets, ("one_step", "rollout"), strict=True
        ):
            queries = F.normalize(predicted[valid], dim=-1)  # [N, E]
            positives = index[:, offset : offset + predicted.shape[1]][valid]  # [N]
            similarity = queries @ keys.T  # [N, B*(T-1)]
            cosine = 1.0 - similarity.gather(1, positives[:, None]).mean()
            contrastive = F.cross_entropy(similarity / c.temperature, positives)
            total = total + weight * (c.cosine_weight * cosine + c.contrastive_weight * contrastive)
            metrics[f"{name}_cosine"] = cosine.item()
            metrics[f"{name}_nce"] = contrastive.item()
        return total, metrics
