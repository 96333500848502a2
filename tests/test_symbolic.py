"""Symbolic dynamics: STLSQ, the fit, the state-only learned env it makes, and bad input."""

import json
import shutil

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from wm_envs.data import CollectConfig, collect
from wm_envs.data.windows import read_state_episodes
from wm_envs.models.base import ModelSpec
from wm_envs.models.symbolic import Library, SymbolicConfig, SymbolicModel
from wm_envs.symbolic import (
    NormalEquations,
    SymbolicFitConfig,
    accumulate,
    equations,
    fit,
    flight_gravity,
    prepared_model,
    sparse_fit,
)
from wm_envs.tasks import grasp

DT = grasp.CONTROL_DT


@pytest.fixture(scope="session")
def symbolic_checkpoint(tiny_dataset, tmp_path_factory):
    """Symbolic dynamics fitted on the six tiny Grasp episodes: its folder."""
    root, dataset_id = tiny_dataset
    out = tmp_path_factory.mktemp("runs") / "symbolic"
    config = SymbolicFitConfig(
        data=str(root), dataset_id=dataset_id, out=str(out), thresholds="0.1,0.3", horizon=3
    )
    fit(config, "wm-envs symbolic (test)")
    return out


def test_stlsq_recovers_known_sparse_coefficients():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4000, 3, generator=generator)  # [N, 3]
    library = Library(3, degree=2, trig=(0,))
    names = library.names(["u", "v", "w"])
    true = torch.zeros(library.size, 2)
    true[names.index("1"), 0] = -0.4
    true[names.index("v"), 0] = 1.5
    true[names.index("u*w"), 1] = -0.7
    true[names.index("sin(u)"), 1] = 0.3
    theta = library(inputs).double()  # [N, F]
    targets = theta @ true.double() + 1e-3 * torch.randn(4000, 2, generator=generator).double()
    system = NormalEquations(
        (theta.T @ theta)[None],
        (theta.T @ targets)[None],
        targets.square().sum(0)[None],
        torch.tensor([len(theta)]),
    )
    fitted = sparse_fit(system, threshold=0.05, ridge=1e-8)[0]
    assert torch.equal(fitted != 0, true != 0)
    torch.testing.assert_close(fitted, true, atol=2e-3, rtol=0)
    # without the threshold least squares keeps every term: the noise's
    dense = sparse_fit(system, threshold=0.0, ridge=1e-8)[0]
    assert (dense != 0).all()


def test_the_printed_law_in_raw_units_is_the_law_the_model_steps():
    generator = torch.Generator().manual_seed(1)
    standardised = Library(4, degree=2, trig=(2,), skip_squares=(1,))
    standardised.shift.copy_(torch.randn(4, generator=generator))
    standardised.scale.copy_(torch.rand(4, generator=generator) + 0.1)
    raw = Library(4, degree=2, trig=(2,), skip_squares=(1,))  # shift 0, scale 1: raw terms
    assert "v**2" not in raw.names(["u", "v", "w", "x"]) and raw.size == standardised.size
    inputs = torch.randn(50, 4, generator=generator).double()
    coefficients = torch.randn(standardised.size, 3, generator=generator).double()
    torch.testing.assert_close(
        raw(inputs) @ standardised.raw_coefficients(coefficients),
        standardised(inputs) @ coefficients,
    )


def ballistic_states(gravity: float, steps: int = 4, tracks: int = 100) -> list[dict]:
    """Grasp states of objects falling past the table's edge, far from the gripper, under
    ``gravity`` (semi-implicit Euler, as MuJoCo steps), with random actions."""
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(tracks):
        position = np.array([1.2, rng.uniform(-0.2, 0.2), rng.uniform(-0.5, 0.5)])
        velocity = rng.uniform(-1.0, 1.0, 3)
        states = []
        for _ in range(steps + 1):
            states.append(
                grasp.state_vector(
                    grasp.GRIPPER_START, np.zeros(3), 0.12, position, np.array([1.0, 0, 0, 0]),
                    velocity, np.zeros(3), 0.03,
                )
            )  # fmt: skip
            velocity = velocity - np.array([0.0, 0.0, gravity * DT])
            position = position + velocity * DT
        action = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
        episodes.append({"state": np.stack(states), "action": action})
    return episodes


def test_gravity_is_recovered_from_a_synthetic_ballistic_trajectory():
    from wm_envs.symbolic import transitions

    before, actions, after = transitions(ballistic_states(gravity=7.3))
    spec = ModelSpec(image_size=64, state_dim=24, action_dim=4)
    model = prepared_model("grasp", spec, before, actions, after)
    system = accumulate(model, before, actions, after, chunk=16)
    assert system.count.tolist() == [len(before), 0, 0, 0]  # every step is flight
    model.coefficients.copy_(sparse_fit(system, threshold=0.01))
    assert flight_gravity(model)["flight_gravity"] == pytest.approx(7.3, rel=1e-3)
    laws = equations(model)["flight"]
    assert float(laws["dvz_o"]) == pytest.approx(-7.3 * DT, rel=1e-3)  # a constant: the law
    assert laws["dvx_o"] == "0" and laws["dx_o"].startswith("0.04*vx_o")


def test_collapse_gravity_from_synthetic_falling_blocks():
    from benchmarks.symbolic import collapse_gravity, scene_obstacles
    from wm_envs.tasks import collapse

    with gym.make("Phys-Collapse-v0", obs_mode="state") as env:
        obstacles = scene_obstacles(env.unwrapped.model)
    rng = np.random.default_rng(0)
    slab = collapse.PILLARS_PER_FLOOR  # floor 0's slab slot
    episodes = []
    for _ in range(4):  # a slab thrown up from 1 m, under 7.3 m/s^2; a pillar lying still
        states = np.zeros((6, collapse.STATE_DIM), np.float32)
        states[:, 0:3] = collapse.RAM_START
        states[:, 11:17] = [0.03, 0.03, 0.05, 0.1, 0.08, 0.012]  # pillar and slab halves
        blocks = states[:, collapse.HEADER_DIM : collapse.HEADER_DIM + 8 * collapse.MAX_BLOCKS]
        blocks = blocks.reshape(6, collapse.MAX_BLOCKS, 8)
        time = np.arange(6)[:, None] * DT
        start, velocity = np.array([0.1, 0.0, 1.0]), rng.uniform(-1, 1, 3)
        blocks[:, slab, :3] = start + velocity * time - [0, 0, 0.5 * 7.3] * time**2
        blocks[:, 0, :3] = [0.2, 0.1, 0.03]  # lying on the floor: not free
        blocks[:, [0, slab], 3] = 1.0  # identity quaternions
        blocks[:, [0, slab], 7] = 1.0  # used
        states[:, collapse.HEADER_DIM : collapse.HEADER_DIM + 8 * collapse.MAX_BLOCKS] = (
            blocks.reshape(6, -1)
        )
        episodes.append({"state": states})
    found = collapse_gravity(episodes, obstacles, threshold=0.03)
    assert found["samples"] == 4 * 4  # the slab's inner steps only
    assert found["g_recovered"] == pytest.approx(7.3, rel=1e-3)


def test_the_fit_writes_a_checkpoint_with_its_equations_and_recipe(symbolic_checkpoint):
    card = json.loads((symbolic_checkpoint / "card.json").read_text())
    assert card["model"] == "symbolic" and card["task"] == "grasp"
    assert set(card["equations"]) == {"flight", "rest", "held", "contact"}
    assert card["recipe"]["command"] == "wm-envs symbolic (test)"
    assert card["config"]["threshold"] in (0.1, 0.3)
    assert [row["threshold"] for row in card["recipe"]["threshold_sweep"]] == [0.1, 0.3]
    assert card["dataset"]["seed_ranges"] == [[0, 5]]
    assert "val/position_cm_3step" in card["metrics"]
    assert "## Equations" in (symbolic_checkpoint / "MODEL_CARD.md").read_text()


def make(folder, **kwargs):
    return gym.make("WM-Grasp-v0", model="symbolic", checkpoint=str(folder), device="cpu", **kwargs)


@pytest.mark.parametrize("obs_mode", ["state", "latent"])
def test_the_env_passes_check_env(symbolic_checkpoint, obs_mode):
    with make(symbolic_checkpoint, obs_mode=obs_mode) as env:
        check_env(env.unwrapped, skip_render_check=True)  # no image decoder: nothing to render
        obs, _ = env.reset(seed=0)
        obs, reward, *_ = env.step(env.action_space.sample())
        assert obs in env.observation_space and np.isfinite(reward)
    with pytest.raises(ValueError, match="no image decoder"):
        make(symbolic_checkpoint, obs_mode="dict")
    with pytest.raises(ValueError, match="no image decoder to render"):
        make(symbolic_checkpoint, obs_mode=obs_mode, render_mode="rgb_array")


def test_batched_step_matches_per_row_step(symbolic_checkpoint, tiny_dataset):
    from wm_envs.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(symbolic_checkpoint)
    states = torch.from_numpy(
        np.concatenate([e["state"] for e in read_state_episodes(*tiny_dataset)])[::7]
    )  # [B, S]: every phase of real episodes
    actions = torch.rand(len(states), 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batched = model.next_states(states, actions)
    rows = torch.cat(
        [model.next_states(s[None], a[None]) for s, a in zip(states, actions, strict=True)]
    )
    torch.testing.assert_close(batched, rows)
    assert not torch.equal(batched, states)  # it moves

    envs = gym.make_vec(
        "WM-Grasp-v0",
        num_envs=4,
        model="symbolic",
        checkpoint=str(symbolic_checkpoint),
        obs_mode="state",
        device="cpu",
    )
    obs, _ = envs.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, truncated, _ = envs.step(envs.action_space.sample())
    assert obs.shape == (4, 24) and reward.shape == (4,) and np.isfinite(obs).all()


def test_outcomes_are_the_task_definitions_on_the_predicted_state(tiny_dataset):
    states = np.concatenate([e["state"] for e in read_state_episodes(*tiny_dataset)])
    model = SymbolicModel(ModelSpec(64, 24, 4), SymbolicConfig())
    tensor = torch.from_numpy(states)
    held = model.rules.phase(tensor) == model.rules.phases.index("held")
    reward, _, success = model.rules.outcomes(tensor, torch.full((len(states),), 5))
    expected = [
        grasp.shaped_reward(float(np.linalg.norm(s[20:23])), bool(h), float(s[9] - s[23]))
        for s, h in zip(states, held.tolist(), strict=True)
    ]
    np.testing.assert_allclose(reward.numpy(), expected, atol=1e-6)
    assert success.all()  # five steps at the goal: grasp.HOLD_STEPS


def test_a_dataset_of_another_task_or_with_nan_is_refused(tiny_dataset, tmp_path):
    root, dataset_id = tiny_dataset
    collect(CollectConfig(env_id="Phys-Collapse-v0", episodes=1), tmp_path, "collapse/one-v0")
    with pytest.raises(ValueError, match="task 'collapse' has no rules"):
        fit(SymbolicFitConfig(data=str(tmp_path), dataset_id="collapse/one-v0", out=str(tmp_path)))
    shutil.copytree(root / dataset_id, tmp_path / "grasp" / "nan-v0")
    with h5py.File(tmp_path / "grasp" / "nan-v0" / "data" / "main_data.hdf5", "a") as file:
        file["episode_2/observations/state"][4, 9] = np.nan
    with pytest.raises(ValueError, match="episode 2 \\(seed 2\\) holds NaN or inf in its states"):
        fit(SymbolicFitConfig(data=str(tmp_path), dataset_id="grasp/nan-v0", out=str(tmp_path)))
    model = SymbolicModel(ModelSpec(64, 24, 4), SymbolicConfig())
    with pytest.raises(ValueError, match="NaN or inf"):
        model.init_state({"state": torch.full((1, 1, 24), np.nan)})
    with pytest.raises(ValueError, match="fitted by sparse regression"):
        model.loss({})
