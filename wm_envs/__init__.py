"""wm-envs: learned world models as Gymnasium environments, measured against physics.

Importing the package registers every env id (``Phys-<Task>-v0`` and ``WM-<Task>-v0``), so
``gym.make("wm_envs:Phys-Grasp-v0")`` works without a separate import.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless the user chose otherwise
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from gymnasium.envs.registration import register, registry  # noqa: E402

from wm_envs.tasks import TASKS  # noqa: E402
from wm_envs.tasks.experts import make_expert  # noqa: E402

__all__ = ["TASKS", "make_expert"]
__version__ = "0.1.0"

for _key, _task in TASKS.items():
    if f"Phys-{_task.name}-v0" not in registry:
        register(
            id=f"Phys-{_task.name}-v0",
            entry_point=_task.entry_point,
            max_episode_steps=_task.max_episode_steps,
        )
    if f"WM-{_task.name}-v0" not in registry:
        register(
            id=f"WM-{_task.name}-v0",
            entry_point="wm_envs.learned_env:WorldModelEnv",
            vector_entry_point="wm_envs.learned_env:WorldModelVectorEnv",
            max_episode_steps=_task.max_episode_steps,
            kwargs={"task": _key},
        )
