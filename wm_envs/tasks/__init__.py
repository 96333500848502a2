"""Ground-truth tasks. ``TASKS`` is the registry: one entry per task."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """What registration needs to know about a task."""

    name: str  # "Grasp" -> Phys-Grasp-v0 and WM-Grasp-v0
    entry_point: str
    max_episode_steps: int


TASKS: dict[str, TaskSpec] = {
    "grasp": TaskSpec("Grasp", "wm_envs.tasks.grasp:make_grasp_env", 100),
}
