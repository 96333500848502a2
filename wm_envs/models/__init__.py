"""Learned simulators. ``MODELS`` maps a ``--model`` name to its class."""

from __future__ import annotations

from dataclasses import fields

from wm_envs.models.base import ModelSpec, WorldModel
from wm_envs.models.deepverse import PRESETS as DEEPVERSE_PRESETS
from wm_envs.models.deepverse import DeepVerse
from wm_envs.models.genie import PRESETS as GENIE_PRESETS
from wm_envs.models.genie import Genie
from wm_envs.models.jepa import JEPA
from wm_envs.models.jepa import PRESETS as JEPA_PRESETS
from wm_envs.models.rssm import PRESETS as RSSM_PRESETS
from wm_envs.models.rssm import RSSM
from wm_envs.models.symbolic import PRESETS as SYMBOLIC_PRESETS
from wm_envs.models.symbolic import SymbolicModel

MODELS: dict[str, type[WorldModel]] = {
    "rssm": RSSM,
    "genie": Genie,
    "deepverse": DeepVerse,
    "jepa": JEPA,
    "symbolic": SymbolicModel,
}
PRESETS: dict[str, dict[str, dict]] = {
    "rssm": RSSM_PRESETS,
    "genie": GENIE_PRESETS,
    "deepverse": DEEPVERSE_PRESETS,
    "jepa": JEPA_PRESETS,
    "symbolic": SYMBOLIC_PRESETS,
}


def build_model(
    name: str,
    spec: ModelSpec,
    preset: str = "small",
    overrides: dict | None = None,
    task: str = "",
) -> WorldModel:
    """A fresh model: the preset's hyper-parameters, then ``overrides`` on top. ``task`` (the
    data's ``TASKS`` key) fills a config's ``task`` field, for models that read the task's
    declarations (the RSSM's physics prior)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    if preset not in PRESETS[name]:
        raise ValueError(f"unknown preset {preset!r} for {name}; known: {sorted(PRESETS[name])}")
    model_class = MODELS[name]
    known = {f.name for f in fields(model_class.config_class)}
    values = {**PRESETS[name][preset], **(overrides or {})}
    if task and "task" in known:
        values.setdefault("task", task)
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {name} config fields {sorted(unknown)}; known: {sorted(known)}")
    return model_class(spec, model_class.config_class(**values))


__all__ = ["MODELS", "ModelSpec", "WorldModel", "build_model"]
