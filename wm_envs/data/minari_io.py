"""The dataset format: Minari (HDF5), readable by plain ``minari.load_dataset``.

Per episode the Minari file keeps observations, actions, rewards, terminations, truncations
and ``infos["is_success"]``; the episode's seed is the Minari seed, and its metadata (the
policy that acted, the realised physics) is stored as episode metadata
(``dataset.storage.get_episode_metadata``).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector.episode_buffer import EpisodeBuffer

from wm_envs.data.collect import CollectConfig, load_staged


def dataset_path(root: str | Path, dataset_id: str) -> Path:
    return Path(root) / dataset_id


@contextmanager
def minari_root(root: Path):
    """Point Minari's datasets root at ``root`` for the duration of the block."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def build_minari_dataset(
    config: CollectConfig, root: Path, dataset_id: str, staged: list[Path]
) -> Path:
    """Write the staged episodes as a Minari dataset, built aside and renamed into place."""
    scratch = Path(root) / ".building"
    shutil.rmtree(scratch, ignore_errors=True)
    env = gym.make(config.env_id, obs_mode=config.obs_mode)
    buffers, metadatas = [], []
    for episode_id, path in enumerate(staged):
        episode = load_staged(path)
        metadatas.append(_flatten(episode["metadata"]))
        buffers.append(
            EpisodeBuffer(
                id=episode_id,
                seed=episode["metadata"]["seed"],
                observations=episode["observations"],
                actions=episode["actions"],
                rewards=episode["rewards"],
                terminations=episode["terminations"],
                truncations=episode["truncations"],
                infos={"is_success": episode["is_success"]},
            )
        )
    with minari_root(scratch), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(author|permalink|eval_env).*")
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env,
            algorithm_name=f"wm-envs collect ({config.policy})",
            description=json.dumps(asdict(config)),
            data_format="hdf5",
            jpeg_encoding=False,
            requirements=["wm-envs"],
            author="wm-envs",
        )
        dataset.storage.update_episode_metadata(metadatas, range(len(metadatas)))
    env.close()
    write_path = scratch / dataset_id / "collect.json"
    write_path.write_text(json.dumps(asdict(config), indent=2) + "\n")
    final = dataset_path(root, dataset_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    namespace_file = scratch / final.parent.relative_to(root) / "namespace_metadata.json"
    if namespace_file.exists() and not (final.parent / namespace_file.name).exists():
        shutil.copy(namespace_file, final.parent / namespace_file.name)
    os.replace(scratch / dataset_id, final)
    shutil.rmtree(scratch)
    return final


def _flatten(metadata: dict, prefix: str = "") -> dict:
    """HDF5 attributes are flat: {"policy": {"kind": ...}} -> {"policy/kind": ...}."""
    flat = {}
    for key, value in metadata.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        elif value is None:
            flat[name] = "none"
        else:
            flat[name] = np.asarray(value) if isinstance(value, list) else value
    return flat


def open_dataset(root: str | Path, dataset_id: str) -> minari.MinariDataset:
    """Open a collected dataset; a missing or corrupt one raises an error that names it."""
    path = dataset_path(root, dataset_id)
    if not (path / "data" / "metadata.json").exists():
        staged = root and (Path(root) / ".staging" / dataset_id).exists()
        hint = " (collection unfinished: re-run `wm-envs collect` to resume)" if staged else ""
        raise FileNotFoundError(f"no dataset {dataset_id!r} under {root}{hint}")
    try:
        return minari.MinariDataset(path / "data")
    except Exception as error:
        raise ValueError(f"dataset {dataset_id!r} at {path} is corrupt: {error}") from error
