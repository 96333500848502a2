"""compare: paired physics-vs-learned rollouts write metrics, a plot and a video, on seeds
outside the checkpoint's training data."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from wm_envs.eval.compare import (
    CompareConfig,
    baseline_states,
    check_held_out,
    compare,
    depth_scores,
    headline,
    mid_episode_start,
    split_seeds,
    success_at_thresholds,
)
from wm_envs.eval.metrics import foreground_psnr, psnr, static_background
from wm_envs.tasks import TASKS, tracked_errors


def checkpoint_with_seed_ranges(tiny_checkpoint, folder, seed_ranges):
    """A copy of the tiny checkpoint whose card records ``seed_ranges`` (None: no key)."""
    shutil.copytree(tiny_checkpoint, folder)
    card = json.loads((folder / "card.json").read_text())
    card["dataset"].pop("seed_ranges", None)
    if seed_ranges is not None:
        card["dataset"]["seed_ranges"] = seed_ranges
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_compare_writes_metrics_plot_and_video(tiny_checkpoint, tmp_path):
    # the tiny dataset is 6 episodes collected from seed 0
    checkpoint = checkpoint_with_seed_ranges(tiny_checkpoint, tmp_path / "checkpoint", [[0, 5]])
    config = CompareConfig(
        checkpoint=str(checkpoint),
        episodes=2,
        horizon=3,
        videos=1,
        out=str(tmp_path),
        device="cpu",
        record=True,
        reanchor_every=2,
        long_steps=(5, 10_000),
        long_episodes=50,  # Grasp's 100-step episodes count as long here
    )
    report = compare(config)
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["headline"] == json.loads(json.dumps(report["headline"]))
    assert saved["seeds"] == [100_000, 100_001] and saved["seed_check"].startswith("held out")
    for start in ("first_frame", "mid_episode"):
        curves = saved["results"][start]
        assert len(curves["psnr"]) == len(curves["copy_psnr"]) == 3
        assert len(curves["fg_psnr"]) == len(curves["copy_fg_psnr"]) == 3
        assert len(curves["position_cm"]) == 3
        assert 0 <= curves["success_agrees"] <= 1
        row = saved["headline"][start]
        assert {"fg_psnr_1", "copy_fg_psnr_3", "copy_psnr_1"} <= set(row)
        # one expert (succeeds) and one random episode (fails): a constant guess gets half
        assert row["constant_success_agreement"] == 0.5
    # the long-horizon errors at step 5 (no episode reaches step 10000), open loop and
    # re-anchored every 2 steps, each beside the copy of its last real state (a rollout the
    # tiny model's learned termination ended has no error there)
    kinds = ("open_loop", "open_loop_copy", "reanchored", "reanchored_copy")
    assert (
        {"open_loop_copy_position_cm_5", "reanchored_copy_position_cm_5"}
        <= set(saved["long_horizon"])
        <= {f"{kind}_position_cm_5" for kind in kinds}
    )
    assert all(value >= 0 for value in saved["long_horizon"].values())
    assert card_headline_has_baselines(saved["headline"]["mid_episode"], "position_cm", 3)
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert (tmp_path / "compare.mp4").stat().st_size > 1000
    card = json.loads((checkpoint / "card.json").read_text())
    assert card["compare"]["headline"] == saved["headline"]
    assert card["compare"]["config"]["split"] == "test"


def card_headline_has_baselines(row: dict, key: str, horizon: int) -> bool:
    return {f"{key}_{horizon}", f"copy_{key}_{horizon}", f"velocity_{key}_{horizon}"} <= set(row)


def test_velocity_baseline_extrapolates_the_last_real_change():
    states = np.arange(12, dtype=float).reshape(6, 2)  # each step adds 2 to both entries
    baselines = baseline_states(states, start=3, steps=2)
    assert baselines["copy"].tolist() == [[6, 7], [6, 7]]
    assert baselines["velocity"].tolist() == [[8, 9], [10, 11]]
    assert baseline_states(states, start=0, steps=1)["velocity"].tolist() == [[0, 1]]


def test_every_task_declares_tracked_errors_that_vanish_on_the_truth():
    for name, task in TASKS.items():
        states = np.random.default_rng(0).normal(size=(4, task.state_dim))
        states[:, 9] = 1.0  # Collapse's initial height
        errors = tracked_errors(name, states, states)
        assert errors and all(value.shape == (4,) for value in errors.values())
        assert all(np.allclose(value, 0) for value in errors.values())
        moved = tracked_errors(name, states + 0.01, states)
        assert any((value > 0).all() for value in moved.values())


def test_foreground_psnr_scores_only_pixels_off_the_background():
    background = torch.zeros(4, 4, 3)
    target = torch.zeros(4, 4, 3, dtype=torch.uint8)
    target[0, 0] = 255  # the object, where it truly is
    misplaced = torch.zeros_like(target)
    misplaced[3, 3] = 255  # the object painted elsewhere
    # foreground: both object pixels, each wrong by 1 in every channel -> MSE 1, 0 dB;
    # full frame: 2 of 16 pixels wrong -> MSE 1/8, 9.03 dB
    assert foreground_psnr(misplaced, target, background).item() == pytest.approx(0.0, abs=1e-5)
    assert psnr(misplaced, target).item() == pytest.approx(10 * math.log10(8), abs=1e-4)
    # a dim pixel within the threshold (0.08) stays background: one object pixel, one channel
    # off by 0.2 -> MSE 0.04 / 3 over that pixel alone
    close = target.clone()
    close[0, 0, 1] = 204
    close[2, 2] = 10  # 0.04 from the background: not foreground
    expected = -10 * math.log10((51 / 255) ** 2 / 3)
    assert foreground_psnr(close, target, background).item() == pytest.approx(expected, abs=1e-3)
    # nothing off the background in either frame: no foreground to score
    empty = torch.zeros_like(target)
    assert math.isnan(foreground_psnr(empty, empty, background).item())
    batch = torch.stack([misplaced, close])  # [2, H, W, 3]
    assert foreground_psnr(batch, target.expand_as(batch), background).shape == (2,)


def test_static_background_is_the_per_pixel_median():
    frames = np.zeros((5, 2, 2, 3), np.uint8)
    frames[1, 0, 0] = 255  # something passes once
    frames[:, 1, 1] = 51  # always there
    background = static_background(frames)
    assert background[0, 0].tolist() == [0.0, 0.0, 0.0]
    assert background[1, 1].tolist() == pytest.approx([0.2] * 3)


def test_constant_success_baseline_is_the_better_constant_guess():
    curves = {
        key: [20.0, 18.0]
        for key in ("psnr", "copy_psnr", "fg_psnr", "copy_fg_psnr", "ssim", "reward_error")
    }
    curves |= {"position_cm": [1.0, 2.0]}
    curves |= {"copy_position_cm": [2.0, 3.0], "velocity_position_cm": [2.0, 3.0]}
    for true_rate, constant in ((0.25, 0.75), (0.5, 0.5), (0.9, 0.9)):
        summary = {"start": {**curves, "success_agrees": 0.6, "true_success": true_rate}}
        row = headline(summary, horizon=2)["start"]
        assert row["constant_success_agreement"] == pytest.approx(constant)
        assert row["success_agreement"] == 0.6


def test_splits_are_fixed_disjoint_seed_ranges():
    assert split_seeds("test", 20) == range(100_000, 100_020)
    assert split_seeds("val", 20) == range(90_000, 90_020)
    assert CompareConfig(split="val").seed == 90_000
    assert max(split_seeds("val", 10_000)) < min(split_seeds("test", 1))
    with pytest.raises(ValueError, match="val split holds seeds"):
        split_seeds("val", 10_001)  # would run into the test seeds
    with pytest.raises(ValueError, match="unknown split"):
        split_seeds("train", 1)


def test_seeds_in_the_training_data_are_refused_unless_allowed():
    seeds = split_seeds("test", 4)  # 100000-100003
    card = {"dataset": {"seed_ranges": [[0, 5999], [100_003, 100_010]]}}
    with pytest.raises(ValueError, match=r"overlap the training data's seed ranges \[\[100003"):
        check_held_out(card, seeds, allow=False)
    assert "compared anyway" in check_held_out(card, seeds, allow=True)
    held_out = {"dataset": {"seed_ranges": [[0, 5999], [100_004, 100_010]]}}
    assert check_held_out(held_out, seeds, allow=False).startswith("held out")
    with pytest.raises(ValueError, match="records no dataset.seed_ranges"):
        check_held_out({"dataset": {}}, seeds, allow=False)
    assert "compared anyway" in check_held_out({"dataset": {}}, seeds, allow=True)
    with pytest.raises(ValueError, match="first <= last"):
        check_held_out({"dataset": {"seed_ranges": [[10, 5]]}}, seeds, allow=False)


def test_compare_refuses_a_card_without_seed_ranges(tiny_checkpoint, tmp_path):
    checkpoint = checkpoint_with_seed_ranges(tiny_checkpoint, tmp_path / "checkpoint", None)
    config = CompareConfig(checkpoint=str(checkpoint), episodes=1, out=str(tmp_path))
    with pytest.raises(ValueError, match="--allow-train-seeds"):
        compare(config)


def test_record_is_refused_on_the_validation_split(tiny_checkpoint, tmp_path):
    checkpoint = checkpoint_with_seed_ranges(tiny_checkpoint, tmp_path / "checkpoint", [[0, 5]])
    config = CompareConfig(checkpoint=str(checkpoint), split="val", record=True, out=str(tmp_path))
    with pytest.raises(ValueError, match="test split"):
        compare(config)


def test_model_settings_reach_the_learned_env_and_are_never_recorded(tiny_checkpoint, tmp_path):
    checkpoint = str(
        checkpoint_with_seed_ranges(tiny_checkpoint, tmp_path / "checkpoint", [[0, 5]])
    )
    settings = "done_threshold=0.2"
    recorded = CompareConfig(checkpoint=checkpoint, record=True, model_settings=settings)
    with pytest.raises(ValueError, match="without --record"):
        compare(recorded)
    config = CompareConfig(checkpoint=checkpoint, episodes=1, model_settings=settings)
    with pytest.raises(ValueError, match=r"\['done_threshold'\]: a rssm model has none"):
        compare(config)  # the RSSM declares no inference settings
    with pytest.raises(ValueError, match="--model-settings expects key=value"):
        compare(CompareConfig(checkpoint=checkpoint, episodes=1, model_settings="done"))


def test_success_at_each_threshold_is_read_up_to_where_a_rollout_at_it_ends():
    prediction = {
        "success_probability": np.array([0.1, 0.3, 0.15, 0.6]),
        "terminated_probability": np.array([0.0, 0.25, 0.0, 0.7]),
    }
    swept = success_at_thresholds(prediction, (0.5, 0.28, 0.2, 0.12))
    # 0.5: success at the last step; 0.28: success at step 1 (not yet terminated); 0.2:
    # terminated at step 1 with success 0.3 there; 0.12: terminated at step 1 after success
    assert swept == {0.5: True, 0.28: True, 0.2: True, 0.12: True}
    ended = {**prediction, "terminated_probability": np.array([0.0, 0.65, 0.0, 0.0])}
    assert success_at_thresholds(ended, (0.5, 0.35)) == {0.5: False, 0.35: False}
    assert success_at_thresholds(ended, (0.25,)) == {0.25: True}


def test_a_threshold_sweep_is_refused_where_the_threshold_is_not_the_heads(
    tiny_checkpoint, tmp_path
):
    checkpoint = str(
        checkpoint_with_seed_ranges(tiny_checkpoint, tmp_path / "checkpoint", [[0, 5]])
    )
    sweep = {"checkpoint": checkpoint, "episodes": 1, "done_thresholds": (0.5, 0.2)}
    for conflict in (
        {"record": True},
        {"success_from": "state"},
        {"model_settings": "done_threshold=0.3"},
    ):
        with pytest.raises(ValueError, match="--done-thresholds"):
            compare(CompareConfig(**sweep, **conflict))
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        compare(CompareConfig(**{**sweep, "done_thresholds": (0.5, 1.5)}))
    with pytest.raises(ValueError, match="a rssm model has none"):
        compare(CompareConfig(**sweep))  # the RSSM declares no done_threshold setting


def test_mid_episode_start_is_just_before_the_object_moves():
    states = np.zeros((30, 24))
    states[12:, 7] = 0.02  # the object starts moving at step 12
    assert mid_episode_start(states, slice(7, 10), horizon=15) == 11
    assert mid_episode_start(np.zeros((30, 24)), slice(7, 10), horizon=15) == 14
    assert mid_episode_start(np.zeros((10, 24)), slice(7, 10), horizon=15) == 0
    assert mid_episode_start(states, None, horizon=15) == 14  # no trigger: the middle


def test_unknown_task_is_refused(tmp_path):
    with pytest.raises(KeyError):
        compare(CompareConfig(task="juggle", out=str(tmp_path)))


def test_rollouts_succeed_where_the_rule_says_and_run_to_the_episode_end(
    tiny_checkpoint, lift_predictions
):
    """With ``success_from="state"`` a rollout succeeds and terminates on the task rule
    (Grasp: five steps held), not on the learned heads; it is stepped on to the physics
    episode's end, so that it is scored on the same steps as the baselines."""
    from wm_envs.eval.compare import held_out_episodes, rollout_learned
    from wm_envs.learned_env import LearnedSimulator

    simulator = LearnedSimulator(
        "grasp", checkpoint=str(tiny_checkpoint), device="cpu", success_from="state"
    )
    lift_predictions(simulator.model)
    episode = held_out_episodes("grasp", 90_000, 1, 0.3)
    (prediction,) = rollout_learned(simulator, episode, [0], context=1)
    assert prediction["success"] and np.flatnonzero(prediction["terminated"])[0] == 4
    assert len(prediction["state"]) == len(episode[0]["action"]) > 5


def test_a_depth_model_without_a_pose_is_scored_with_the_camera_at_its_own_state():
    """Without ``camera_pose``, depth_scores unprojects the model's depth with the task camera
    at the model's predicted state: exact depth at the true state scores zero; the same depth
    from a state 0.5 m off scores that camera error and a point-cloud error."""
    import gymnasium as gym

    with gym.make("Phys-Drive-v0", obs_mode="rgbd") as env:
        obs, _ = env.reset(seed=0)
        frames = [obs] + [env.step(np.array([0.0, 1.0, 0.0], np.float32))[0] for _ in range(3)]
    episode = {key: np.stack([f[key] for f in frames]) for key in ("depth", "state")}
    exact = {key: episode[key][1:] for key in ("depth", "state")}
    scores = depth_scores("drive", exact, episode, 0, 3)
    assert np.allclose(scores["chamfer_cm"], 0, atol=1e-4)
    assert np.allclose(scores["camera_translation_cm"], 0)
    moved = exact | {"state": exact["state"].copy()}
    moved["state"][:, 0] += 0.5  # the car's x, 0.5 m ahead of where it is
    scores = depth_scores("drive", moved, episode, 0, 3)
    assert np.allclose(scores["camera_translation_cm"], 50, atol=1e-3)
    assert (scores["chamfer_cm"] > 1).all()
