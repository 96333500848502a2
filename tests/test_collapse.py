"""Phys-Collapse-v0: welds that break and stay broken, a building that stands when left alone."""

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import wm_envs  # noqa: F401  (registers the envs)
from wm_envs.tasks import collapse
from wm_envs.tasks.collapse import CollapseRandomization


def make(**kwargs):
    return gym.make("Phys-Collapse-v0", obs_mode="state", **kwargs)


def test_an_overloaded_weld_breaks_and_stays_broken():
    env = make(randomization=CollapseRandomization(strength=(30.0, 30.0)))
    env.reset(seed=0)
    task = env.unwrapped
    pillar = task._bodies[0]  # floor 0, pillar 0: welds 0 (foot) and 1 (head)
    task.data.xfrc_applied[pillar, :3] = [200.0, 0.0, 0.0]  # far past 30 N
    _, _, _, _, info = env.step(np.zeros(4))
    assert info["weld_broken"][:2].all() and info["broken_welds"] >= 2
    assert not task.data.eq_active[:2].any()
    task.data.xfrc_applied[pillar] = 0.0
    for _ in range(20):  # the load is gone; the welds stay broken
        _, _, terminated, _, info = env.step(np.zeros(4))
        assert info["weld_broken"][:2].all() and not task.data.eq_active[:2].any()
        if terminated:
            break
    env.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_untouched_building_stands_still_for_the_episode(seed):
    env = make()
    start, _ = env.reset(seed=seed)
    for _ in range(150):
        obs, reward, terminated, truncated, info = env.step(np.zeros(4))
        assert not terminated and info["broken_welds"] == 0
    assert truncated  # the registered time limit
    positions = collapse.state_blocks(obs)[0]
    np.testing.assert_allclose(positions, collapse.state_blocks(start)[0], atol=2e-3)
    assert info["height"] == pytest.approx(start[9], abs=2e-3)  # vs the height at reset
    assert abs(reward) < 1e-4  # no energy lost, no action cost
    env.close()


def test_reported_physics_match_the_configured_ranges():
    ranges = CollapseRandomization(
        floors=(3, 3), rows=(2, 2), density=(400.0, 500.0), friction=(0.6, 0.7), strength=(25, 35)
    )
    env = make(randomization=ranges)
    for seed in range(3):
        _, info = env.reset(seed=seed)
        world = info["physics"]
        assert world["floors"] == 3 and world["rows"] == 2
        assert len(world["blocks"]) == 15 and len(world["welds"]) == 24
        assert np.all((25 <= world["strength"]) & (world["strength"] <= 35))
        assert world["strength"].shape == (24,) and np.unique(world["strength"]).size == 24
        density = world["masses"] / collapse.volumes(world["half_extents"], world["blocks"])
        assert np.all((400 <= density) & (density <= 500))
        assert 0.6 <= world["friction"] <= 0.7
        task = env.unwrapped
        np.testing.assert_allclose(task._strength[world["welds"]], world["strength"])
        np.testing.assert_allclose(
            task.model.body_mass[task._bodies[world["blocks"]]], world["masses"]
        )
    env.close()


def test_weld_rows_open_the_constraint_forces_in_equality_order():
    """The breaking check reads efc_force by position; this is the layout it relies on."""
    env = make()
    env.reset(seed=4)
    env.action_space.seed(4)
    task = env.unwrapped
    for _ in range(40):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        rows = 6 * task._intact.size
        equality = mujoco.mjtConstraint.mjCNSTR_EQUALITY
        assert np.all(task.data.efc_type[:rows] == equality)
        assert not np.any(task.data.efc_type[rows:] == equality)
        np.testing.assert_array_equal(task.data.efc_id[:rows], np.repeat(task._intact, 6))
        if terminated or truncated:
            break
    env.close()


def test_a_reset_does_not_depend_on_earlier_episodes():
    def rollout(env, seed):
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        return [obs] + [env.step(env.action_space.sample())[0] for _ in range(10)]

    fresh, used = make(), make()
    rollout(used, 11)  # a different building first
    for a, b in zip(rollout(fresh, 3), rollout(used, 3), strict=True):
        np.testing.assert_array_equal(a, b)
    fresh.close()
    used.close()


def test_the_kerb_bounds_the_site():
    model = make().unwrapped.model
    right, back = model.geom("kerb_right"), model.geom("kerb_back")
    inner = [model.geom_pos[right.id][0] - right.size[0], model.geom_pos[back.id][1] - back.size[1]]
    np.testing.assert_allclose(inner, collapse.SITE_HALF)


def test_invalid_randomization_is_refused():
    with pytest.raises(ValueError, match="floors"):
        CollapseRandomization(floors=(2, 5))
    with pytest.raises(ValueError, match="rows"):
        CollapseRandomization(rows=(0, 2))


def test_block_tops_agree_with_mujoco():
    """The state's quaternions give the same rotations, so the expert sees the env's heights."""
    env = make()
    env.reset(seed=5)
    env.action_space.seed(5)
    for _ in range(30):
        obs, *_ = env.step(env.action_space.sample())
    task = env.unwrapped
    _, quats, used = collapse.state_blocks(obs)
    np.testing.assert_allclose(
        collapse.rotation_matrices(quats[used].astype(np.float64)),
        task.data.xmat[task._bodies[used]].reshape(-1, 3, 3),
        atol=1e-6,
    )
    env.close()
