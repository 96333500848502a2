"""Genie: FSQ video tokenizer, latent action model and MaskGIT dynamics (see ``model``)."""

from wm_envs.models.genie.controllability import controllability
from wm_envs.models.genie.model import PRESETS, Genie, GenieConfig

__all__ = ["PRESETS", "Genie", "GenieConfig", "controllability"]
