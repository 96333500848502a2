"""WM-*-v0: Gymnasium API, vector autoreset, determinism, start frames and refusals."""

import dataclasses
import json
import shutil
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import wm_envs  # noqa: F401
from wm_envs.checkpoint import save_checkpoint, shipped_checkpoint
from wm_envs.demo import play
from wm_envs.learned_env import WorldModelEnv
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
    with pytest.raises(ValueError, match="3 frames needs options\\['actions'\\].*led into each"):
        env.reset(options={"observation": context})


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


def start(state, image=None) -> dict:
    """A start observation: ``state`` with a blank frame (or ``image``)."""
    return {"image": np.zeros((64, 64, 3), np.uint8) if image is None else image, "state": state}


def real_state(seed: int = 0) -> np.ndarray:
    with gym.make("Phys-Grasp-v0", obs_mode="state") as physics:
        return physics.reset(seed=seed)[0]


def test_start_states_of_any_real_float_dtype_are_read_as_float32(tiny_checkpoint):
    env = make(tiny_checkpoint)
    state = real_state()
    single, _ = env.reset(options={"observation": start(state)})
    wide, _ = env.reset(options={"observation": start(state.astype(np.float64))})
    np.testing.assert_array_equal(single["state"], wide["state"])
    brain, _ = env.reset(options={"observation": start(torch.from_numpy(state).bfloat16())})
    assert brain in env.observation_space
    for bad in (state.astype(np.int64), state > 0, state.astype(np.complex64)):
        with pytest.raises(ValueError, match="'state' must hold real floating-point"):
            env.reset(options={"observation": start(bad)})
    with pytest.raises(ValueError, match="'image' must be uint8"):
        env.reset(options={"observation": start(state, np.zeros((64, 64, 3), np.int64))})


def physics_states(backend: str, episodes: int) -> np.ndarray:
    """States of expert (even) and random (odd) Phys-Grasp-v0 episodes [N, 24]."""
    states = []
    with gym.make("Phys-Grasp-v0", obs_mode="state", backend=backend) as physics:
        expert = wm_envs.make_expert(physics)
        physics.action_space.seed(0)
        for episode in range(episodes):
            obs, _ = physics.reset(seed=100 + episode)
            expert.reset()
            states.append(obs)
            for _ in range(100):
                action = expert(obs) if episode % 2 == 0 else physics.action_space.sample()
                obs, _, terminated, truncated, _ = physics.step(action)
                states.append(obs)
                if terminated or truncated:
                    break
    return np.array(states)


def test_start_states_far_outside_the_training_data_are_refused():
    states = np.concatenate([physics_states(backend, 4) for backend in ("mujoco", "pybullet")])
    assert len(states) > 400
    envs = gym.make_vec(
        "WM-Grasp-v0",
        num_envs=len(states),
        checkpoint=str(shipped_checkpoint("rssm", "grasp")),
        obs_mode="state",
        device="cpu",
    )
    blank = np.zeros((len(states), 64, 64, 3), np.uint8)
    obs, _ = envs.reset(options={"observation": {"image": blank, "state": states}})
    assert obs.shape == states.shape  # every real state is accepted
    far = states.copy()
    far[3, 9] = 1e6
    with pytest.raises(ValueError, match=r"dims \[9\] lie up to .* standard deviations"):
        envs.reset(options={"observation": {"image": blank, "state": far}})


def test_start_observations_may_be_torch_tensors(tiny_checkpoint):
    envs = gym.make_vec(
        "WM-Grasp-v0", num_envs=2, checkpoint=str(tiny_checkpoint), device="cpu", torch_obs=True
    )
    obs, _ = envs.reset(seed=0)
    from_tensors, _ = envs.reset(options={"observation": obs})
    numpy_obs = {key: value.numpy() for key, value in obs.items()}
    from_arrays, _ = envs.reset(options={"observation": numpy_obs})
    for key in ("image", "state"):
        torch.testing.assert_close(from_tensors[key], from_arrays[key])
    context = {key: value[:, None].repeat_interleave(2, 1) for key, value in obs.items()}
    actions = torch.zeros(2, 2, 4)
    assert envs.reset(options={"observation": context, "actions": actions})[0] is not None


def genie_checkpoint(folder) -> str:
    model = build_model("genie", ModelSpec(64, 24, 4), "tiny")
    bank = {"bank/image": torch.zeros(2, 64, 64, 3, dtype=torch.uint8)}
    bank["bank/state"] = torch.zeros(2, 24)
    save_checkpoint(folder, model, {"task": "grasp"}, bank)
    return str(folder)


def test_inference_settings_outside_their_bounds_are_refused(tmp_path):
    folder = genie_checkpoint(tmp_path)

    def genie(settings):
        return gym.make(
            "WM-Grasp-v0", model="genie", checkpoint=folder, device="cpu", model_settings=settings
        )

    assert genie({"maskgit_steps": 64, "temperature": 0.5}).unwrapped.simulator.model.maskgit_steps
    bad = [
        ("maskgit_steps", 0),
        ("maskgit_steps", 65),
        ("maskgit_steps", 2.5),
        ("maskgit_steps", True),
        ("temperature", 0.0),
        ("temperature", float("nan")),
        ("temperature", "hot"),
    ]
    for name, value in bad:
        with pytest.raises(ValueError, match=rf"model_settings\['{name}'\] must be a finite"):
            genie({name: value})


def test_a_checkpoint_of_another_engine_is_refused_naming_the_backend(tiny_checkpoint, tmp_path):
    pybullet = tmp_path / "pybullet"
    shutil.copytree(tiny_checkpoint, pybullet)
    card = json.loads((pybullet / "card.json").read_text())
    card["env_kwargs"] = {"obs_mode": "dict", "backend": "pybullet"}
    (pybullet / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match='pass backend="pybullet"'):
        make(pybullet)
    env = make(pybullet, backend="pybullet")
    assert env.reset(seed=0)[0] in env.observation_space
    with pytest.raises(ValueError, match="pass backend=None"):
        make(tiny_checkpoint, backend="pybullet")
    with pytest.raises(ValueError, match="backend must be None"):
        make(tiny_checkpoint, backend="bullet")
    with pytest.raises(ValueError, match='pass backend="pybullet"'):
        make(pybullet, backend="mujoco")  # the default engine, by name
    assert make(tiny_checkpoint, backend="mujoco").reset(seed=0)[0] in env.observation_space


def test_a_learned_env_makes_no_physics_env(tiny_checkpoint, monkeypatch):
    """Shapes and expert come from the task registry, not from making the twin."""
    made = []
    real_make = gym.make
    monkeypatch.setattr(
        gym, "make", lambda env_id, **kw: made.append(env_id) or real_make(env_id, **kw)
    )
    env = WorldModelEnv("grasp", checkpoint=str(tiny_checkpoint), obs_mode="state")
    assert env.reset(seed=0)[0] in env.observation_space
    assert not [env_id for env_id in made if str(env_id).startswith("Phys-")]


def vector_trace(envs, seed: int, steps: int) -> list:
    obs, _ = envs.reset(seed=seed)
    trace = [obs]
    for step in range(steps):
        actions = np.tile(np.array([0.5, -0.5, 0.2, 1.0]) * (-1) ** step, (envs.num_envs, 1))
        trace.append(envs.step(actions))
    return trace


def test_vector_autoreset_draws_bank_starts_deterministically(tiny_checkpoint):
    def vector():
        return gym.make_vec(
            "WM-Grasp-v0",
            num_envs=3,
            checkpoint=str(tiny_checkpoint),
            obs_mode="state",
            device="cpu",
            max_episode_steps=2,
        )

    envs = vector()
    first = vector_trace(envs, seed=5, steps=7)
    for again in (vector_trace(envs, seed=5, steps=7), vector_trace(vector(), seed=5, steps=7)):
        assert gym.utils.env_checker.data_equivalence(first, again, exact=True)
    sim = envs.simulator
    banked = sim.observe(sim.start(sim.bank_context(np.arange(len(sim.bank["image"]))), None, None))
    resets = 0
    for obs, reward, _, _, info in first[1:]:
        for row in np.flatnonzero(info["autoreset"]):
            assert np.isclose(banked.numpy(), obs[row], atol=1e-6).all(axis=1).any()
            assert reward[row] == 0
            resets += 1
    assert resets >= 6  # every env restarts after its 2-step episodes


def test_vector_step_never_reads_device_values_back(tiny_checkpoint, monkeypatch):
    """The step path of numpy actions makes none of the calls that wait for the device."""
    envs = gym.make_vec(
        "WM-Grasp-v0",
        num_envs=3,
        checkpoint=str(tiny_checkpoint),
        device="cpu",
        torch_obs=True,
        max_episode_steps=2,
    )
    envs.reset(seed=0)
    reads = []
    for name in ("__bool__", "item", "nonzero", "tolist"):
        method = getattr(torch.Tensor, name)

        def counted(self, *args, _method=method, _name=name, **kwargs):
            reads.append(_name)
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for _ in range(5):  # through autoresets
        *_, info = envs.step(np.zeros((3, 4), np.float32))
    monkeypatch.undo()
    assert reads == [] and info["autoreset"].dtype == torch.bool


@pytest.mark.parametrize("task", [k for k, spec in wm_envs.TASKS.items() if spec.state_outcome])
def test_the_state_rule_agrees_with_physics_step_by_step(task):
    """``TaskSpec.state_outcome`` on the true states gives physics' own success and end."""
    from wm_envs.agents.scripted import ScriptedPolicy
    from wm_envs.tasks import task_function

    rule = task_function(task, "state_outcome")
    env = gym.make(f"Phys-{wm_envs.TASKS[task].name}-v0", obs_mode="state")
    policy = ScriptedPolicy(env, "expert", seed=0)
    obs, _ = env.reset(seed=5)
    policy.reset()
    held, flags, ends = torch.zeros(1, dtype=torch.long), [], []
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy(obs))
        success, ended, held = rule(torch.as_tensor(obs)[None], held)
        flags.append((bool(success[0]), info["is_success"]))
        ends.append((bool(ended[0]), terminated))
        done = terminated or truncated
    env.close()
    assert flags[-1] == (True, True)  # the expert succeeds, and the rule says so
    assert all(rule == physics for rule, physics in flags + ends)


def test_success_from_state_ends_episodes_by_the_tasks_rule(tiny_checkpoint, lift_predictions):
    env = make(tiny_checkpoint, obs_mode="latent", success_from="state")
    lift_predictions(env.unwrapped.simulator.model)
    for _ in range(2):  # the count of steps held starts again at reset
        env.reset(seed=0)
        ends = [env.step(np.zeros(4))[2:5:2] for _ in range(5)]
        assert [terminated for terminated, _ in ends] == [False] * 4 + [True]
        assert [info["is_success"] for _, info in ends] == [False] * 4 + [True]
    envs = gym.make_vec(
        "WM-Grasp-v0",
        num_envs=2,
        checkpoint=str(tiny_checkpoint),
        device="cpu",
        obs_mode="latent",
        success_from="state",
    )
    lift_predictions(envs.simulator.model)
    envs.reset(seed=0)
    success = [envs.step(np.zeros((2, 4)))[4]["is_success"] for _ in range(11)]
    # success on step 5; step 6 autoresets; held again from step 7, success on step 11
    assert [bool(flag[0]) for flag in success] == [False] * 4 + [True] + [False] * 5 + [True]


def test_an_unknown_success_rule_or_a_task_without_one_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="success_from must be one of"):
        gym.make("WM-Grasp-v0", success_from="heads")
    ruleless = dataclasses.replace(wm_envs.TASKS["drive"], state_outcome="")
    monkeypatch.setitem(wm_envs.TASKS, "drive", ruleless)
    with pytest.raises(ValueError, match="declares no success rule"):
        gym.make("WM-Drive-v0", success_from="state")
