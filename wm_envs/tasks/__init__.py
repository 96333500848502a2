"""Ground-truth tasks. ``TASKS`` is the registry: one entry per task."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


def resolve(target: str) -> Callable:
    """The function a ``module:function`` string names."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class FreeMotion:
    """What a physics prior on a task's learned motion needs (the RSSM's
    ``conservation_weight``): where the state vector keeps one rigid object's position and
    linear velocity, and a rule that marks the steps on which nothing touches it."""

    position: tuple[int, int]  # state-vector slice [start, stop) of its xyz, metres
    velocity: tuple[int, int]  # state-vector slice [start, stop) of its velocity, m/s
    #: ``module:function`` mapping state vectors [..., S] before a step (numpy or torch) to
    #: two bool masks [...]: untouched free flight through the step, and untouched rest.
    rule: str
    dt: float  # control step, s
    gravity: float = 9.81  # m/s^2, along -z

    def phases(self, states):
        """The rule's (flight, rest) masks [...] for state vectors [..., S]."""
        return resolve(self.rule)(states)


@dataclass(frozen=True)
class TaskSpec:
    """What registration needs to know about a task."""

    name: str  # "Grasp" -> Phys-Grasp-v0 and WM-Grasp-v0
    entry_point: str
    max_episode_steps: int
    #: The default engine (what ``backend=None`` means).
    backend: str
    #: Shapes every engine's env of the task shares: the state vector and the action, and
    #: the square image's side. Learned envs check checkpoints against them without making
    #: a physics env (tests check them against every engine's env).
    state_dim: int
    action_dim: int
    #: The scripted expert's class in ``wm_envs.tasks.experts``.
    expert: str
    #: Engines besides the default one, chosen with ``gym.make(id, backend=...)``.
    other_backends: tuple[str, ...] = ()
    #: ``module:function`` mapping predicted and true state vectors [T, S] to the errors
    #: [T] ``compare`` reports by name (e.g. ``position_cm``), baselines beside them.
    tracked: str = ""
    #: State-vector slice [start, stop) of a position whose first motion picks ``compare``'s
    #: mid-episode start (just before it moves); None: the middle of the episode.
    start_trigger: tuple[int, int] | None = None
    #: The object whose untouched motion obeys free flight and rest; None: no such object
    #: declared (models cannot enable a physics prior on the task).
    free_motion: FreeMotion | None = None
    image_size: int = 64
    #: ``module:function`` mapping state vectors [..., S] (torch) to the task camera's
    #: world-from-camera poses [..., 4, 4] (OpenCV axes, ``wm_envs.geometry``): a fixed camera
    #: ignores the state, a chase camera follows it. "" = the task declares no camera model.
    camera: str = ""
    camera_fovy: float = 45.0  # vertical field of view, degrees (square pixels)
    #: ``module:function`` mapping state vectors [..., S] (torch) to how far the success
    #: measure has got [...], 1 at the goal (Grasp: the lift over its 10 cm). An agent trained
    #: in a model may demand a margin past it (``DreamerConfig.goal_margin``). "" = none.
    goal_progress: str = ""
    #: ``module:function`` mapping predicted state vectors [B, S] (torch) and the steps the
    #: goal has been held so far [B] to the success and terminated flags [B] and the new
    #: steps held: the task's own rule, which a learned env applies to its predicted state
    #: with ``success_from="state"`` instead of its learned heads. "" = none.
    state_outcome: str = ""
    #: What the action controls, for models that encode actions by kind
    #: (``wm_envs.models.deepverse.ACTION_ENCODERS``): "arm" (dx, dy, dz, grip or strike),
    #: "vehicle" (steer, throttle, brake).
    action_spec: str = ""
    #: Per-model config defaults the trainer applies before ``--set``: what the task's
    #: camera or scale asks of a model (a chase camera leaves no static background).
    model_settings: dict[str, dict] = field(default_factory=dict)
    #: ``wm-envs play --keyboard``: pygame key name -> (action index, value while held). Held
    #: keys' values add up per index (clipped to [-1, 1]); an index with none held takes
    #: ``rest_action``'s value (e.g. open fingers). ``q``, ``r`` and Esc are the player's.
    keys: dict[str, tuple[int, float]] = field(default_factory=dict)
    rest_action: tuple[float, ...] = ()


#: Grasp's gripper and Collapse's ram: arrows move in the table plane (x right, y away from
#: the front camera), w/s up and down.
MOVE_KEYS = {
    "right": (0, 1.0),
    "left": (0, -1.0),
    "up": (1, 1.0),
    "down": (1, -1.0),
    "w": (2, 1.0),
    "s": (2, -1.0),
}

TASKS: dict[str, TaskSpec] = {
    "grasp": TaskSpec(
        "Grasp",
        "wm_envs.tasks.grasp:make_grasp_env",
        100,
        "mujoco",
        24,
        4,
        "GraspExpert",
        ("pybullet",),
        tracked="wm_envs.tasks.grasp:tracked_errors",
        start_trigger=(7, 10),  # the object
        camera="wm_envs.tasks.grasp:camera_poses",
        goal_progress="wm_envs.tasks.grasp:goal_progress",
        state_outcome="wm_envs.tasks.grasp:state_outcome",
        action_spec="arm",
        free_motion=FreeMotion((7, 10), (14, 17), "wm_envs.tasks.grasp:free_motion_phases", 0.04),
        keys=MOVE_KEYS | {"space": (3, 1.0), "g": (3, 1.0)},  # hold to close the fingers
        rest_action=(0.0, 0.0, 0.0, -1.0),  # fingers open
    ),
    "drive": TaskSpec(
        "Drive",
        "wm_envs.tasks.drive_pybullet:DrivePybulletEnv",
        300,
        "pybullet",
        34,
        3,
        "DriveExpert",
        tracked="wm_envs.tasks.drive:tracked_errors",
        camera="wm_envs.tasks.drive:camera_poses",
        state_outcome="wm_envs.tasks.drive:state_outcome",
        action_spec="vehicle",
        model_settings={
            "rssm": {"background": "none", "foreground_weight": 0.0},
            "deepverse": {"background": "warp"},
        },
        keys={
            "left": (0, 1.0),  # steering +1 is left
            "right": (0, -1.0),
            "up": (1, 1.0),  # throttle
            "down": (2, 1.0),  # brake
            "space": (2, 1.0),
        },
        rest_action=(0.0, 0.0, 0.0),
    ),
    "collapse": TaskSpec(
        "Collapse",
        "wm_envs.tasks.collapse_mujoco:CollapseMujocoEnv",
        150,
        "mujoco",
        209,
        4,
        "CollapseExpert",
        tracked="wm_envs.tasks.collapse:tracked_errors",
        state_outcome="wm_envs.tasks.collapse:state_outcome",
        start_trigger=(49, 52),  # the ground-floor slab
        action_spec="arm",
        keys=MOVE_KEYS | {"space": (3, 1.0)},  # hold to strike along +x
        rest_action=(0.0, 0.0, 0.0, -1.0),  # head retracted
    ),
}


def task_of(env_id: str) -> str:
    """The ``TASKS`` key of an env id: "Phys-Grasp-v0" or "WM-Grasp-v0" -> "grasp"."""
    name = env_id.split(":")[-1].removeprefix("Phys-").removeprefix("WM-").split("-")[0]
    key = name.lower()
    if key not in TASKS:
        raise ValueError(f"{env_id!r} names no known task; known: {sorted(TASKS)}")
    return key


def task_function(task: str, field_name: str) -> Callable:
    """The function a ``TaskSpec`` field names as ``module:function``."""
    target = getattr(TASKS[task], field_name)
    if not target:
        raise ValueError(f"task {task!r} declares no {field_name} (TaskSpec.{field_name})")
    return resolve(target)


def tracked_errors(task: str, predicted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """The task's tracked errors [T] by name, from predicted and true state vectors [T, S]."""
    return task_function(task, "tracked")(predicted, true)


def camera_poses(task: str, states):
    """The task camera's world-from-camera poses [..., 4, 4] (torch) for state vectors
    [..., S] (torch or numpy), from the task's camera definition (``TaskSpec.camera``)."""
    import torch

    return task_function(task, "camera")(torch.as_tensor(states, dtype=torch.float32))


def camera_intrinsics(task: str, size: int):
    """fx, fy, cx, cy [4] (torch) of the task camera at ``size`` x ``size`` pixels."""
    from wm_envs.geometry import intrinsics

    return intrinsics(TASKS[task].camera_fovy, size)


def phys_envs() -> list[tuple[str, dict]]:
    """Every ground-truth env as ``(id, gym.make kwargs)``: each task on its default engine,
    then on each of its other backends. Tests and benchmarks iterate over this."""
    envs = []
    for task in TASKS.values():
        env_id = f"Phys-{task.name}-v0"
        envs.append((env_id, {}))
        envs += [(env_id, {"backend": backend}) for backend in task.other_backends]
    return envs
