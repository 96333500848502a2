"""Training batches: fixed-length windows of collected episodes, split by episode.

Every time index carries the observation at t, the action that led into it (zeros on the
first step), the reward received on arriving there, ``terminated`` and ``is_first`` --
DreamerV3's replay layout, which lets a model consume windows without special cases.
Images stay uint8 until a batch is built.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wm_envs.data.minari_io import open_dataset


class WindowDataset(torch.utils.data.Dataset):
    """Windows of ``length`` steps from one split of a collected dataset, held in memory.

    ``split`` is "train" or "val"; episodes go to validation by a permutation drawn from
    ``split_seed``, so the split is the same on every machine and every run.
    """

    def __init__(self, root: str | Path, dataset_id: str, length: int, split: str = "train",
                 val_fraction: float = 0.1, split_seed: int = 0) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        dataset = open_dataset(root, dataset_id)
        self.dataset_id, self.length = dataset_id, length
        self.env_spec = dataset.spec.env_spec
        order = np.random.default_rng(split_seed).permutation(dataset.total_episodes)
        n_val = max(1, round(val_fraction * len(order))) if len(order) > 1 else 0
        chosen = np.sort(order[:n_val] if split == "val" else order[n_val:])
        self.episode_ids = chosen
        columns: dict[str, list[np.ndarray]] = {}
        starts, offset, longest = [], 0, 0
        for episode in dataset.iterate_episodes(chosen):
            steps = _replay_layout(episode)
            size = len(steps["reward"])
            longest = max(longest, size)
            starts.extend(range(offset, offset + size - length + 1))
            for key, value in steps.items():
                columns.setdefault(key, []).append(value)
            offset += size
        if not starts:
            raise ValueError(f"window length {length} is longer than every episode of "
                             f"{dataset_id!r} ({split} split; longest has {longest} steps)")
        self.data = {key: np.concatenate(parts) for key, parts in columns.items()}
        self.starts = np.asarray(starts)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rows = slice(self.starts[index], self.starts[index] + self.length)
        return {key: torch.from_numpy(value[rows]) for key, value in self.data.items()}

    def sample(self, batch_size: int, generator: np.random.Generator) -> dict[str, torch.Tensor]:
        """A random batch, gathered in one indexing operation: values [B, T, ...]."""
        picks = self.starts[generator.integers(len(self.starts), size=batch_size)]
        rows = picks[:, None] + np.arange(self.length)  # [B, T]
        return {key: torch.from_numpy(value[rows]) for key, value in self.data.items()}


def _replay_layout(episode) -> dict[str, np.ndarray]:
    """Minari's (obs T+1, action T) episode as T+1 aligned rows."""
    observations = episode.observations
    size = len(episode.rewards) + 1
    action = np.zeros((size, *episode.actions.shape[1:]), np.float32)
    action[1:] = episode.actions
    reward = np.zeros(size, np.float32)
    reward[1:] = episode.rewards
    terminated = np.zeros(size, bool)
    terminated[1:] = episode.terminations
    is_first = np.zeros(size, bool)
    is_first[0] = True
    rows = {"image": observations["image"], "state": observations["state"].astype(np.float32),
            "action": action, "reward": reward, "terminated": terminated, "is_first": is_first}
    if "depth" in observations:
        rows["depth"] = observations["depth"].astype(np.float32)
    return rows
