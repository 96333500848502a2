"""Give any Gymnasium env a world model's latent observations.

    env = LatentObservation(gym.make("Phys-Grasp-v0"), checkpoint="runs/rssm-grasp")

A policy trained on a learned env's ``obs_mode="latent"`` features acts on the real env
through this wrapper: every real observation is filtered into the model's state with the
previous action (the posterior, ``WorldModel.observe``), and the policy sees that state's
features. The wrapped env must give dict observations with ``image`` and ``state`` (and
``depth`` for a model trained on it), as ``Phys-*`` envs do in ``dict`` / ``rgbd`` mode.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from wm_envs.checkpoint import load_checkpoint, shipped_checkpoint
from wm_envs.device import resolve_device
from wm_envs.models.base import State, WorldModel
from wm_envs.tasks import task_of
from wm_envs.tasks.base import check_action


class LatentObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Observations become ``Box(-inf, inf, (feature_dim,))``: the world model's features
    of its posterior state given every real frame so far.

    Arguments: ``env`` (dict observations), ``model`` (the model's name, used to find the
    shipped checkpoint for the env's task when ``checkpoint`` is not given), ``checkpoint``
    (a folder), ``device`` ("auto": CUDA when present).
    """

    def __init__(
        self,
        env: gym.Env,
        model: str = "rssm",
        checkpoint: str | None = None,
        device: str = "auto",
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, model=model, checkpoint=checkpoint, device=device
        )
        gym.Wrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict) or not {"image", "state"} <= set(space.spaces):
            raise ValueError(
                f"LatentObservation needs dict observations with 'image' and 'state' "
                f"(a Phys-* env in obs_mode 'dict' or 'rgbd'), got {space}"
            )
        self.device = resolve_device(device)
        env_id = env.spec.id if env.spec else ""
        folder = checkpoint or shipped_checkpoint(model, task_of(env_id))
        self.model, self.card, _ = load_checkpoint(folder, self.device)
        self.filter = LatentFilter(self.model, self.device)
        keys = self.filter.keys
        missing = set(keys) - set(space.spaces)
        if missing:
            raise ValueError(f"{folder} was trained on {keys}; the env lacks {sorted(missing)}")
        for key in keys:
            if space[key].shape != self._expected_shape(key):
                raise ValueError(
                    f"{folder} expects {key!r} of shape {self._expected_shape(key)}, the env "
                    f"gives {space[key].shape}"
                )
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, (self.model.feature_dim,), np.float32
        )

    def _expected_shape(self, key: str) -> tuple[int, ...]:
        spec = self.model.spec
        size = spec.image_size
        return {"image": (size, size, 3), "state": (spec.state_dim,), "depth": (size, size, 1)}[key]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self.filter.start(obs), info

    def step(self, action: Any):
        if self.filter.state is None:
            raise RuntimeError("call reset() before step()")
        action = check_action(action, self.env.action_space)
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.filter.update(action, obs), reward, terminated, truncated, info


class LatentFilter:
    """A world model's posterior over one env's real observations: ``start(obs)`` at an
    episode's first frame, then ``update(action, obs)`` each step; both return the features
    [feature_dim] of the state (what a latent policy acts on)."""

    def __init__(self, model: WorldModel, device: torch.device) -> None:
        self.model, self.device = model, device
        self.keys = ["image", "state"] + (["depth"] if model.spec.depth else [])
        self.state: State | None = None

    def _batch(self, obs: dict, frames: bool) -> dict[str, torch.Tensor]:
        """One real observation as model input: [1, 1, ...] for ``init_state``, else [1, ...]."""
        batch = {}
        for key in self.keys:
            value = torch.as_tensor(np.asarray(obs[key]), device=self.device)
            value = value if key == "image" else value.float()
            batch[key] = value[None, None] if frames else value[None]
        return batch

    @torch.inference_mode()
    def start(self, obs: dict) -> np.ndarray:
        self.state = self.model.init_state(self._batch(obs, frames=True))
        return self._features()

    @torch.inference_mode()
    def update(self, action: np.ndarray, obs: dict) -> np.ndarray:
        tensor = torch.as_tensor(action, dtype=torch.float32, device=self.device)[None]
        self.state = self.model.observe(self.state, tensor, self._batch(obs, frames=False))
        return self._features()

    def _features(self) -> np.ndarray:
        return self.model.features(self.state)[0].float().cpu().numpy()
