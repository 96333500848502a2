"""The README's any-RL-library example: SB3 PPO trained in WM-Grasp-v0, run on physics."""

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import wm_envs  # noqa: F401


def test_ppo_trains_in_the_learned_env_and_acts_on_physics(tiny_checkpoint):
    learned = gym.make("WM-Grasp-v0", obs_mode="state", checkpoint=str(tiny_checkpoint))
    agent = PPO("MlpPolicy", learned, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(total_timesteps=128)
    assert any(
        not np.allclose(a, b.detach())
        for a, b in zip(before, agent.policy.parameters(), strict=True)
    )

    physics = gym.make("Phys-Grasp-v0", obs_mode="state")  # same spaces: no line changed
    obs, _ = physics.reset(seed=7000)
    for _ in range(5):
        action, _ = agent.predict(obs, deterministic=True)
        assert physics.action_space.contains(action)
        obs, reward, terminated, truncated, info = physics.step(action)
