"""Benchmarks in their quick modes (they run anywhere and write their tables), and the parts of
others."""

import json
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from benchmarks import collapse_hidden, conservation, gpu, soak
from wm_envs.eval.compare import play_physics
from wm_envs.tasks import phys_envs


def rows(folder, name):
    assert (folder / f"{name}.md").exists()
    return json.loads((folder / f"{name}.json").read_text())["rows"]


def test_soak_steps_every_env_under_extreme_actions_and_finds_no_fault(tmp_path):
    soak.main(["--quick", "--out", str(tmp_path)])  # exits with an error if a check fails
    table = rows(tmp_path, "soak")
    assert len(table) == len(soak.LEARNED_QUICK) + len(phys_envs())
    for row in table:
        assert row["env steps"] > 0 and row["steps/s"] > 0
        assert row["non-finite"] == 0 and row["clips"] and row["flat"]
        assert row["peak end MiB"] >= row["peak start MiB"] > 0


def test_gpu_quick_measures_every_part_on_the_cpu(tmp_path):
    gpu.main(["--quick", "--device", "cpu", "--budget", "120", "--out", str(tmp_path)])
    table = rows(tmp_path, "gpu")
    measured = {(row["measure"], row["model"], row["size"], row["bf16"]): row for row in table}
    for mode in ("latent", "dict"):
        for model in gpu.MODELS:
            assert measured[f"WM-Grasp-v0 step, {mode}", model, "N=1", "off"]["per s"] > 0
    tiny = [row for row in table if row["size"].startswith("tiny")]
    trained = {(row["measure"], row["model"]): row for row in tiny}
    assert trained["train update", "rssm"]["per s"] > 0
    assert trained["train update, dynamics stage", "genie"]["per s"] > 0
    compiled = [row for row in table if row["measure"].startswith("model.step")]
    assert len(compiled) == 4 and all(row["note"] == "skipped: --quick" for row in compiled)


def test_gpu_writes_its_table_when_the_budget_is_spent(tmp_path):
    gpu.main(["--quick", "--device", "cpu", "--budget", "0", "--out", str(tmp_path)])
    table = rows(tmp_path, "gpu")
    assert len(table) == 20  # every row, none measured, each saying why
    assert all(row["per s"] is None and row["note"].startswith("skipped") for row in table)


def test_gpu_stops_a_row_that_runs_past_the_time_left(tmp_path):
    run = gpu.Run(gpu.QUICK, budget=1.0, seconds=0.1, device=torch.device("cpu"), out=tmp_path)
    start = time.perf_counter()
    seconds = run.attempt("env", {"measure": "sleep"}, "calls/s", 1, None, lambda: time.sleep(30))
    assert seconds is None and time.perf_counter() - start < 5
    assert rows(tmp_path, "gpu")[0]["note"].startswith("stopped: the 0 s left ran out")


def test_conservation_table_sets_runs_side_by_side_and_refuses_other_seeds(tmp_path):
    def write(label: str, weight: float, first_seed: int) -> str:
        curves = {
            key: [weight + step for step in range(15)]
            for key in ("position_cm", "copy_position_cm", "psnr", "copy_psnr")
        }
        curves |= {"success_agrees": 0.9, "true_success": 0.25}
        for split in conservation.SPLITS:
            report = {
                "seeds": [first_seed, first_seed + 19],
                "checkpoint": {"recipe": {"model_overrides": {"conservation_weight": weight}}},
                "results": dict.fromkeys(conservation.STARTS, curves),
            }
            (tmp_path / label / split).mkdir(parents=True)
            (tmp_path / label / split / "compare.json").write_text(json.dumps(report))
        return f"{label}:{tmp_path / label}"

    runs = [write("off", 0.0, 90000), write("on", 20.0, 90000)]
    rows = conservation.table(conservation.read_runs(runs))
    assert rows[0]["off"] == 0.0 and rows[0]["on"] == 20.0
    at_5 = next(r for r in rows if r["metric"] == "object position cm @5")
    assert (at_5["off"], at_5["on"], at_5["copy"]) == (4.0, 24.0, 4.0)
    success = next(r for r in rows if r["metric"] == "success agreement")
    assert success["copy"] == 0.75
    with pytest.raises(ValueError, match="different val seeds"):
        conservation.read_runs([*runs, write("other", 0.0, 95000)])


def test_goal_reaching_scores_the_planner_beside_standing_still_and_the_controller(
    tiny_checkpoint, tmp_path
):
    from benchmarks import goal_reaching

    argv = ["--models", "rssm", "--checkpoint", f"rssm={tiny_checkpoint}", "--episodes", "1"]
    argv += ["--samples", "32", "--horizon", "2", "--steps", "5", "--out", str(tmp_path)]
    goal_reaching.main(argv)
    table = {row["policy"]: row for row in rows(tmp_path, "goal_reaching")}
    assert set(table) == {"planner in rssm", "still", "random", "controller"}
    assert table["controller"]["success_rate"] == 1.0  # the goal frames' maker reaches them
    assert table["still"]["success_rate"] == 0.0  # goals lie 4+ cm from the start
    assert table["still"]["final_distance_cm_mean"] >= 100 * goal_reaching.MIN_TRAVEL


def test_collapse_hidden_replays_an_episode_and_bounds_the_agreement():
    episode = play_physics("collapse", 3, "expert", 0.0, obs_mode="dict")
    with gym.make("Phys-Collapse-v0", obs_mode="state") as env:
        success = bool(episode["success"].any())
        assert collapse_hidden.replay(env, 3, episode["action"], 0, None) == success
        assert collapse_hidden.replay(env, 3, episode["action"], 10, None) == success
    outcomes = np.array([True, True, False, False])
    draws = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]], bool)
    row = collapse_hidden.summary("first_frame", "all", outcomes, draws, outcomes)
    assert row["constant_agreement"] == 0.5 and row["decided"] == 0.5
    assert row["best_agreement"] == pytest.approx((1 + 0.75 + 1 + 0.75) / 4)
    assert row["replay_reproduces"] == 1.0
