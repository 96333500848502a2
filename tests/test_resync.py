"""WM-*-v0 with resync_every: re-anchoring on a physics shadow (shipped rssm-grasp)."""

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import wm_envs  # noqa: F401
from wm_envs.learned_env import blend_states
from wm_envs.tasks.experts import make_expert

SEED = 100_000  # a test-split seed


def make(**kwargs) -> gym.Env:
    return gym.make("WM-Grasp-v0", device="cpu", obs_mode="state", **kwargs)


def expert_episode(steps: int) -> tuple[dict, list[np.ndarray], list[np.ndarray], list[bool]]:
    """A noisy expert on Phys-Grasp-v0 from ``SEED`` for ``steps`` steps or until its episode
    ends: the first observation, the actions, the states (one more) and whether it succeeded
    after each action."""
    with gym.make("Phys-Grasp-v0", obs_mode="dict") as physics:
        first = obs = physics.reset(seed=SEED)[0]
        expert = make_expert(physics, noise=0.3, seed=0)
        expert.reset()
        actions, states, successes = [], [obs["state"]], []
        done = False
        while not done and len(actions) < steps:
            actions.append(expert(obs))
            obs, _, terminated, truncated, info = physics.step(actions[-1])
            states.append(obs["state"])
            successes.append(info["is_success"])
            done = terminated or truncated
    return first, actions, states, successes


def test_resync_every_step_tracks_physics_while_open_loop_drifts():
    first, actions, states, successes = expert_episode(12)
    assert len(actions) == 12
    synced, free = make(resync_every=1), make()
    obs, info = synced.reset(seed=SEED)
    np.testing.assert_allclose(obs, states[0])  # the seed's real first frame
    assert info["resynced"] and not info["physics_ended"]
    free.reset(options={"observation": first})
    free_error = []
    for action, state, success in zip(actions, states[1:], successes, strict=True):
        obs, *_, info = synced.step(action)
        assert info["resynced"] and info["physics_success"] == success
        assert np.abs(obs - state).max() < 1e-5  # the posterior takes the real state
        assert np.abs(info["predicted_state"] - state).max() > 0  # the prior had drifted
        free_error.append(np.abs(free.step(action)[0] - state).max())
    assert min(free_error[-5:]) > 0.01  # open loop drifts
    synced.close()


def test_resync_every_n_re_anchors_on_every_nth_step_until_physics_ends():
    _, actions, _, successes = expert_episode(100)
    assert successes[-1] and len(actions) < 100  # the shadow's episode ends on success
    env = make(resync_every=np.int64(3))  # numpy integers count as whole numbers
    env.reset(seed=SEED)
    infos = [env.step(action)[-1] for action in actions + [np.zeros(4)] * 4]
    resynced = [info["resynced"] for info in infos]
    assert resynced[: len(actions)] == [(step + 1) % 3 == 0 for step in range(len(actions))]
    assert not any(resynced[len(actions) :])  # no shadow, no re-anchoring
    assert [info["physics_ended"] for info in infos].index(True) == len(actions) - 1
    assert all(info["physics_success"] for info in infos[len(actions) - 1 :])
    assert all(("predicted_state" in info) == info["resynced"] for info in infos)
    env.reset(seed=SEED)
    assert not env.step(np.zeros(4))[-1]["physics_ended"]  # a fresh shadow episode
    env.close()


@pytest.mark.parametrize("obs_mode", ["dict", "state"])
def test_check_env_passes_with_resync(obs_mode):
    env = gym.make(
        "WM-Grasp-v0", device="cpu", obs_mode=obs_mode, render_mode="rgb_array", resync_every=2
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught if "infinity" not in str(w.message)] == []
    env.close()


def test_same_seed_same_resynced_episode():
    _, actions, _, _ = expert_episode(8)
    for stochastic in (False, True):
        runs = []
        for _ in range(2):
            env = make(resync_every=2, resync_weight=0.5, stochastic=stochastic)
            trace = [env.reset(seed=SEED)[0]]
            for action in actions:
                obs, reward, *_ = env.step(action)
                trace += [obs, reward]
            runs.append(trace)
            env.close()
        for a, b in zip(*runs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_blend_mixes_floating_point_tensors_and_takes_the_posteriors_others():
    posterior = {"latent": torch.tensor([[2.0, 4.0]]), "tokens": torch.tensor([[7, 8]])}
    prior = {"latent": torch.tensor([[0.0, 0.0]]), "tokens": torch.tensor([[1, 2]])}
    blend = blend_states(posterior, prior, 0.25)
    torch.testing.assert_close(blend["latent"], torch.tensor([[0.5, 1.0]]))
    torch.testing.assert_close(blend["tokens"], posterior["tokens"])


@pytest.mark.parametrize("every", [0, -3, 2.5, True, "10"])
def test_bad_resync_periods_are_refused(every):
    with pytest.raises(ValueError, match="resync_every must be None .* whole number of steps"):
        make(resync_every=every)


@pytest.mark.parametrize("weight", [0, -0.1, 1.5, float("nan"), True, "1"])
def test_bad_resync_weights_are_refused(weight):
    with pytest.raises(ValueError, match=r"resync_weight must be a number in \(0, 1\]"):
        make(resync_every=5, resync_weight=weight)


def test_resync_is_refused_where_it_cannot_work():
    with pytest.raises(ValueError, match="resync_weight=0.5 needs resync_every"):
        make(resync_weight=0.5)
    with pytest.raises(ValueError, match="a genie model has none"):
        make(model="genie", resync_every=5)
    env = make(resync_every=5)
    obs, _ = env.reset(seed=SEED)
    start = {"image": np.zeros((64, 64, 3), np.uint8), "state": obs}
    with pytest.raises(ValueError, match="starts from the physics shadow's first frame"):
        env.reset(seed=SEED, options={"observation": start})
    env.close()


def test_the_batched_vector_env_refuses_resync_and_sync_vectorization_serves_it():
    with pytest.raises(ValueError, match='vectorization_mode="sync"'):
        gym.make_vec("WM-Grasp-v0", num_envs=2, device="cpu", resync_every=5)
    envs = gym.make_vec(
        "WM-Grasp-v0",
        num_envs=2,
        vectorization_mode="sync",
        device="cpu",
        obs_mode="state",
        resync_every=1,
    )
    envs.reset(seed=SEED)
    assert envs.step(np.zeros((2, 4)))[-1]["resynced"].all()
    envs.close()


def test_the_resync_benchmark_writes_drift_against_the_period(tmp_path):
    from benchmarks import resync

    resync.main(["--task", "grasp", "--episodes", "2", "--step", "10", "--out", str(tmp_path)])
    assert (tmp_path / "resync_grasp.md").exists()
    rows = json.loads((tmp_path / "resync_grasp.json").read_text())["rows"]
    by_setting = {(row["resync_every"], row["weight"]): row for row in rows}
    assert set(by_setting) == {("inf" if n is None else n, w) for n, w in resync.SETTINGS}
    assert by_setting["inf", 1.0]["drift_cut"] == 0
    assert by_setting[1, 1.0]["position_cm_10"] < by_setting["inf", 1.0]["position_cm_10"]
    assert by_setting[1, 1.0]["mean_position_cm_1-10"] == 0  # each step the posterior
    assert all(row["steps_per_s"] > 0 for row in rows)
