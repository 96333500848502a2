"""Genie's dynamics: a MaskGIT transformer over frame tokens, conditioned on past frames and
latent actions.

Input per frame: each token enters as its FSQ code vector through a linear layer (a learned
mask embedding where it is masked), plus a learned position per patch and the embedding of
the latent action that led into the frame (one extra index means "none": an episode's first
frame). Output: for each FSQ dimension of a token, logits over that dimension's levels.

Why codes in and per-dimension logits out, not one embedding and one 1000-way softmax per
token: with a softmax over codes, each of the 1000 codes needs its own embedding-to-logit
path to be copied, which a small training budget does not teach for rare tokens, so objects
that do not move vanish from generated frames. With code vectors, copying is one linear map
for every code, and neighbouring FSQ levels (which decode to similar patches) share
structure. A token's dimensions are chosen independently given the context, as the tokens
of one MaskGIT pass are.

Training masks a random fraction of each frame's tokens (MaskGIT's cosine schedule, or
uniform between ``mask_ratio_min`` and 1 as the Genie paper trains with 0.5) and predicts
them. Tokens that differ from the frame before (the gripper, the object: about a tenth) may
weigh ``changed_weight`` times the others, since those are what a rollout must get right and
a loss over all tokens is mostly won by copying.

The window runs twice in one pass: a clean copy, in which frame t sees clean
frames t-memory..t, and a masked copy, in which masked frame t sees the clean frames before
it and itself. That is exactly the situation at generation, where past frames are finished
and cached, so no context is ever masked in training that is not masked in use.

Generation (``generate``) starts from a fully masked frame and, over ``steps`` passes, keeps
the most confident predictions, revealing 1 - cos(pi/2 * s/steps) of the tokens after pass
s; every env of the batch is decoded at once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wm_envs.models.genie.fsq import FSQ
from wm_envs.models.genie.transformer import KeyValues, STTransformer, temporal_mask


class Dynamics(nn.Module):
    """Token frames [B, T, P] and latent actions [B, T] -> features and next-token logits."""

    def __init__(
        self,
        tokens: int,
        levels: list[int],
        actions: int,
        width: int,
        depth: int,
        heads: int,
        memory: int,
        feature_channels: int,
        task_actions: int = 0,
        changed_weight: float = 1.0,
        mask_ratio_min: float = 0.0,
    ) -> None:
        super().__init__()
        self.fsq, self.levels = FSQ(levels), list(levels)
        self.changed_weight, self.mask_ratio_min = changed_weight, mask_ratio_min
        self.tokens, self.memory = tokens, memory
        self.mask_token, self.no_action = self.fsq.size, actions  # the indices after the last
        self.code_in = nn.Linear(self.fsq.dim, width)
        self.mask_embed = nn.Parameter(0.02 * torch.randn(width))
        self.action_embed = nn.Embedding(actions + 1, width)
        #: With ``task_actions``, the task's action [.., A] is embedded too and added to the
        #: latent action's: linear without a bias, so a hidden (zero) action adds nothing, and
        #: zero at the start, so a trained model continues as it was.
        self.task_action_embed = None
        if task_actions:
            self.task_action_embed = nn.Linear(task_actions, width, bias=False)
            nn.init.zeros_(self.task_action_embed.weight)
        self.position = nn.Parameter(0.02 * torch.randn(tokens, width))
        self.transformer = STTransformer(width, depth, heads, memory)
        self.to_logits = nn.Linear(width, sum(levels))  # per FSQ dimension, over its levels
        self.to_features = nn.Linear(width, feature_channels)

    def forward(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        mask: torch.Tensor,
        time: torch.Tensor | None = None,
        past: list[KeyValues] | None = None,
        task_action: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[KeyValues]]:
        """Tokens [B, T, P], latent actions [B, T] and, with ``task_actions``, the task's
        actions [B, T, A] (None: zeros, none known) -> hidden [B, T, P, E] and per-block keys
        and values of these frames (``mask``, ``time``, ``past`` as in ``STTransformer``)."""
        codes = self.fsq.indices_to_codes(tokens.clamp_max(self.mask_token - 1))  # [B, T, P, d]
        masked = (tokens == self.mask_token)[..., None]
        x = torch.where(masked, self.mask_embed, self.code_in(codes))  # [B, T, P, E]
        action = self.action_embed(actions)  # [B, T, E]
        if self.task_action_embed is not None and task_action is not None:
            action = action + self.task_action_embed(task_action.float())
        x = x + self.position + action[:, :, None]
        return self.transformer(x, mask, time, past)

    def logits(self, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Hidden [..., E] -> per FSQ dimension i, float logits [..., L_i]."""
        return self.to_logits(hidden).float().split(self.levels, -1)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden [..., P, E] -> the flat feature vector [..., P * feature_channels]."""
        return self.to_features(hidden).flatten(-2)

    def mask_ratios(self, size: int, frames: int, device: torch.device) -> torch.Tensor:
        """The share of tokens training masks in each frame [B, T, 1]: uniform in
        [``mask_ratio_min``, 1] (Genie's) where that is above 0, else MaskGIT's cosine
        schedule over [0, 1]."""
        draw = torch.rand(size, frames, 1, device=device)
        if self.mask_ratio_min > 0:
            return self.mask_ratio_min + (1 - self.mask_ratio_min) * draw
        return torch.cos(0.5 * math.pi * draw)

    def loss(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        segment: torch.Tensor,
        task_action: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Masked-token cross-entropy on a window: tokens [B, T, P], latent actions [B, T],
        episode numbers [B, T], task actions [B, T, A] or None. Returns the loss, the clean
        copy's hidden [B, T, P, E] (for the heads) and metrics."""
        size, frames, patches = tokens.shape
        ratio = self.mask_ratios(size, frames, tokens.device)  # [B, T, 1]
        hidden_tokens = torch.rand(size, frames, patches, device=tokens.device) < ratio
        masked = torch.where(hidden_tokens, self.mask_token, tokens)  # [B, T, P]
        clean_sees = temporal_mask(segment, self.memory)  # [B, T, T] clean frames t-memory..t
        past_sees = temporal_mask(segment, self.memory, strict=True)  # ... before t
        itself = torch.eye(frames, dtype=torch.bool, device=tokens.device).expand_as(past_sees)
        mask = torch.cat(
            [
                torch.cat([clean_sees, torch.zeros_like(clean_sees)], 2),
                torch.cat([past_sees, itself], 2),
            ],
            1,
        )  # [B, 2T, 2T]
        time = torch.arange(frames, device=tokens.device).repeat(2)  # [2T]
        both = None if task_action is None else task_action.repeat(1, 2, 1)  # [B, 2T, A]
        hidden, _ = self(
            torch.cat([tokens, masked], 1), actions.repeat(1, 2), mask, time, None, both
        )
        # Frames with no earlier frame of their episode are never generated: no loss there.
        target = hidden_tokens & past_sees.any(-1)[..., None]  # [B, T, P]
        digits = self.fsq.indices_to_digits(tokens[target])  # [M, d]
        changed = (tokens != F.pad(tokens[:, :-1], (0, 0, 1, 0)))[target]  # [M]: vs frame t-1
        weight = 1.0 + (self.changed_weight - 1.0) * changed.float()  # [M]
        loss, correct = 0.0, torch.ones_like(changed)
        for i, logits in enumerate(self.logits(hidden[:, frames:][target])):  # [M, L_i]
            error = F.cross_entropy(logits, digits[:, i], reduction="none")  # [M]
            loss = loss + (weight * error).sum() / weight.sum().clamp_min(1)
            correct &= logits.argmax(-1) == digits[:, i]
        count = target.sum().clamp_min(1)
        metrics = {
            "dynamics/accuracy": (correct.sum() / count).item(),
            "dynamics/changed_accuracy": (correct & changed).sum().item()
            / max(changed.sum().item(), 1),
        }
        return loss, hidden[:, :frames], metrics

    @torch.no_grad()
    def generate(
        self,
        past: list[KeyValues],
        mask: torch.Tensor,
        time: torch.Tensor,
        actions: torch.Tensor,
        steps: int,
        temperature: float,
        generator: torch.Generator | None,
        task_action: torch.Tensor | None = None,
        guidance: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens [B, P] of the frame after the cached ``past`` under latent actions [B]
        (and task actions [B, A], or None), and their expected FSQ codes [B, P, d].

        ``mask`` [B, 1, Tp + 1] and the new frame's ``time`` [B, 1] as in ``forward``. With
        a ``generator``, each FSQ dimension is sampled at ``temperature`` (Gumbel-max);
        without, each pass takes the most likely level (the mode, deterministic). The
        expected code of a token is each dimension's mean level under the pass that revealed
        it: where the model is unsure between neighbouring levels it lies between them, and
        decodes to the patch between theirs rather than to one guess. With ``guidance``
        other than 1, each pass draws from ``guided_logits``, unless no frame has a latent
        action to guide by (every action "none": a step on the task action alone).
        """
        if steps < 1:
            raise ValueError(
                f"maskgit_steps must be at least 1, got {steps}: without a generation pass "
                f"every token of the frame stays masked"
            )
        size = actions.shape[0]
        tokens = actions.new_full((size, self.tokens), self.mask_token)  # [B, P]
        expected = torch.zeros(size, self.tokens, self.fsq.dim, device=actions.device)
        task = None if task_action is None else task_action[:, None]  # [B, 1, A]
        none = actions == self.no_action  # [B]: steps on the task action alone
        guided = guidance != 1 and not none.all()
        if guided and none.any():
            raise ValueError(
                "guidance by the latent action needs a latent action in every row; steps "
                "with and without one (the index 'none') cannot share a guided batch"
            )
        for step in range(steps):
            if not guided:
                hidden, _ = self(tokens[:, None], actions[:, None], mask, time, past, task)
                per_dimension = self.logits(hidden[:, 0])  # per FSQ dimension [B, P, L_i]
            else:
                per_dimension = self.guided_logits(
                    tokens, actions, mask, time, past, task, guidance
                )
            digits, means, confidence = [], [], 0.0
            for logits in per_dimension:
                levels = torch.linspace(-1, 1, logits.shape[-1], device=logits.device)
                means.append(logits.softmax(-1) @ levels)  # [B, P]
                if generator is None:
                    score, choice = logits.max(-1)
                else:
                    logits = logits / max(temperature, 1e-6)
                    uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
                    choice = (logits - torch.log(-torch.log(uniform.clamp_min(1e-20)))).argmax(-1)
                    score = logits.gather(-1, choice[..., None])[..., 0]
                confidence = confidence + score - logits.logsumexp(-1)  # log-probability [B, P]
                digits.append(choice)
            chosen = self.fsq.digits_to_indices(torch.stack(digits, -1))  # [B, P]
            still_masked = tokens == self.mask_token
            confidence = confidence.masked_fill(~still_masked, math.inf)
            revealed = math.ceil(self.tokens * (1 - math.cos(0.5 * math.pi * (step + 1) / steps)))
            keep = confidence.topk(revealed, -1).indices  # [B, revealed]
            reveal = torch.zeros_like(still_masked).scatter(-1, keep, True) & still_masked
            tokens = torch.where(reveal, chosen, tokens)
            expected = torch.where(reveal[..., None], torch.stack(means, -1), expected)
        return tokens, expected

    def guided_logits(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        mask: torch.Tensor,
        time: torch.Tensor,
        past: list[KeyValues],
        task: torch.Tensor | None,
        guidance: float,
    ) -> list[torch.Tensor]:
        """Per FSQ dimension, log-probabilities [B, P, L_i] of one generation pass over
        tokens [B, P] under latent actions [B], guided by the action: log p(x | a) +
        (guidance - 1) * (log p(x | a) - log mean_a' p(x | a')). The mean runs over every
        latent action from the same context (classifier-free guidance whose unconditional
        model is the action marginalised out), so each pass costs one batch per action."""
        size, count = actions.shape[0], self.no_action
        every = torch.arange(count, device=actions.device).repeat(size)  # [B * n]
        wide_past = [
            (k.repeat_interleave(count, 0), v.repeat_interleave(count, 0)) for k, v in past
        ]
        wide_task = None if task is None else task.repeat_interleave(count, 0)
        hidden, _ = self(
            tokens.repeat_interleave(count, 0)[:, None],
            every[:, None],
            mask.repeat_interleave(count, 0),
            time.repeat_interleave(count, 0),
            wide_past,
            wide_task,
        )  # [B * n, 1, P, E]
        chosen = actions[:, None, None, None]  # [B, 1, 1, 1]
        guided = []
        for logits in self.logits(hidden[:, 0]):  # [B * n, P, L_i]
            log_probs = logits.log_softmax(-1).unflatten(0, (size, count))  # [B, n, P, L_i]
            under_action = log_probs.gather(1, chosen.expand(-1, 1, *log_probs.shape[2:]))[:, 0]
            marginal = log_probs.logsumexp(1) - math.log(count)  # [B, P, L_i]
            guided.append(under_action + (guidance - 1) * (under_action - marginal))
        return guided
