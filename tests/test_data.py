"""Collection into Minari, resume after kill -9, the window loader and its errors."""

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import minari
import numpy as np
import pytest

from wm_envs.data import CollectConfig, collect, open_dataset
from wm_envs.data.collect import load_staged, run_episode
from wm_envs.data.windows import WindowDataset


def test_dataset_is_plain_minari_with_episode_metadata(tiny_dataset, monkeypatch):
    root, dataset_id = tiny_dataset
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    dataset = minari.load_dataset(dataset_id)
    assert dataset.total_episodes == 6
    episode = dataset[0]
    steps = len(episode.actions)
    assert episode.observations["image"].shape == (steps + 1, 64, 64, 3)
    assert episode.observations["state"].shape == (steps + 1, 24)
    assert episode.infos["is_success"].shape == (steps + 1,)
    metadata = list(dataset.storage.get_episode_metadata(range(6)))
    assert [m["seed"] for m in metadata] == list(range(6))
    assert {m["policy"]["kind"] for m in metadata} <= {"expert", "failed", "random"}
    assert metadata[0]["physics"]["shape"] in ("box", "cylinder", "sphere")
    assert (root / dataset_id / "previews" / "episode-0000000.mp4").stat().st_size > 0


def test_collect_refuses_a_folder_holding_another_collection(tiny_dataset):
    root, dataset_id = tiny_dataset
    with pytest.raises(ValueError, match="already holds"):
        collect(CollectConfig(episodes=7), root, dataset_id)


def test_bad_collect_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown env id"):
        CollectConfig(env_id="Phys-Nothing-v0")
    with pytest.raises(ValueError, match="policy"):
        CollectConfig(policy="greedy")
    with pytest.raises(ValueError, match="not Grasp"):
        CollectConfig(env_id="Phys-Drive-v0", policy="flawed")


def test_flawed_episodes_record_the_flaws_they_were_driven_by():
    config = CollectConfig(episodes=1, policy="flawed", obs_mode="dict")
    with gym.make(config.env_id, obs_mode="dict") as env:
        episode = run_episode(env, config, 0)
    description = episode["metadata"]["policy"]
    assert description["kind"] == "flawed" and -0.01 <= description["grasp_height"] <= 0.04


def test_missing_and_corrupt_data_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset 'grasp/none-v0'"):
        open_dataset(tmp_path, "grasp/none-v0")
    broken = tmp_path / "episode-0000001.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt"):
        load_staged(broken)


def test_resume_after_kill_loses_nothing_and_duplicates_nothing(tmp_path):
    command = [
        sys.executable,
        "-m",
        "wm_envs.cli",
        "collect",
        "--episodes",
        "12",
        "--out",
        str(tmp_path),
        "--dataset-id",
        "grasp/resume-v0",
        "--policy",
        "random",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    staging = tmp_path / ".staging" / "grasp" / "resume-v0"
    deadline = time.time() + 120
    while len(list(staging.glob("episode-*.npz"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    staged = sorted(staging.glob("episode-*.npz"))
    assert 3 <= len(staged) < 12, "the kill should land mid-collection"
    for path in staged:
        load_staged(path)  # every staged file is whole
    subprocess.run(command, check=True, capture_output=True)
    dataset = open_dataset(tmp_path, "grasp/resume-v0")
    seeds = [m["seed"] for m in dataset.storage.get_episode_metadata(range(12))]
    assert dataset.total_episodes == 12 and sorted(seeds) == list(range(12))
    assert not (tmp_path / ".staging").exists()
    config = json.loads((tmp_path / "grasp" / "resume-v0" / "collect.json").read_text())
    assert config["episodes"] == 12


def test_windows_follow_the_replay_layout_and_split_by_episode(tiny_dataset):
    root, dataset_id = tiny_dataset
    train = WindowDataset(root, dataset_id, 8, "train", val_fraction=0.34)
    val = WindowDataset(root, dataset_id, 8, "val", val_fraction=0.34)
    assert set(train.episode_ids).isdisjoint(val.episode_ids)
    assert len(train.episode_ids) + len(val.episode_ids) == 6
    again = WindowDataset(root, dataset_id, 8, "val", val_fraction=0.34)
    np.testing.assert_array_equal(val.episode_ids, again.episode_ids)
    batch = train.sample(3, np.random.default_rng(0))
    assert batch["image"].dtype.is_floating_point is False
    assert batch["image"].shape == (3, 8, 64, 64, 3)
    assert batch["action"].shape == (3, 8, 4) and batch["state"].shape == (3, 8, 24)
    data = train.data
    first = np.flatnonzero(data["is_first"])
    assert first[0] == 0
    assert np.all(data["action"][first] == 0) and np.all(data["reward"][first] == 0)
    item = train[0]
    assert item["image"].shape == (8, 64, 64, 3)


def test_window_longer_than_every_episode_is_refused(tiny_dataset):
    root, dataset_id = tiny_dataset
    with pytest.raises(ValueError, match="longer than every episode"):
        WindowDataset(root, dataset_id, 150, within_episodes=True)
    with pytest.raises(ValueError, match="longer than the train split"):
        WindowDataset(root, dataset_id, 10_000)


def test_ray_backend_collects_the_same_dataset(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'wm-envs[ray]')")
    config = CollectConfig(episodes=3, policy="expert", noise=0.0)
    collect(config, tmp_path / "local", "grasp/r-v0", workers=1)
    collect(config, tmp_path / "ray", "grasp/r-v0", workers=2, backend="ray")
    local, remote = (open_dataset(tmp_path / kind, "grasp/r-v0") for kind in ("local", "ray"))
    for a, b in zip(local.iterate_episodes(), remote.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.observations["image"], b.observations["image"])
    ray.shutdown()
