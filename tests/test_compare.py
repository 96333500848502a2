"""compare: paired physics-vs-learned rollouts write metrics, a plot and a video."""

import json
import shutil

import numpy as np
import pytest

from wm_envs.eval.compare import CompareConfig, compare, mid_episode_start


def test_compare_writes_metrics_plot_and_video(tiny_checkpoint, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    config = CompareConfig(
        checkpoint=str(checkpoint),
        episodes=2,
        horizon=3,
        videos=1,
        out=str(tmp_path),
        device="cpu",
        record=True,
    )
    report = compare(config)
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["headline"] == json.loads(json.dumps(report["headline"]))
    for start in ("first_frame", "mid_episode"):
        curves = saved["results"][start]
        assert len(curves["psnr"]) == len(curves["copy_psnr"]) == 3
        assert len(curves["position_cm"]) == 3
        assert 0 <= curves["success_agrees"] <= 1
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert (tmp_path / "compare.mp4").stat().st_size > 1000
    card = json.loads((checkpoint / "card.json").read_text())
    assert card["compare"]["headline"] == saved["headline"]


def test_mid_episode_start_is_just_before_the_object_moves():
    states = np.zeros((30, 24))
    states[12:, 7] = 0.02  # the object starts moving at step 12
    assert mid_episode_start(states, slice(7, 10), horizon=15) == 11
    assert mid_episode_start(np.zeros((30, 24)), slice(7, 10), horizon=15) == 14
    assert mid_episode_start(np.zeros((10, 24)), slice(7, 10), horizon=15) == 0


def test_unknown_task_is_refused(tmp_path):
    with pytest.raises(KeyError):
        compare(CompareConfig(task="juggle", out=str(tmp_path)))
