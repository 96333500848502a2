"""Shared behaviour of every ground-truth env: API, determinism, obs modes, bad input, experts."""

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Mapping

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wm_envs
from wm_envs.tasks import TASKS, experts, phys_envs, task_of
from wm_envs.tasks.grasp import GraspRandomization

PHYS_IDS = sorted(env_id for env_id in gym.registry if env_id.startswith("Phys-"))
#: Every registered id on its default engine and on its other backends.
PHYS_ENVS = [
    pytest.param(env_id, kwargs, id="-".join([env_id, *kwargs.values()]))
    for env_id, kwargs in phys_envs()
]


def test_every_task_is_registered_on_import():
    assert {f"Phys-{task.name}-v0" for task in wm_envs.TASKS.values()} == set(PHYS_IDS)
    env = gym.make("wm_envs:Phys-Grasp-v0")
    env.close()


@pytest.mark.parametrize("env_id, kwargs", PHYS_ENVS)
def test_check_env_passes_without_warnings(env_id, kwargs):
    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    messages = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert messages == []
    env.close()


def rollout(env_id: str, seed: int, steps: int, **kwargs):
    env = gym.make(env_id, **kwargs)
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [(obs, info)]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    env.close()
    return trace


@pytest.mark.parametrize("env_id, kwargs", PHYS_ENVS)
def test_same_seed_and_actions_give_identical_episodes(env_id, kwargs):
    first, second = rollout(env_id, 7, 15, **kwargs), rollout(env_id, 7, 15, **kwargs)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert gym.utils.env_checker.data_equivalence(a, b, exact=True)
    other = rollout(env_id, 8, 0, **kwargs)
    assert not np.array_equal(first[0][0]["state"], other[0][0]["state"])


@pytest.mark.parametrize("env_id, kwargs", PHYS_ENVS)
@pytest.mark.parametrize("obs_mode", ["dict", "state", "pixels", "rgbd"])
def test_observation_modes_match_their_spaces(env_id, kwargs, obs_mode):
    env = gym.make(env_id, obs_mode=obs_mode, image_size=48, **kwargs)
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    obs, *_ = env.step(env.action_space.sample())
    assert obs in env.observation_space
    if obs_mode == "rgbd":
        depth = obs["depth"]
        assert depth.shape == (48, 48, 1) and 0.1 < depth.min() < depth.max() < 50.0  # metres
    if obs_mode in ("dict", "pixels"):
        image = obs["image"] if obs_mode == "dict" else obs
        assert image.std() > 5  # a real picture, not a blank buffer
    env.close()


@pytest.mark.parametrize("env_id, kwargs", PHYS_ENVS)
def test_bad_actions_raise_and_out_of_range_is_clipped(env_id, kwargs):
    env = gym.make(env_id, obs_mode="state", **kwargs)
    env.reset(seed=0)
    size = env.action_space.shape[0]
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(size + 1))
    for bad in (np.nan, np.inf):
        action = np.zeros(size)
        action[0] = bad
        with pytest.raises(ValueError, match="finite"):
            env.step(action)
    env.close()
    clipped, unclipped = (gym.make(env_id, obs_mode="state", **kwargs) for _ in range(2))
    clipped.reset(seed=3)
    unclipped.reset(seed=3)
    obs_a, *_ = clipped.step(np.ones(size))
    obs_b, *_ = unclipped.step(np.full(size, 5.0))
    np.testing.assert_array_equal(obs_a, obs_b)


@pytest.mark.parametrize("env_id, kwargs", PHYS_ENVS)
def test_reset_reports_the_realised_physics(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    _, info = env.reset(seed=1)
    assert isinstance(info["physics"], Mapping) and info["physics"]  # a WorldDraw, not a dict
    assert info["is_success"] is False
    env.close()


def test_grasp_narrow_randomization_gives_a_fixed_world():
    fixed = GraspRandomization(
        shapes=("box",),
        box_half_size=(0.03, 0.03),
        mass=(0.1, 0.1),
        friction=(1.0, 1.0),
        object_xy=(0.0, 0.0),
        object_yaw=(0.0, 0.0),
    )
    env = gym.make("Phys-Grasp-v0", obs_mode="state", randomization=fixed)
    worlds = [env.reset(seed=seed)[1]["physics"] for seed in range(3)]
    assert all(w["shape"] == "box" and w["mass"] == 0.1 for w in worlds)
    np.testing.assert_allclose(worlds[0]["half_extents"], 0.03)
    with pytest.raises(ValueError, match="shapes"):
        GraspRandomization(shapes=("torus",))
    env.close()


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="obs_mode"):
        gym.make("Phys-Grasp-v0", obs_mode="voxels")
    with pytest.raises(ValueError, match="render_mode"):
        gym.make("Phys-Grasp-v0", render_mode="human")


@pytest.mark.parametrize("env_id, kwargs", PHYS_ENVS)
def test_expert_solves_a_sample_of_seeds(env_id, kwargs):
    env = gym.make(env_id, obs_mode="state", **kwargs)
    expert = wm_envs.make_expert(env)
    successes = 0
    for seed in range(500, 510):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            done = terminated or truncated
        successes += info["is_success"]
    assert successes >= 9
    env.close()


#: Renders in the parent, then steps an async vector env of ``sys.argv[1]`` (kwargs as JSON in
#: ``sys.argv[2]``) whose workers start with the multiprocessing context ``sys.argv[3]``.
ASYNC_AFTER_RENDERING = textwrap.dedent(
    """
    import json, sys
    import gymnasium as gym
    import wm_envs

    def main():
        env_id, kwargs, context = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
        with gym.make("Phys-Grasp-v0") as env:
            env.reset(seed=0)  # an EGL context in the parent
        vector_kwargs = {} if context == "default" else {"context": context}
        envs = gym.make_vec(
            env_id, 2, vectorization_mode="async", vector_kwargs=vector_kwargs, **kwargs
        )
        try:
            obs, _ = envs.reset(seed=0)
            envs.step(envs.action_space.sample())
            print("stepped", obs["image"].shape)
        finally:
            envs.close()

    if __name__ == "__main__":
        main()
    """
)


def run_async_after_rendering(tmp_path, env_id: str, kwargs: str, context: str):
    """Run the scenario in a fresh Python, killing its whole process group after 60 s so
    that a hang fails the test instead of blocking CI."""
    script = tmp_path / "scenario.py"
    script.write_text(ASYNC_AFTER_RENDERING)
    process = subprocess.Popen(
        [sys.executable, str(script), env_id, kwargs, context],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{env_id} {kwargs} with context {context!r} hung")
    return process.returncode, output


def test_forked_workers_after_rendering_fail_fast_naming_the_fix(tmp_path):
    code, output = run_async_after_rendering(tmp_path, "Phys-Grasp-v0", "{}", "default")
    assert code != 0 and "EGL does not survive fork" in output
    assert "vector_kwargs={'context': 'forkserver'}" in output
    # PyBullet's TinyRenderer is CPU-only: forked workers render fine
    code, output = run_async_after_rendering(
        tmp_path, "Phys-Grasp-v0", '{"backend": "pybullet"}', "default"
    )
    assert code == 0 and "stepped (2, 64, 64, 3)" in output, output


def test_forkserver_workers_render_after_the_parent_rendered(tmp_path):
    code, output = run_async_after_rendering(tmp_path, "Phys-Grasp-v0", "{}", "forkserver")
    assert code == 0 and "stepped (2, 64, 64, 3)" in output, output


@pytest.mark.parametrize(("env_id", "kwargs"), phys_envs())
def test_the_registry_declares_each_engines_shapes_and_expert(env_id, kwargs):
    """Learned envs trust these declarations instead of making the physics twin."""
    task = TASKS[task_of(env_id)]
    with gym.make(env_id, obs_mode="dict", **kwargs) as env:
        size = task.image_size
        assert env.observation_space["image"].shape == (size, size, 3)
        assert env.observation_space["state"].shape == (task.state_dim,)
        assert env.action_space.shape == (task.action_dim,)
        assert env.unwrapped.expert_class is getattr(experts, task.expert)


def test_a_task_declares_model_settings_the_trainer_applies_before_overrides():
    from wm_envs.train import task_model_settings

    drive = task_model_settings("Phys-Drive-v0", "rssm")  # a dataset's env, not its id
    assert drive == {"background": "none", "foreground_weight": 0.0}  # the chase camera
    assert task_model_settings("Phys-Grasp-v0", "rssm") == {}
    assert task_model_settings("Phys-Drive-v0", "genie") == {}


@pytest.mark.parametrize(
    "env_id,key", [("Phys-Collapse-v0", "welds"), ("Phys-Drive-v0", "centre_line")]
)
def test_vector_envs_keep_each_envs_draw_though_their_sizes_differ(env_id, key):
    """Seeds 0-3 draw layouts (tracks) with different numbers of welds (centre-line points);
    a sync vector env keeps each env's draw instead of stacking their arrays."""
    envs = gym.make_vec(env_id, num_envs=4, vectorization_mode="sync", obs_mode="state")
    _, info = envs.reset(seed=[0, 1, 2, 3])
    sizes = [len(draw[key]) for draw in info["physics"]]
    assert len(set(sizes)) > 1
    with gym.make(env_id, obs_mode="state") as env:
        _, alone = env.reset(seed=3)
    np.testing.assert_array_equal(info["physics"][3][key], alone["physics"][key])
    envs.step(envs.action_space.sample())
    envs.close()
