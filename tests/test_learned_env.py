"""WM-*-v0: Gymnasium API, vector autoreset, determinism, start frames and refusals."""

import shutil
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import wm_envs  # noqa: F401
from wm_envs.checkpoint import save_checkpoint
from wm_envs.demo import play
from wm_envs.models import ModelSpec, build_model


def make(tiny_checkpoint, **kwargs):
    return gym.make("WM-Grasp-v0", checkpoint=str(tiny_checkpoint), device="cpu", **kwargs)


def test_every_task_has_a_learned_twin():
    for task in wm_envs.TASKS.values():
        assert f"WM-{task.name}-v0" in gym.registry


@pytest.mark.parametrize("obs_mode", ["dict", "state", "pixels", "latent"])
def test_check_env_passes(tiny_checkpoint, obs_mode):
    env = make(tiny_checkpoint, obs_mode=obs_mode, render_mode="rgb_array")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught if "infinity" not in str(w.message)] == []
    env.close()


def test_spaces_match_the_physics_twin(tiny_checkpoint):
    learned, physics = make(tiny_checkpoint), gym.make("Phys-Grasp-v0")
    assert learned.observation_space == physics.observation_space
    assert learned.action_space == physics.action_space
    assert learned.spec.max_episode_steps == physics.spec.max_episode_steps


def test_same_seed_same_episode_and_stochastic_mode_follows_the_seed(tiny_checkpoint):
    for stochastic in (False, True):
        runs = []
        for _ in range(2):
            env = make(tiny_checkpoint, stochastic=stochastic)
            obs, _ = env.reset(seed=3)
            trace = [obs["state"]]
            for step in range(5):
                obs, reward, *_ = env.step(np.full(4, 0.3 * (-1) ** step))
                trace += [obs["state"], reward]
            runs.append(trace)
        for a, b in zip(*runs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_bad_actions_and_bad_start_observations_are_refused(tiny_checkpoint):
    env = make(tiny_checkpoint)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([0, np.nan, 0, 0]))
    with pytest.raises(ValueError, match="'image' and 'state'"):
        env.reset(options={"observation": np.zeros((64, 64, 3), np.uint8)})
    with pytest.raises(ValueError, match="shape"):
        env.reset(
            options={
                "observation": {
                    "image": np.zeros((32, 32, 3), np.uint8),
                    "state": np.zeros(24, np.float32),
                }
            }
        )
    with pytest.raises(ValueError, match="NaN"):
        env.reset(
            options={
                "observation": {
                    "image": np.zeros((64, 64, 3), np.uint8),
                    "state": np.full(24, np.nan, np.float32),
                }
            }
        )


def test_reset_from_real_frames_with_context(tiny_checkpoint):
    physics = gym.make("Phys-Grasp-v0")
    obs, _ = physics.reset(seed=9)
    frames, actions = [obs], [np.zeros(4, np.float32)]
    for _ in range(2):
        action = physics.action_space.sample()
        obs, *_ = physics.step(action)
        frames.append(obs)
        actions.append(action)
    context = {k: np.stack([f[k] for f in frames]) for k in ("image", "state")}
    env = make(tiny_checkpoint)
    first, _ = env.reset(options={"observation": frames[0]})
    with_context, _ = env.reset(options={"observation": context, "actions": np.stack(actions)})
    assert first in env.observation_space and with_context in env.observation_space
    with pytest.raises(ValueError, match="actions"):
        env.reset(options={"observation": context, "actions": np.zeros((2, 4))})


def test_vector_env_steps_in_one_batch_with_next_step_autoreset(tiny_checkpoint):
    envs = gym.make_vec(
        "WM-Grasp-v0",
        num_envs=3,
        checkpoint=str(tiny_checkpoint),
        device="cpu",
        max_episode_steps=4,
    )
    assert type(envs).__name__ == "WorldModelVectorEnv"
    obs, _ = envs.reset(seed=0)
    assert obs["image"].shape == (3, 64, 64, 3)
    dones = []
    for _ in range(5):
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        dones.append(terminated | truncated)
        assert reward.shape == (3,) and obs in envs.observation_space
    # every env truncates by step 4; on step 5 those envs are reset with reward 0
    assert np.all(np.array(dones[:4]).any(axis=0))
    done_before = dones[-2]
    assert np.all(info["autoreset"] == done_before)
    assert np.all(reward[done_before] == 0)
    with pytest.raises(ValueError, match="shape"):
        envs.step(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="finite"):
        envs.step(np.full((3, 4), np.inf))


def test_vector_env_matches_single_envs_and_returns_torch_on_request(tiny_checkpoint):
    physics = gym.make("Phys-Grasp-v0")
    starts = [physics.reset(seed=s)[0] for s in range(2)]
    batch = {k: np.stack([s[k] for s in starts]) for k in ("image", "state")}
    envs = gym.make_vec(
        "WM-Grasp-v0", num_envs=2, checkpoint=str(tiny_checkpoint), device="cpu", torch_obs=True
    )
    obs, _ = envs.reset(options={"observation": batch})
    actions = torch.tensor([[0.5, -0.2, 0.1, 1.0], [-1.0, 0.3, 0.0, -1.0]])
    obs, reward, terminated, *_ = envs.step(actions)
    assert isinstance(obs["state"], torch.Tensor) and isinstance(reward, torch.Tensor)
    for row in range(2):
        env = make(tiny_checkpoint)
        env.reset(options={"observation": starts[row]})
        single, single_reward, *_ = env.step(actions[row].numpy())
        np.testing.assert_allclose(single["state"], obs["state"][row].numpy(), atol=1e-5)
        assert single_reward == pytest.approx(float(reward[row]), abs=1e-5)


def test_checkpoints_for_another_task_or_other_spaces_are_refused(tiny_checkpoint, tmp_path):
    other_task = tmp_path / "other_task"
    shutil.copytree(tiny_checkpoint, other_task)
    card = (other_task / "card.json").read_text().replace('"task": "grasp"', '"task": "drive"')
    (other_task / "card.json").write_text(card)
    with pytest.raises(ValueError, match="trained for task 'drive'"):
        make(other_task)
    model = build_model("rssm", ModelSpec(64, 10, 4), "tiny")
    save_checkpoint(tmp_path / "other_spaces", model, {"task": "grasp"})
    with pytest.raises(ValueError, match="shapes"):
        make(tmp_path / "other_spaces")
    with pytest.raises(ValueError, match="depth"):
        make(tiny_checkpoint, obs_mode="rgbd")
    with pytest.raises(ValueError, match="action_mode 'latent': a rssm model"):
        make(tiny_checkpoint, action_mode="latent")
    with pytest.raises(FileNotFoundError, match="no checkpoint card"):
        make(tmp_path / "nothing_here")


def test_the_scripted_expert_drives_the_learned_env(tiny_checkpoint):
    env = make(tiny_checkpoint, obs_mode="pixels")
    expert = wm_envs.make_expert(env)
    obs, _ = env.reset(seed=0)
    expert.reset()
    for _ in range(3):
        obs, *_ = env.step(expert(obs))
    assert env.unwrapped.state_vector().shape == (24,)


def test_play_writes_a_video_of_the_learned_env(tiny_checkpoint, tmp_path):
    result = play(
        "WM-Grasp-v0",
        "random",
        episodes=1,
        out=str(tmp_path / "play.mp4"),
        checkpoint=str(tiny_checkpoint),
        device="cpu",
    )
    assert result["episodes"] == 1 and (tmp_path / "play.mp4").stat().st_size > 1000
