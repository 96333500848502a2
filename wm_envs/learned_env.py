"""WM-<Task>-v0: the task simulated by a learned world model, as a Gymnasium env.

``WorldModelEnv`` is one env; ``WorldModelVectorEnv`` steps N envs in one batched model call
(``gym.make_vec("WM-Grasp-v0", num_envs=N)``), on the GPU when there is one. Both share
``LearnedSimulator``, which loads and checks the checkpoint, starts model states from real
frames and turns model outputs into observations. Spaces match the physics twin, so a
policy moves between ``Phys-*`` and ``WM-*`` without a line changed. ``WorldModelEnv`` can
also re-anchor its model on a physics shadow every N steps (``resync_every``).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from wm_envs.checkpoint import load_checkpoint, shipped_checkpoint
from wm_envs.device import resolve_device
from wm_envs.models.base import Batch, State, WorldModel, select_state
from wm_envs.tasks import TASKS, experts, task_function
from wm_envs.tasks.base import check_action, make_observation_space

OBS_MODES = ("dict", "state", "pixels", "rgbd", "latent")
#: Where a learned env's success and termination come from: the model's learned heads, or
#: the task's own rule applied to the predicted state vector (``TaskSpec.state_outcome``).
SUCCESS_SOURCES = ("head", "state")
#: A start state further than this many standard deviations (of the checkpoint's training
#: data) from the data's mean in any dimension is refused: the model has never seen anything
#: like it. Physics stays well inside: over 3.6k Phys-Grasp-v0 states of expert and random
#: rollouts on both engines the largest was 620 (an object knocked off the table, falling),
#: and an object falling for a whole episode (4 s, 78 m) would reach about 2.4e3.
MAX_START_DEVIATION = 1e4
#: Standard deviations are read as at least this (state units: m, m/s, rad/s), so that a
#: dimension the training data held nearly constant does not refuse ordinary values.
STD_FLOOR = 1e-2
METADATA = {
    "render_modes": ["rgb_array"],
    "render_fps": 25,
    "autoreset_mode": AutoresetMode.NEXT_STEP,
}


def check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None and render_mode not in METADATA["render_modes"]:
        raise ValueError(
            f"render_mode must be one of {METADATA['render_modes']}, got {render_mode!r}"
        )


def check_resync(resync_every: int | None, resync_weight: float) -> None:
    """Refuse a re-anchoring period that is not a whole number of steps >= 1 (or None: never)
    and a weight outside (0, 1], or a weight other than 1 without a period."""
    if resync_every is not None and (
        isinstance(resync_every, bool) or not isinstance(resync_every, Integral) or resync_every < 1
    ):
        raise ValueError(
            f"resync_every must be None (never re-anchor) or a whole number of steps >= 1, "
            f"got {resync_every!r}"
        )
    valid = isinstance(resync_weight, Real) and not isinstance(resync_weight, bool)
    if not (valid and 0 < resync_weight <= 1):
        raise ValueError(
            f"resync_weight must be a number in (0, 1] (1: the full posterior), "
            f"got {resync_weight!r}"
        )
    if resync_every is None and resync_weight != 1:
        raise ValueError(
            f"resync_weight={resync_weight!r} needs resync_every (how often to re-anchor); "
            "without it the env never re-anchors"
        )


def blend_states(posterior: State, prior: State, weight: float) -> State:
    """``weight * posterior + (1 - weight) * prior`` for every floating-point tensor of a
    model state; tensors of other dtypes (token indices) cannot be mixed and take the
    posterior's values.

    Generic, so it works for any model's state dict, but a mix of two discrete latents (the
    RSSM's one-hot ``stoch``) is no longer one-hot: the networks read it as a soft latent,
    which they never met in training; below 1 the blend trades that for a gentler correction.
    """
    return {
        key: torch.lerp(prior[key], value, weight) if value.is_floating_point() else value
        for key, value in posterior.items()
    }


def as_device_tensor(value: Any, device: torch.device) -> torch.Tensor:
    """A torch tensor (on any device: moved directly, no host round trip) or an array-like,
    as a tensor on ``device``."""
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(np.asarray(value))
    return value.to(device)


class LearnedSimulator:
    """A checked world model plus its start bank: batched starts, steps and observations."""

    def __init__(
        self,
        task: str,
        model: str = "rssm",
        checkpoint: str | None = None,
        obs_mode: str = "dict",
        device: str = "auto",
        action_mode: str = "env",
        model_settings: dict | None = None,
        backend: str | None = None,
        render_mode: str | None = None,
        success_from: str = "head",
    ) -> None:
        check_render_mode(render_mode)
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
        if success_from not in SUCCESS_SOURCES:
            raise ValueError(f"success_from must be one of {SUCCESS_SOURCES}, got {success_from!r}")
        if success_from == "state" and not TASKS[task].state_outcome:
            raise ValueError(
                f"success_from='state': task {task!r} declares no success rule on its state "
                "(TaskSpec.state_outcome); use the learned heads (success_from='head')"
            )
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        task_spec = TASKS[task]
        if backend == task_spec.backend:
            backend = None  # the default engine, named
        if backend is not None and backend not in task_spec.other_backends:
            raise ValueError(
                f"backend must be None or {task_spec.backend!r} (the default engine of "
                f"Phys-{task_spec.name}-v0) or one of {task_spec.other_backends}, got {backend!r}"
            )
        self.device = resolve_device(device)
        folder = checkpoint or shipped_checkpoint(model, task)
        self.model, self.card, extra = load_checkpoint(folder, self.device)
        if self.card["task"] != task:
            raise ValueError(
                f"checkpoint {folder} was trained for task {self.card['task']!r}, not {task!r}"
            )
        if self.card["model"] != model:
            raise ValueError(
                f"checkpoint {folder} holds a {self.card['model']!r} model, not {model!r}"
            )
        self._check_twin(task, backend, folder)
        spec = self.model.spec
        self.expert_class = self._check_spaces(task, spec, folder)
        if obs_mode not in self.model.obs_modes:
            raise ValueError(
                f"obs_mode {obs_mode!r}: a {model} model serves {self.model.obs_modes} "
                f"(it has no image decoder)"
            )
        if render_mode is not None and "pixels" not in self.model.obs_modes:
            raise ValueError(
                f"render_mode {render_mode!r}: a {model} model has no image decoder to render"
            )
        if obs_mode == "rgbd" and not spec.depth:
            raise ValueError(
                f"obs_mode 'rgbd' needs a checkpoint trained on depth; {folder} "
                f"was trained on RGB only"
            )
        self.task, self.obs_mode = task, obs_mode
        #: The task's rule on the state (``success_from="state"``), resolved once; else None.
        self.state_outcome = (
            task_function(task, "state_outcome") if success_from == "state" else None
        )
        self.bank = {k.removeprefix("bank/"): v for k, v in extra.items() if k.startswith("bank/")}
        self._configure(action_mode, model_settings or {})
        self.action_mode = action_mode
        if action_mode == "latent":
            self.action_space = spaces.Discrete(self.model.n_latent_actions)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)
        if obs_mode == "latent":
            self.observation_space = spaces.Box(
                -np.inf, np.inf, (self.model.feature_dim,), np.float32
            )
        else:
            self.observation_space = make_observation_space(
                obs_mode, spec.image_size, spec.state_dim
            )

    def _configure(self, action_mode: str, settings: dict) -> None:
        """Set the model's action mode and inference settings, refusing what it lacks."""
        model = self.model
        if action_mode not in model.action_modes:
            raise ValueError(
                f"action_mode {action_mode!r}: a {model.name} model takes {model.action_modes}"
            )
        bounds = model.inference_settings  # name -> inclusive (low, high)
        unknown = set(settings) - set(bounds)
        if unknown:
            raise ValueError(
                f"model_settings {sorted(unknown)}: a {model.name} model has "
                f"{list(bounds) or 'none'}"
            )
        for name, value in settings.items():
            low, high = bounds[name]
            kind = type(getattr(model, name))
            valid = isinstance(value, Real) and not isinstance(value, bool)
            valid = valid and math.isfinite(value) and low <= value <= high
            if not valid or (kind is int and value != int(value)):
                raise ValueError(
                    f"model_settings[{name!r}] must be a finite {kind.__name__} in "
                    f"[{low}, {high}], got {value!r}"
                )
        model.action_mode = action_mode
        for name, value in settings.items():
            setattr(model, name, type(getattr(model, name))(value))

    def make_shadow(self) -> gym.Env:
        """The physics twin the checkpoint learned, observing what ``model.observe`` reads
        (dict, or rgbd for a depth model): what re-anchoring steps beside the model. Refused
        for models without a one-step filter and for latent actions (physics takes env
        actions)."""
        if type(self.model).observe is WorldModel.observe:
            raise ValueError(
                f"resync_every needs a model with a one-step filter (observe); a "
                f"{self.model.name} model has none"
            )
        if self.action_mode != "env":
            raise ValueError(
                "resync_every steps the physics shadow with the same actions, so it needs "
                f'action_mode="env", got {self.action_mode!r}'
            )
        obs_mode = "rgbd" if self.model.spec.depth else "dict"
        return gym.make(f"Phys-{TASKS[self.task].name}-v0", obs_mode=obs_mode, **self.twin_kwargs)

    @property
    def twin_kwargs(self) -> dict:
        """The ``gym.make`` kwargs of the physics twin the checkpoint learned (its card's
        ``env_kwargs`` but the observation mode)."""
        return {k: v for k, v in self.card.get("env_kwargs", {}).items() if k != "obs_mode"}

    def _check_twin(self, task: str, backend: str | None, folder) -> None:
        """Refuse a checkpoint trained on another engine (or other settings) of the twin than
        ``backend``."""
        trained_on = self.twin_kwargs
        if trained_on.get("backend") not in TASKS[task].other_backends:
            trained_on.pop("backend", None)  # named or not, the default engine
        expected = {} if backend is None else {"backend": backend}
        if trained_on != expected:
            engine = trained_on.get("backend")
            fix = f'backend="{engine}"' if engine else "backend=None (the default engine)"
            raise ValueError(
                f"checkpoint {folder} was trained on Phys-{TASKS[task].name}-v0 with "
                f"{trained_on or 'its defaults'}, but this learned env's twin is made with "
                f"{expected or 'its defaults'}; pass {fix} to simulate the twin it learned"
            )

    def _check_spaces(self, task: str, spec, folder) -> type:
        """Refuse a checkpoint whose shapes (its card's ``spec``) differ from the physics
        twin's (declared in ``TASKS``, the same on every engine: no physics env is made);
        return the twin's expert class (experts run on the learned env's decoded state too)."""
        twin = TASKS[task]
        mine = ((spec.image_size, spec.image_size, 3), (spec.state_dim,), (spec.action_dim,))
        theirs = ((twin.image_size, twin.image_size, 3), (twin.state_dim,), (twin.action_dim,))
        if mine != theirs:
            raise ValueError(
                f"checkpoint {folder} has image/state/action shapes {mine}, but "
                f"Phys-{twin.name}-v0 has {theirs}"
            )
        return getattr(experts, twin.expert)

    @torch.inference_mode()
    def start(
        self,
        context: dict[str, torch.Tensor],
        actions: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> State:
        """Model states from real frames: ``context`` values [B, K, ...]."""
        return self.model.init_state(context, actions, generator)

    def bank_context(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Start frames number ``rows`` of the bank, as one-frame contexts [B, 1, ...]."""
        index = torch.as_tensor(rows, device=self.bank["image"].device)
        return {key: value[index, None].to(self.device) for key, value in self.bank.items()}

    def context_from_observation(self, observation: dict, batched: bool) -> dict:
        """A real start observation as model context [B, K, ...].

        Values are one frame or K frames (leading axis K) of one env, or, with ``batched``,
        the same with a leading env axis.
        """
        if not isinstance(observation, dict) or not {"image", "state"} <= set(observation):
            raise ValueError(
                "a start observation must be a dict with 'image' and 'state' "
                "(obs_mode 'dict' or 'rgbd' of the physics twin)"
            )
        frame_axis = 1 if batched else 0
        context = {}
        for key, single in self.observation_space_shapes().items():
            if key not in observation:
                continue
            value = as_device_tensor(observation[key], self.device)
            lead = value.dim() - len(single)
            if tuple(value.shape[lead:]) != single or lead not in (frame_axis, frame_axis + 1):
                raise ValueError(
                    f"start observation {key!r} has shape {tuple(value.shape)}; "
                    f"expected {single} with {frame_axis} or {frame_axis + 1} "
                    f"leading axes"
                )
            if key == "image" and value.dtype != torch.uint8:
                raise ValueError(f"start observation 'image' must be uint8, got {value.dtype}")
            if key != "image":
                if not value.is_floating_point():
                    raise ValueError(
                        f"start observation {key!r} must hold real floating-point values "
                        f"(float32 like the twin's), got {value.dtype}"
                    )
                value = value.float()
                if not torch.isfinite(value).all():
                    raise ValueError(f"start observation {key!r} holds NaN or inf")
            if lead == frame_axis:
                value = value.unsqueeze(frame_axis)  # a single frame: K = 1
            context[key] = value if batched else value.unsqueeze(0)
        self._check_seen_in_training(context["state"])
        return context

    def frame_from_observation(self, observation: dict) -> Batch:
        """One real observation of one env (the twin's dict or rgbd) as a batch [1, ...]: what
        ``model.observe`` takes. Checked like a start observation."""
        context = self.context_from_observation(observation, batched=False)  # [1, 1, ...]
        return {key: value[:, -1] for key, value in context.items()}

    def _check_seen_in_training(self, state: torch.Tensor) -> None:
        """Refuse start states [B, K, S] far outside the checkpoint's training data (see
        ``MAX_START_DEVIATION``), read in units of the model's ``state_mean``/``state_std``."""
        model = self.model
        scale = model.state_std.clamp_min(STD_FLOOR)  # [S]
        deviation = ((state - model.state_mean) / scale).abs().flatten(0, 1).amax(0)  # [S]
        if (deviation > MAX_START_DEVIATION).any():
            dims = (deviation > MAX_START_DEVIATION).nonzero().flatten().tolist()
            raise ValueError(
                f"start observation 'state' dims {dims} lie up to "
                f"{float(deviation.max()):.3g} standard deviations from the mean of the data "
                f"this checkpoint was trained on (limit {MAX_START_DEVIATION:g}); pass a real "
                f"state of the twin in its units and layout"
            )

    def start_from(
        self,
        options: dict | None,
        rng: np.random.Generator,
        count: int,
        batched: bool,
        generator: torch.Generator | None,
    ) -> tuple[State, np.ndarray]:
        """States for ``count`` envs: from ``options["observation"]`` (and ``"actions"``, the
        action that led into each context frame) if given, else from start-bank frames drawn
        with ``rng``. Also returns the bank rows used (-1: the start came from options)."""
        if not options or "observation" not in options:
            rows = rng.integers(len(self.bank["image"]), size=count)
            return self.start(self.bank_context(rows), None, generator), rows
        context = self.context_from_observation(options["observation"], batched)
        size, frames = context["state"].shape[:2]
        if size != count:
            raise ValueError(f"options['observation'] holds {size} observations for {count} envs")
        expected = (count, frames, self.model.spec.action_dim)
        expected = expected if batched else expected[1:]
        actions = options.get("actions")
        if actions is None and frames > 1:
            raise ValueError(
                f"a context of {frames} frames needs options['actions'] of shape {expected}: "
                f"the action that led into each frame (the first is ignored)"
            )
        if actions is not None:
            actions = as_device_tensor(actions, self.device)
            if tuple(actions.shape) != expected:
                raise ValueError(
                    f"options['actions'] must have shape {expected} (the action that led into "
                    f"each context frame), got {tuple(actions.shape)}"
                )
            if actions.is_complex() or actions.dtype == torch.bool:
                raise ValueError(f"options['actions'] must be real numbers, got {actions.dtype}")
            actions = actions.float()
            if not torch.isfinite(actions).all():
                raise ValueError("options['actions'] holds NaN or inf")
            actions = actions if batched else actions[None]
        return self.start(context, actions, generator), np.full(count, -1)

    def generator(self, rng: np.random.Generator) -> torch.Generator:
        """A torch generator on the model's device, seeded from ``rng`` (stochastic mode)."""
        generator = torch.Generator(self.device)
        generator.manual_seed(int(rng.integers(2**63)))
        return generator

    def observation_space_shapes(self) -> dict[str, tuple]:
        spec = self.model.spec
        size = spec.image_size
        return {"image": (size, size, 3), "state": (spec.state_dim,), "depth": (size, size, 1)}

    @torch.inference_mode()
    def step(
        self, state: State, action: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Next states and the learned reward, terminated and success [B]."""
        state = self.model.step(state, action, generator)
        return (state, *self.model.outcomes(state))

    @torch.inference_mode()
    def judge(
        self, state: State, terminated: torch.Tensor, success: torch.Tensor, held: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The terminated and success flags [B] an env reports for ``state``, and the steps
        [B] the task's goal has been held (``held``: before this step): the heads' flags as
        ``step`` gave them, or with ``success_from="state"`` the task's own rule on the
        predicted state vector. A head must fire on exactly the step a hold completes, which
        it misses for motions unlike its training data's (the shipped Grasp agent's fast
        lifts); the rule is exact given the predicted state, and as good as that state."""
        if self.state_outcome is None:
            return terminated, success, held
        success, terminated, held = self.state_outcome(self.model.state_vector(state).float(), held)
        return terminated, success, held

    @torch.inference_mode()
    def reanchor(
        self,
        state: State,
        action: torch.Tensor,
        prior: State,
        observed: Batch,
        weight: float,
        generator: torch.Generator | None,
    ) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step from ``state`` under ``action`` re-anchored on the real observation it led
        to (``observed`` [B, ...]): the posterior at ``weight`` 1, else its blend with the
        model's own ``prior`` (``blend_states``); with the reward, terminated and success [B]
        of the result."""
        posterior = self.model.observe(state, action, observed, generator)
        state = posterior if weight == 1 else blend_states(posterior, prior, weight)
        return (state, *self.model.outcomes(state))

    @torch.inference_mode()
    def observe(self, state: State) -> dict[str, torch.Tensor] | torch.Tensor:
        """Batched observation tensors for ``obs_mode`` (decoding only what is asked)."""
        if self.obs_mode == "latent":
            return self.model.features(state).float()
        if self.obs_mode == "state":
            return self.model.state_vector(state).float()
        decoded = self.model.decode(state)
        if self.obs_mode == "pixels":
            return decoded["image"]
        obs = {"image": decoded["image"], "state": decoded["state"].float()}
        if self.obs_mode == "rgbd":
            obs["depth"] = decoded["depth"].float()
        return obs


def _to_numpy(obs):
    if isinstance(obs, dict):
        return {key: value.cpu().numpy() for key, value in obs.items()}
    return obs.cpu().numpy()


def _first(obs):
    return {k: v[0] for k, v in obs.items()} if isinstance(obs, dict) else obs[0]


class WorldModelEnv(gym.Env):
    """A task simulated by a learned world model (``WM-<Task>-v0``).

    ## Description
    Every step is one latent transition of the model; observations are decoded from the model
    state; reward, termination and ``info["is_success"]`` come from the model's learned heads
    (or, with ``success_from="state"``, termination and success from the task's own rule on
    the predicted state vector).
    The physics twin ``Phys-<Task>-v0`` defines the task; see its docstring.

    With ``resync_every=N`` the env also owns a physics shadow: the twin the checkpoint
    learned, reset with the same seed and stepped with the same (checked, clipped) actions.
    Every N steps the model state is re-anchored on the shadow's observation, so errors stop
    compounding past N steps: at ``resync_weight`` 1 the state becomes the model's one-step
    posterior given that real frame (``model.observe``); below 1 every floating-point tensor
    of the state becomes ``w * posterior + (1 - w) * prior`` (the generic blend of
    ``blend_states``: fine for continuous latents; a discrete latent such as the RSSM's
    one-hot ``stoch`` becomes a soft mixture the model never met in training, and tensors that
    are not floating point take the posterior's values). The shadow steps at physics speed
    (and renders every step), so a resynced env runs at about the twin's rate.

    ## Action Space
    The physics twin's (``Box(-1, 1, (A,))``); the same checks: a wrong shape or NaN/inf
    raises ``ValueError``, out-of-range values are clipped. With ``action_mode="latent"``:
    ``Discrete(n)``, the model's latent actions; anything else raises ``ValueError``.

    ## Observation Space
    The physics twin's for ``obs_mode`` in dict / state / pixels / rgbd (rgbd needs a model
    trained on depth), plus ``"latent"``: the model's flat feature vector, no decoding. Also
    when re-anchoring, observations are the model's decoding of its (re-anchored) state.

    ## Rewards
    The learned reward head's prediction of the twin's reward.

    ## Starting State
    By default a start observation drawn (with the reset seed) from the bank of real first
    frames stored in the checkpoint. ``options={"observation": obs}`` starts from any real
    dict observation of the twin; a context of K frames is given as ``obs`` with a leading
    K axis plus ``options["actions"]`` [K, A] (the action that led into each frame; the
    first is ignored; required when K > 1). Values may be numpy arrays or torch tensors on
    any device; states of any real float dtype are read as float32, and states far outside
    the checkpoint's training data (``MAX_START_DEVIATION``) are refused. The returned
    observation is the model's own decoding of that state. With ``resync_every`` the start is
    the shadow's first frame for the reset seed (``options["observation"]`` is refused).

    ## Episode End
    Terminated when the learned termination head fires (``success_from="state"``: when the
    task's rule on the predicted state says so; Grasp: on success); truncated by the registered
    ``max_episode_steps`` (the twin's). A shadow whose own episode has ended is no longer
    stepped, and the env stops re-anchoring until the next reset.

    ## Info
    ``is_success`` (the learned head, or the task's rule: ``success_from``); at reset
    ``bank_index`` (the start-bank row, None for a given or shadow start). With
    ``resync_every``: ``resynced`` (this step re-anchored the state), ``physics_success``
    (the shadow's ``is_success``, its last one once its episode has ended),
    ``physics_ended`` (the shadow's episode has ended), and on re-anchoring steps
    ``predicted_state``, the state vector the model predicted before the correction.
    Models may add entries of their own (``WorldModel.extra_info``): DeepVerse reports its
    predicted ``camera_pose`` (world from camera, 4x4, OpenCV axes, as the twin's info) and
    ``camera_relative_pose`` (the last step's translation and axis-angle).

    ## Arguments
    ``task`` (set by the registration), ``model`` (a name in ``wm_envs.models.MODELS``:
    "rssm", "genie", "jepa", "symbolic", ...), ``checkpoint`` (a folder; default the shipped
    one), ``backend`` (the twin's engine, as ``Phys-*`` takes it:
    None = the task's default; a checkpoint trained on another engine is refused),
    ``obs_mode``, ``render_mode`` ("rgb_array": the decoded
    frame), ``device`` ("auto": CUDA when present), ``stochastic`` (sample the latent
    transitions with the reset seed instead of taking their mode), ``action_mode`` ("env":
    the twin's actions; "latent": ``Discrete(n)``, the model's own learned controls, for
    models that have them -- Genie's latent actions), ``model_settings`` (inference settings
    the model declares, within its ``inference_settings`` bounds, e.g. ``{"maskgit_steps": 8,
    "temperature": 0.8, "residual_tolerance": 0.0, "done_threshold": 0.5}`` for Genie;
    others raise ``ValueError``),
    ``resync_every`` (None, the default: never; N >= 1: re-anchor on the physics shadow every
    N steps; needs a model with a one-step filter, e.g. the RSSM, not Genie, and
    ``action_mode="env"``), ``resync_weight`` (in (0, 1], default 1: the weight of the
    posterior in the re-anchored state), ``success_from`` ("head", the default: the learned
    success and termination heads; "state": the task's success rule,
    ``TaskSpec.state_outcome``, on the predicted state vector; Grasp: the object lifted
    10 cm for 5 steps).
    """

    metadata = METADATA

    def __init__(
        self,
        task: str,
        model: str = "rssm",
        checkpoint: str | None = None,
        obs_mode: str = "dict",
        render_mode: str | None = None,
        device: str = "auto",
        stochastic: bool = False,
        action_mode: str = "env",
        model_settings: dict | None = None,
        backend: str | None = None,
        resync_every: int | None = None,
        resync_weight: float = 1.0,
        success_from: str = "head",
    ) -> None:
        check_resync(resync_every, resync_weight)
        self.simulator = LearnedSimulator(
            task,
            model,
            checkpoint,
            obs_mode,
            device,
            action_mode,
            model_settings,
            backend,
            render_mode,
            success_from,
        )
        self.observation_space = self.simulator.observation_space
        self.action_space = self.simulator.action_space
        self.render_mode = render_mode
        self.stochastic = stochastic
        self.expert_class = self.simulator.expert_class
        self.resync_every = None if resync_every is None else int(resync_every)
        self.resync_weight = float(resync_weight)
        self._generator: torch.Generator | None = None
        self._state: State | None = None
        self._held = torch.zeros(1, dtype=torch.long, device=self.simulator.device)
        #: The physics twin the state is re-anchored on (with ``resync_every``), else None.
        self.shadow = None if resync_every is None else self.simulator.make_shadow()
        self._steps = 0  # since reset, with a shadow
        self._shadow_ended = self._physics_success = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.stochastic:
            self._generator = self.simulator.generator(self.np_random)
        info: dict[str, Any] = {"is_success": False, "bank_index": None}
        self._held = torch.zeros_like(self._held)  # steps at the goal (success_from="state")
        if self.shadow is None:
            self._state, rows = self.simulator.start_from(
                options, self.np_random, 1, batched=False, generator=self._generator
            )
            info["bank_index"] = None if rows[0] < 0 else int(rows[0])
            return self._observation(), info | self._extra_info()
        if options and {"observation", "actions"} & set(options):
            raise ValueError(
                "with resync_every the episode starts from the physics shadow's first frame "
                "for the reset seed; options['observation'] and options['actions'] are refused"
            )
        obs, shadow_info = self.shadow.reset(seed=seed)
        context = self.simulator.context_from_observation(obs, batched=False)
        self._state = self.simulator.start(context, None, self._generator)
        self._steps, self._shadow_ended = 0, False
        self._physics_success = bool(shadow_info.get("is_success", False))
        info |= {
            "resynced": True,
            "physics_success": self._physics_success,
            "physics_ended": False,
        }
        return self._observation(), info | self._extra_info()

    def step(self, action: Any):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        sim = self.simulator
        if sim.action_mode == "latent":
            if not self.action_space.contains(action):
                raise ValueError(
                    f"a latent action is an integer in [0, {self.action_space.n}), got {action!r}"
                )
            action = np.int64(action)
        else:
            action = check_action(action, self.action_space)
        tensor = torch.as_tensor(action, device=sim.device)[None]
        before = self._state
        self._state, reward, terminated, success = sim.step(before, tensor, self._generator)
        info: dict[str, Any] = {}
        if self.shadow is not None:
            observed, info = self._step_shadow(action)
            if observed is not None:
                info["predicted_state"] = self.state_vector()
                self._state, reward, terminated, success = sim.reanchor(
                    before, tensor, self._state, observed, self.resync_weight, self._generator
                )
        terminated, success, self._held = sim.judge(self._state, terminated, success, self._held)
        info = {"is_success": bool(success[0]), **info, **self._extra_info()}
        return self._observation(), float(reward[0]), bool(terminated[0]), False, info

    def _step_shadow(self, action: np.ndarray) -> tuple[Batch | None, dict]:
        """Step the physics shadow with ``action`` (until its episode ends). Returns its
        observation as a batch [1, ...] on the steps that re-anchor (every ``resync_every``),
        else None, and the info entries."""
        self._steps += 1
        observed = None
        if not self._shadow_ended:
            obs, _, terminated, truncated, shadow_info = self.shadow.step(action)
            self._shadow_ended = bool(terminated or truncated)
            self._physics_success = bool(shadow_info.get("is_success", False))
            if self._steps % self.resync_every == 0:
                observed = self.simulator.frame_from_observation(obs)
        info = {
            "resynced": observed is not None,
            "physics_success": self._physics_success,
            "physics_ended": self._shadow_ended,
        }
        return observed, info

    def _observation(self):
        return _first(_to_numpy(self.simulator.observe(self._state)))

    def _extra_info(self) -> dict[str, np.ndarray]:
        """The model's own info entries (``WorldModel.extra_info``), e.g. its camera pose."""
        with torch.inference_mode():
            extra = self.simulator.model.extra_info(self._state)
        return {key: value[0].cpu().numpy().copy() for key, value in extra.items()}

    def state_vector(self) -> np.ndarray:
        """The decoded state vector: what a scripted expert reads (``wm_envs.make_expert``)."""
        with torch.inference_mode():
            return self.simulator.model.state_vector(self._state)[0].cpu().numpy()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._state is None:
            return None
        with torch.inference_mode():
            return self.simulator.model.decode(self._state)["image"][0].cpu().numpy()

    def close(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        super().close()


class WorldModelVectorEnv(gym.vector.VectorEnv):
    """N copies of ``WM-<Task>-v0`` stepped in one batched model call.

    Gymnasium's NEXT_STEP autoreset: the step after an env terminates or truncates resets
    it (its action is ignored, reward 0) to a start-bank frame drawn on the model's device.
    ``reset`` makes the start states of the whole bank once; steps merge them in with masks,
    so the autoreset never waits for the device. ``torch_obs=True`` returns observations,
    rewards and flags as torch tensors on ``device`` instead of numpy arrays, and accepts
    actions as tensors, so a GPU agent never copies to the host. Actions from the host are
    checked for NaN/inf on the host; tensors on the device are checked there, which costs a
    device sync per step. Arguments as ``WorldModelEnv``, plus ``num_envs`` and
    ``max_episode_steps`` (default: the task's); step infos carry the model's own entries
    (``WorldModel.extra_info``) batched, e.g. DeepVerse's ``camera_pose`` [N, 4, 4]; but
    without re-anchoring: physics shadows would step one by one on the host beside the
    batched model call, and a resynced env runs at
    the shadow's speed anyway. ``gym.make_vec(id, num_envs=N, vectorization_mode="sync",
    resync_every=...)`` gives N resynced ``WorldModelEnv``s.
    """

    metadata = METADATA

    def __init__(
        self,
        num_envs: int,
        task: str,
        model: str = "rssm",
        checkpoint: str | None = None,
        obs_mode: str = "dict",
        device: str = "auto",
        stochastic: bool = False,
        torch_obs: bool = False,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        action_mode: str = "env",
        model_settings: dict | None = None,
        backend: str | None = None,
        resync_every: int | None = None,
        resync_weight: float = 1.0,
        success_from: str = "head",
    ) -> None:
        if resync_every is not None or resync_weight != 1:
            raise ValueError(
                "the batched vector env does not re-anchor on physics; for N resynced envs use "
                'gym.make_vec(id, num_envs=N, vectorization_mode="sync", resync_every=...)'
            )
        self.simulator = sim = LearnedSimulator(
            task,
            model,
            checkpoint,
            obs_mode,
            device,
            action_mode,
            model_settings,
            backend,
            render_mode,
            success_from,
        )
        self.num_envs = num_envs
        self.single_observation_space = sim.observation_space
        self.single_action_space = sim.action_space
        self.observation_space = batch_space(sim.observation_space, num_envs)
        self.action_space = batch_space(sim.action_space, num_envs)
        self.render_mode = render_mode
        self.torch_obs, self.stochastic = torch_obs, stochastic
        self.max_episode_steps = max_episode_steps or TASKS[task].max_episode_steps
        self._rng = np.random.default_rng()
        self._generator: torch.Generator | None = None  # the model's, in stochastic mode
        self._bank_generator: torch.Generator | None = None  # draws the autoreset starts
        self._bank_states: State | None = None  # the start state of every bank frame
        self._state: State | None = None
        self._steps = torch.zeros(num_envs, dtype=torch.long, device=sim.device)
        self._held = torch.zeros(num_envs, dtype=torch.long, device=sim.device)
        self._needs_reset = torch.zeros(num_envs, dtype=torch.bool, device=sim.device)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        sim = self.simulator
        if isinstance(seed, list):
            seed = seed[0] if seed and seed[0] is not None else None
        if seed is not None or self._state is None:
            self._rng = np.random.default_rng(seed)
            if self.stochastic:
                self._generator = sim.generator(self._rng)
            self._bank_generator = sim.generator(self._rng)
        self._state, starts = sim.start_from(
            options, self._rng, self.num_envs, batched=True, generator=self._generator
        )
        every_row = np.arange(len(sim.bank["image"]))
        self._bank_states = sim.start(sim.bank_context(every_row), None, self._generator)
        self._steps.zero_()
        self._held = torch.zeros_like(self._held)
        self._needs_reset.zero_()
        return self._output(sim.observe(self._state)), {"bank_index": starts}

    def step(self, actions):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        sim = self.simulator
        action = self._checked_actions(actions)
        state, reward, terminated, success = sim.step(self._state, action, self._generator)
        resetting = self._needs_reset  # [N]
        bank_size = len(sim.bank["image"])
        picks = torch.randint(
            bank_size, (self.num_envs,), generator=self._bank_generator, device=sim.device
        )  # [N]
        fresh = {key: value[picks] for key, value in self._bank_states.items()}
        self._state = state = select_state(resetting, fresh, state)
        self._steps = torch.where(resetting, 0, self._steps + 1)
        terminated, success, held = sim.judge(state, terminated, success, self._held)
        self._held = torch.where(resetting, 0, held)  # a fresh start has held nothing yet
        zero = torch.zeros_like(terminated)
        terminated = torch.where(resetting, zero, terminated)
        success = torch.where(resetting, zero, success)
        truncated = (self._steps >= self.max_episode_steps) & ~terminated
        reward = torch.where(resetting, torch.zeros_like(reward), reward).float()
        self._needs_reset = terminated | truncated
        infos = {"is_success": success, "autoreset": resetting, **sim.model.extra_info(state)}
        if not self.torch_obs:
            infos = {k: v.cpu().numpy() for k, v in infos.items()}
        return (
            self._output(sim.observe(state)),
            *self._output((reward, terminated, truncated)),
            infos,
        )

    def _checked_actions(self, actions: Any) -> torch.Tensor:
        """Actions [N, A] (or latent indices [N]) on the model's device, checked where they
        are: host arrays on the host, tensors on their device; env actions clipped."""
        sim = self.simulator
        on_host = not isinstance(actions, torch.Tensor)
        action = torch.as_tensor(np.asarray(actions)) if on_host else actions
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"actions must have shape {self.action_space.shape}, got {tuple(action.shape)}"
            )
        if sim.action_mode == "env":  # latent indices are checked by the model
            action = action.float()
            finite = np.isfinite(action.numpy()) if on_host else torch.isfinite(action)
            if not finite.all():
                raise ValueError("actions must be finite (NaN or inf found)")
            action = action.clamp(-1.0, 1.0)
        return action.to(sim.device)

    def _output(self, value):
        if self.torch_obs:
            return value
        if isinstance(value, tuple):
            return tuple(v.cpu().numpy() for v in value)
        return _to_numpy(value)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._state is None:
            return None
        with torch.inference_mode():
            return self.simulator.model.decode(self._state)["image"].cpu().numpy()
