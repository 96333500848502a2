"""The main job on a couple of seeds, with the checkpoints that ship with the package."""

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from wm_envs.checkpoint import shipped_agents, shipped_models
from wm_envs.demo import demo
from wm_envs.eval.compare import compared_obs_mode
from wm_envs.tasks import TASKS

SHIPPED_PAIRS = [(task, model) for task in TASKS for model in shipped_models(task)]


def test_every_task_ships_an_rssm_and_grasp_a_genie_and_symbolic_dynamics_too():
    assert all("rssm" in shipped_models(task) for task in TASKS)
    assert {"rssm", "genie", "symbolic"} <= set(shipped_models("grasp"))


@pytest.mark.parametrize("task,model", SHIPPED_PAIRS)
def test_shipped_checkpoint_steps_out_of_the_box(task, model):
    obs_mode = compared_obs_mode(model)  # "state" for a model with no image decoder
    with gym.make(f"WM-{TASKS[task].name}-v0", model=model, obs_mode=obs_mode, device="cpu") as env:
        obs, _ = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward) and isinstance(info["is_success"], bool)


@pytest.mark.parametrize("task", ["drive", "collapse"])
def test_shipped_twins_pass_check_env(task):
    for obs_mode in ("dict", "latent"):
        with gym.make(f"WM-{TASKS[task].name}-v0", obs_mode=obs_mode, device="cpu") as env:
            check_env(env.unwrapped, skip_render_check=False)


def test_demo_writes_the_physics_video_and_one_comparison_per_shipped_model(tmp_path):
    result = demo("Phys-Grasp-v0", episodes=2, out=str(tmp_path), compare_episodes=2)
    assert result["physics"]["expert"]["episodes"] == 2
    assert (tmp_path / "Phys-Grasp-v0-expert.mp4").stat().st_size > 1000
    for model in shipped_models("grasp"):
        report = json.loads((tmp_path / model / "compare.json").read_text())
        assert set(report["headline"]) == {"first_frame", "mid_episode"}
        has_images = compared_obs_mode(model) == "dict"  # a state-only model has no video
        assert (tmp_path / model / "compare.mp4").exists() == has_images
    # the shipped agent, trained only in its world model, acting on physics
    assert shipped_agents("grasp") == ["dreamer-grasp"]
    agent = result["agents"]["dreamer-grasp"]
    assert len(agent["episodes"]) == 2 and 0 <= agent["success_rate"] <= 1
    assert (tmp_path / "dreamer-grasp-Phys-Grasp-v0.mp4").stat().st_size > 1000
    # the report shows this run's comparisons (tests/test_report.py renders a report)
    assert result["report"] == tmp_path / "report.html"
    page = result["report"].read_text()
    for model in shipped_models("grasp"):
        assert f"{tmp_path / model / 'compare.json'}: 2 test seeds from 100000" in page
