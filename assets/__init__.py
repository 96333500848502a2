"""Scenes (MJCF, URDF), the small shipped world-model checkpoints and the agents trained in
them, installed as ``wm_envs.assets``.

The folder sits at the repository's top level (the project card's layout); ``pyproject.toml``
maps it into the package, so wheels and editable installs both find it here.
"""

from pathlib import Path

ASSETS = Path(__file__).parent
CHECKPOINTS = ASSETS / "checkpoints"  # world models: <model>-<task>/
AGENTS = ASSETS / "agents"  # agents trained in them: <agent>-<task>/
