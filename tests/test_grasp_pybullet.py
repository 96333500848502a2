"""Grasp on PyBullet against the MuJoCo reference: same world, state meaning, view and motion."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

import wm_envs


def reset_both(seed: int, **kwargs):
    """``(obs, info)`` of the MuJoCo and the PyBullet Grasp reset on ``seed``, and the envs."""
    envs = [gym.make("Phys-Grasp-v0", backend=b, **kwargs) for b in ("mujoco", "pybullet")]
    return envs, [env.reset(seed=seed) for env in envs]


@pytest.mark.parametrize("seed", range(3))
def test_same_seed_gives_the_same_world_state_and_view(seed):
    envs, [(obs_m, info_m), (obs_p, info_p)] = reset_both(seed, obs_mode="rgbd")
    assert data_equivalence(dict(info_m["physics"]), dict(info_p["physics"]))
    np.testing.assert_allclose(obs_p["state"], obs_m["state"], atol=1e-6)
    assert np.median(np.abs(obs_p["depth"] - obs_m["depth"])) < 0.005  # metres
    colour_error = np.abs(obs_p["image"].astype(int) - obs_m["image"]).max(axis=-1)
    assert (colour_error > 40).mean() < 0.05  # only edge pixels differ
    for env in envs:
        env.close()


def test_same_actions_move_the_gripper_alike():
    envs, [(obs_m, _), (obs_p, _)] = reset_both(0, obs_mode="state")
    expert = wm_envs.make_expert(envs[0])
    expert.reset()
    for _ in range(10):  # approach and descend: the object is not touched yet
        action = expert(obs_m)
        obs_m, *_ = envs[0].step(action)
        obs_p, *_ = envs[1].step(action)
        np.testing.assert_allclose(obs_p[:3], obs_m[:3], atol=0.005)  # gripper position, m
    for env in envs:
        env.close()


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        gym.make("Phys-Grasp-v0", backend="bullet")
