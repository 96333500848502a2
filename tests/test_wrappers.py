"""LatentObservation: any env with dict observations, seen through a world model's filter."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import wm_envs  # noqa: F401
from wm_envs.wrappers import LatentObservation


def test_check_env_passes_and_features_follow_the_posterior(tiny_checkpoint):
    env = LatentObservation(gym.make("Phys-Grasp-v0"), checkpoint=str(tiny_checkpoint))
    check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (env.model.feature_dim,)

    raw = gym.make("Phys-Grasp-v0")
    features, _ = env.reset(seed=4)
    obs, _ = raw.reset(seed=4)
    frames, actions = [obs], [np.zeros(4, np.float32)]
    for _ in range(3):
        action = np.array([0.3, -0.2, -0.5, 1.0], np.float32)
        features, *_ = env.step(action)
        obs, *_ = raw.step(action)
        frames.append(obs)
        actions.append(action)
    # the same frames through init_state's K-frame filter give the same features
    context = {key: torch.as_tensor(np.stack([f[key] for f in frames]))[None] for key in frames[0]}
    with torch.no_grad():
        state = env.model.init_state(context, torch.as_tensor(np.stack(actions))[None])
        expected = env.model.features(state)[0].numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_envs_without_frames_and_bad_actions_are_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="'image' and 'state'"):
        LatentObservation(
            gym.make("Phys-Grasp-v0", obs_mode="state"), checkpoint=str(tiny_checkpoint)
        )
    env = LatentObservation(gym.make("Phys-Grasp-v0"), checkpoint=str(tiny_checkpoint))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0, 0]))
