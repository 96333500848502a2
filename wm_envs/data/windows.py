"""Training batches: fixed-length windows of collected episodes, split by episode.

Every time index carries the observation at t, the action that led into it (zeros on the
first step), the reward received on arriving there, ``terminated``, ``success`` and
``is_first`` -- DreamerV3's replay layout. As in DreamerV3, the episodes of a split are laid
end to end and a window may run across an episode boundary: ``is_first`` tells the model to
start afresh there, so short episodes (a quick expert grasp) are not thrown away.
Images stay uint8 until a batch is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch

from wm_envs.data.minari_io import open_dataset


class WindowDataset(torch.utils.data.Dataset):
    """Windows of ``length`` steps from one split of a collected dataset, held in memory.

    ``split`` is "train" or "val"; episodes go to validation by a permutation drawn from
    ``split_seed``, so the split is the same on every machine and every run.
    ``within_episodes`` keeps only windows inside one episode (for open-loop evaluation).
    """

    def __init__(
        self,
        root: str | Path,
        dataset_id: str,
        length: int,
        split: str = "train",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        within_episodes: bool = False,
    ) -> None:
        datasets = open_datasets(root, dataset_id)
        self.dataset_id, self.length = dataset_id, length
        self.env_spec = datasets[0].spec.env_spec
        # every episode as (dataset, index); the split permutes them all together
        episodes = [
            (d, i) for d, dataset in enumerate(datasets) for i in range(dataset.total_episodes)
        ]
        chosen = split_episodes(len(episodes), split, val_fraction, split_seed)
        self.episode_ids = chosen
        columns: dict[str, list[np.ndarray]] = {}
        for d, dataset in enumerate(datasets):
            picked = [episodes[j][1] for j in chosen if episodes[j][0] == d]
            for episode in dataset.iterate_episodes(picked):
                for key, value in _replay_layout(episode).items():
                    columns.setdefault(key, []).append(value)
        self.data = {key: np.concatenate(parts) for key, parts in columns.items()}
        total = len(self.data["reward"])
        if total < length:
            raise ValueError(
                f"window length {length} is longer than the {split} split of "
                f"{dataset_id!r} ({total} steps in {len(chosen)} episodes)"
            )
        self.starts = np.arange(total - length + 1)
        if within_episodes:
            first = np.flatnonzero(self.data["is_first"])
            ends = np.append(first[1:], total)  # one past each episode's last step
            self.starts = np.concatenate(
                [np.arange(a, b - length + 1) for a, b in zip(first, ends, strict=True)]
            )
            if len(self.starts) == 0:
                longest = int((ends - first).max())
                raise ValueError(
                    f"window length {length} is longer than every episode of "
                    f"{dataset_id!r} ({split} split; longest: {longest} steps)"
                )

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


def split_episodes(
    count: int, split: str, val_fraction: float = 0.1, split_seed: int = 0
) -> np.ndarray:
    """Sorted indices of the episodes of ``split`` ("train" or "val") among ``count``
    episodes: the same permutation on every machine and every run."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    order = np.random.default_rng(split_seed).permutation(count)
    n_val = max(1, round(val_fraction * count)) if count > 1 else 0
    return np.sort(order[:n_val] if split == "val" else order[n_val:])


def open_datasets(root: str | Path, dataset_id: str) -> list:
    """The datasets ``dataset_id`` names: one id, or several joined by "+" (e.g. the
    original data plus an agent's episodes), which must come from the same env."""
    datasets = [open_dataset(root, part) for part in dataset_id.split("+")]
    specs = {
        (d.spec.env_spec.id, json.dumps(d.spec.env_spec.kwargs, sort_keys=True)) for d in datasets
    }
    if len(specs) > 1:
        raise ValueError(
            f"the datasets of {dataset_id!r} come from different envs: {sorted(specs)}"
        )
    return datasets


def read_state_episodes(root: str | Path, dataset_id: str) -> list[dict[str, np.ndarray]]:
    """Every episode of ``dataset_id`` (in the order ``split_episodes`` indexes them) as
    ``state`` [T+1, S], ``action`` [T, A], ``first_image`` [H, W, 3] and ``seed``, read from
    the Minari HDF5 file without the other frames, which ``iterate_episodes`` would load
    whole: what a state-only fit needs of thousands of episodes."""
    episodes = []
    for dataset in open_datasets(root, dataset_id):
        with h5py.File(Path(dataset.storage.data_path) / "main_data.hdf5", "r") as file:
            for index in dataset.episode_indices:
                group = file[f"episode_{index}"]
                if "seed" not in group.attrs:
                    raise ValueError(
                        f"dataset {dataset_id!r} episode {index} has no reset seed; collect it "
                        f"again with `wm-envs collect`"
                    )
                episodes.append(
                    {
                        "state": group["observations/state"][()].astype(np.float32),
                        "action": group["actions"][()].astype(np.float32),
                        "first_image": group["observations/image"][0],
                        "seed": int(group.attrs["seed"]),
                    }
                )
    return episodes


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
    rows = {
        "image": observations["image"],
        "state": observations["state"].astype(np.float32),
        "action": action,
        "reward": reward,
        "terminated": terminated,
        "is_first": is_first,
        "success": episode.infos["is_success"].astype(bool),
    }
    if "depth" in observations:
        rows["depth"] = observations["depth"].astype(np.float32)
    return rows
