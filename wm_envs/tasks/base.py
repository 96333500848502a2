"""What every Phys-* env shares: observation modes, action checks, the reset/step skeleton.

A task subclass supplies the physics (``_reset_physics``, ``_apply_action``), the privileged
state vector (``state_vector``), the reward/success rule (``_evaluate``) and a camera
(``_render``). The learned twins (``WM-*-v0``) build their spaces with the same helpers, so a
policy moves between physics and model without a line changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode

OBS_MODES = ("dict", "state", "pixels", "rgbd")


def make_observation_space(obs_mode: str, image_size: int, state_dim: int) -> spaces.Space:
    """The observation space shared by a Phys-* env and its WM-* twin."""
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
    image = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
    state = spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
    if obs_mode == "state":
        return state
    if obs_mode == "pixels":
        return image
    parts = {"image": image, "state": state}
    if obs_mode == "rgbd":
        parts["depth"] = spaces.Box(0, np.inf, (image_size, image_size, 1), np.float32)
    return spaces.Dict(parts)


def check_action(action: Any, space: spaces.Box) -> np.ndarray:
    """Validate an action against a Box space; clip out-of-range values into it.

    Wrong shapes and non-finite values raise ``ValueError``: silently stepping with them would
    corrupt a dataset or a rollout without anyone noticing.
    """
    array = np.asarray(action, dtype=np.float64)
    if array.shape != space.shape:
        raise ValueError(f"action must have shape {space.shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"action must be finite, got {array.tolist()}")
    return np.clip(array, space.low, space.high).astype(np.float32)


def assemble_observation(
    obs_mode: str, state: np.ndarray | None, image: np.ndarray | None, depth: np.ndarray | None
) -> Any:
    """Pack the parts an ``obs_mode`` asks for into the observation."""
    if obs_mode == "state":
        return state
    if obs_mode == "pixels":
        return image
    obs = {"image": image, "state": state}
    if obs_mode == "rgbd":
        obs["depth"] = depth
    return obs


class WorldDraw(Mapping):
    """What a reset drew (``info["physics"]``), read-only. Not a dict on purpose: Gymnasium's
    vector envs stack a dict's arrays across envs, and a draw's arrays differ in size from one
    draw to the next (a Collapse layout's welds, a Drive track's centre line); any other
    object they keep as it is, one per env."""

    def __init__(self, values: dict) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:  # arrays compare element-wise, as in a dict test
        return isinstance(other, Mapping) and data_equivalence(
            self._values, dict(other), exact=True
        )

    __hash__ = None  # mutable contents, as a dict's

    def __repr__(self) -> str:
        return f"WorldDraw({self._values!r})"


class Evaluation(NamedTuple):
    """What a task reports after each transition."""

    reward: float
    success: bool  # the task is solved: terminates the episode, info["is_success"]
    failure: bool  # an unrecoverable state (off the track, crashed): terminates the episode
    info: dict  # task-specific extras merged into the step info


class PhysicsTaskEnv(gym.Env):
    """Skeleton of a ground-truth task: obs modes, action checks, reset/step bookkeeping."""

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": 25,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }
    #: Length of the privileged state vector; layout in the subclass docstring.
    state_dim: int
    #: Number of action dimensions, each in [-1, 1].
    action_dim: int
    #: The scripted expert class for this task (see ``wm_envs.make_expert``).
    expert_class: type

    def __init__(
        self,
        obs_mode: str = "dict",
        image_size: int = 64,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.obs_mode = obs_mode
        self.image_size = image_size
        self.render_mode = render_mode
        self.width, self.height = width, height
        self.observation_space = make_observation_space(obs_mode, image_size, self.state_dim)
        self.action_space = spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)

    # -- what a task implements -------------------------------------------------------------
    def _reset_physics(self, options: dict | None) -> dict:
        """Draw a new world from ``self.np_random``; return the realised physical parameters."""
        raise NotImplementedError

    def _apply_action(self, action: np.ndarray) -> None:
        """Advance the simulation by one control step under a validated, clipped action."""
        raise NotImplementedError

    def state_vector(self) -> np.ndarray:
        """The privileged state, float32 of shape ``(state_dim,)``."""
        raise NotImplementedError

    def _evaluate(self) -> Evaluation:
        """Reward of the last transition, success, failure and extra info."""
        raise NotImplementedError

    def _render(self, width: int, height: int, depth: bool = False) -> np.ndarray:
        """An RGB uint8 (H, W, 3) image from the task camera, or depth in metres (H, W, 1)."""
        raise NotImplementedError

    def _render_rgbd(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB and depth of the same instant; engines that make both in one pass override it."""
        return self._render(width, height), self._render(width, height, depth=True)

    def _camera(self) -> tuple[np.ndarray, float] | None:
        """The observation camera now: world-from-camera pose (4, 4) in OpenCV axes (x right,
        y down, looking along +z) and its vertical field of view in degrees; None for a task
        whose env does not report it."""
        return None

    def _camera_info(self) -> dict:
        """``info["camera_pose"]`` (4, 4) and ``info["camera_intrinsics"]`` (fx, fy, cx, cy
        at ``image_size``, pixel centres at integer coordinates): what unprojects the
        observation's depth (metres along the camera's z axis) into world points."""
        camera = self._camera()
        if camera is None:
            return {}
        pose, fovy = camera
        focal = (self.image_size / 2) / np.tan(np.radians(fovy) / 2)
        centre = (self.image_size - 1) / 2
        return {
            "camera_pose": pose.astype(np.float32),
            "camera_intrinsics": np.array([focal, focal, centre, centre], np.float32),
        }

    # -- the Gymnasium API --------------------------------------------------------------------
    def _observation(self) -> Any:
        size = self.image_size
        state = None if self.obs_mode == "pixels" else self.state_vector()
        image = depth = None
        if self.obs_mode == "rgbd":
            image, depth = self._render_rgbd(size, size)
        elif self.obs_mode != "state":
            image = self._render(size, size)
        return assemble_observation(self.obs_mode, state, image, depth)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        physics = self._reset_physics(options)
        extra = self._evaluate().info
        info = {"physics": WorldDraw(physics), "is_success": False, **extra}
        return self._observation(), info | self._camera_info()

    def step(self, action: Any):
        self._apply_action(check_action(action, self.action_space))
        reward, success, failure, extra = self._evaluate()
        info = {"is_success": success, **extra, **self._camera_info()}
        return self._observation(), float(reward), success or failure, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self._render(self.width, self.height)
        return None
