"""Datasets: collection from physics into Minari, and windows for training."""

from wm_envs.data.collect import CollectConfig, collect
from wm_envs.data.minari_io import open_dataset

__all__ = ["CollectConfig", "collect", "open_dataset"]
