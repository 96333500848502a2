"""Phys-Collapse-v0: welds that break and stay broken, a building that stands when left alone,
and the viscoelastic joints' law and breaking strain."""

import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wm_envs  # noqa: F401  (registers the envs)
from wm_envs.tasks import collapse
from wm_envs.tasks.collapse import CollapseRandomization, ViscoelasticJoint
from wm_envs.tasks.collapse_mujoco import relative_rotation


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


@pytest.mark.parametrize("joint_model", collapse.JOINT_MODELS)
@pytest.mark.parametrize("seed", [0, 1, 2])  # 4 floors of 2 rows (the heaviest), 3 x 2, 4 x 1
def test_an_untouched_building_stands_still_for_the_episode(seed, joint_model):
    env = make(joint_model=joint_model)
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


def test_redrawn_strengths_stay_above_what_each_intact_weld_has_carried():
    env = make()
    env.reset(seed=5)
    for _ in range(40):  # load the welds a little, without breaking them all
        env.step(env.action_space.sample() * 0)
    physics = env.unwrapped
    intact, carried = physics._intact, physics._peak_load[physics._intact]
    assert intact.size and carried.max() > 0
    own = physics._strength.copy()
    physics.redraw_strengths(1)
    redrawn = physics._strength[intact]
    low, high = CollapseRandomization().strength
    assert np.all((np.maximum(carried, low) <= redrawn) & (redrawn <= high))
    assert not np.allclose(redrawn, own[intact])
    broken = np.setdiff1d(np.arange(collapse.MAX_WELDS), intact)
    np.testing.assert_array_equal(physics._strength[broken], own[broken])  # broken stay so
    physics.redraw_strengths(1)
    np.testing.assert_array_equal(physics._strength[intact], redrawn)  # the seed decides
    env.close()
    with pytest.raises(ValueError, match="only the 'weld' joint model"):
        make(joint_model="viscoelastic").unwrapped.redraw_strengths(0)


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


def test_the_viscoelastic_law_on_known_numbers():
    material = ViscoelasticJoint(young_modulus=1e4, viscosity=10.0, critical_strain=0.2)
    strain = np.array([[0.1, 0.0, 0.0, 0.0, 0.05, 0.0], [0.15, 0.0, 0.0, 0.0, 0.06, 0.0]])
    rate = np.array([[2.0, 0.0, 0.0, 0.0, -1.0, 0.0], [2.0, 0.0, 0.0, 0.0, -1.0, 0.0]])
    np.testing.assert_allclose(collapse.peak_strain(strain), [0.15, 0.21])
    stress = material.stress(strain, rate)  # sigma = E eps + eta d(eps)/dt, Pa
    np.testing.assert_allclose(stress[0], [1e3 + 20.0, 0.0, 0.0, 0.0, 500.0 - 10.0, 0.0])
    np.testing.assert_array_equal(stress[1], np.zeros(6))  # peak 0.21 >= 0.2: broken
    shear = np.array([[0.03, 0.04, 0.0, 0.0, 0.0, 0.05]])  # |(0.03, 0.04, 0)| + 0.05
    np.testing.assert_allclose(collapse.peak_strain(shear), [0.1])


def test_relative_rotation_is_the_turn_between_the_frames():
    def about_z(angle):
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    tilt = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # 90 deg about x
    pillars = np.stack([about_z(0.3), about_z(0.5) @ tilt, tilt])
    slabs = np.stack([np.eye(3), about_z(0.5) @ tilt, np.eye(3)])
    turns = relative_rotation(pillars, slabs)
    np.testing.assert_allclose(turns, [[0, 0, 0.3], [0, 0, 0], [np.pi / 2, 0, 0]], atol=1e-12)


def test_a_viscoelastic_bond_pulls_back_with_its_stiffness():
    """Shift a ground-floor pillar sideways at rest: its two bonds (foot and head) pull it
    back with 2 E A / L times the shift, A the pillar's cross-section, and no torque."""
    material = ViscoelasticJoint()
    env = make(joint_model="viscoelastic")
    env.reset(seed=0)
    task = env.unwrapped
    pillar = task._bodies[0]
    shift = 0.5 * material.critical_strain * material.gauge_length
    task.data.qpos[task._qpos[0]] += shift
    mujoco.mj_forward(task.model, task.data)
    task._apply_bond_forces()
    area = np.pi * task._half_extents[0, 0] ** 2
    stiffness = material.young_modulus * area / material.gauge_length
    np.testing.assert_allclose(
        task._wrench[pillar], [-2 * stiffness * shift, 0, 0, 0, 0, 0], atol=1e-9
    )
    np.testing.assert_array_equal(task.data.xfrc_applied[pillar], task._wrench[pillar])
    assert task._intact.size == len(task._world.welds)  # below the critical strain
    env.close()


@pytest.mark.parametrize("factor", [0.5, 1.5])
def test_a_bond_strained_past_its_critical_strain_breaks_for_good(factor):
    """Shift a ground-floor pillar by a factor of the breaking displacement: below 1 its
    bonds hold; past it both break at once, apply no force and stay broken once it is back."""
    material = ViscoelasticJoint()
    env = make(joint_model="viscoelastic")
    env.reset(seed=0)
    task = env.unwrapped
    pillar, address = task._bodies[0], task._qpos[0]  # floor 0, pillar 0: welds 0 and 1
    rest = task.data.qpos[address : address + 3].copy()
    task.data.qpos[address] += factor * material.critical_strain * material.gauge_length
    _, _, _, _, info = env.step(np.zeros(4))
    broken = factor > 1
    assert info["weld_broken"][:2].tolist() == [broken, broken]
    assert info["broken_welds"] == 2 * broken
    task.data.qpos[address : address + 3] = rest
    task.data.qvel[task.model.body_dofadr[pillar] :][:6] = 0.0
    for _ in range(20):  # back where it was bonded: a broken bond does not heal
        _, _, _, _, info = env.step(np.zeros(4))
        assert info["weld_broken"][:2].tolist() == [broken, broken]
    assert np.all(task._wrench[pillar] == 0.0) == broken
    env.close()


def test_jolted_light_pillars_settle_on_their_bonds():
    """The bonds are explicit forces: too stiff or too viscous for the 2 ms substep, and a
    pillar's rocking grows each substep until bonds break and blocks fly. With the defaults
    the lightest pillars the draw allows, jolted 0.3 mm sideways, settle and hold."""
    light = CollapseRandomization(
        density=(300.0, 300.0), pillar_radius=(0.026, 0.026), pillar_half_height=(0.045, 0.045)
    )
    env = make(joint_model="viscoelastic", randomization=light)
    for seed in range(4):
        for pillar in (0, 1):
            start, _ = env.reset(seed=seed)
            task = env.unwrapped
            task.data.qpos[task._qpos[pillar]] += 3e-4
            for _ in range(3):
                obs, _, _, _, info = env.step(np.zeros(4))
            assert info["broken_welds"] == 0
            moved = collapse.state_blocks(obs)[0] - collapse.state_blocks(start)[0]
            assert np.abs(moved).max() < 1e-3  # the jolt, and the sag under load
    env.close()


def test_the_viscoelastic_model_passes_check_env_with_the_same_spaces():
    weld = gym.make("Phys-Collapse-v0", render_mode="rgb_array")
    env = gym.make("Phys-Collapse-v0", render_mode="rgb_array", joint_model="viscoelastic")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught if "infinity" not in str(w.message)] == []
    assert env.observation_space == weld.observation_space
    assert env.action_space == weld.action_space
    obs, info = env.reset(seed=3)
    weld_obs, weld_info = weld.reset(seed=3)  # the same draw, the same layout
    np.testing.assert_array_equal(obs["state"], weld_obs["state"])
    assert info["physics"] == weld_info["physics"]
    env.close()
    weld.close()


def test_bad_joint_settings_are_refused():
    with pytest.raises(ValueError, match="joint_model"):
        make(joint_model="spring")
    with pytest.raises(ValueError, match="joint_material"):
        make(joint_material=ViscoelasticJoint())  # the weld model has no material
    with pytest.raises(ValueError, match="young_modulus"):
        ViscoelasticJoint(young_modulus=-1.0)
    with pytest.raises(ValueError, match="viscosity"):
        ViscoelasticJoint(viscosity=float("nan"))
    with pytest.raises(ValueError, match="critical_strain"):
        ViscoelasticJoint(critical_strain=0.0)
