"""Phys-Collapse-v0 on MuJoCo: a demolition ram brings down a building whose welds break."""

from __future__ import annotations

import mujoco
import numpy as np

from wm_envs.assets import ASSETS
from wm_envs.tasks import collapse
from wm_envs.tasks.base import Evaluation, PhysicsTaskEnv
from wm_envs.tasks.collapse import CollapseRandomization, ViscoelasticJoint
from wm_envs.tasks.experts import CollapseExpert
from wm_envs.tasks.mujoco_base import MujocoRenderer

_HIDDEN_GROUP = 3  # render group of the blocks a layout does not use
_PILLAR_RGBA = (0.8, 0.3, 0.25, 1.0)
_SLAB_RGBA = (0.9, 0.85, 0.7, 1.0)


def block_name(slot: int) -> str:
    floor, i = divmod(slot, collapse.BLOCKS_PER_FLOOR)
    return f"floor{floor}_" + ("slab" if i == collapse.PILLARS_PER_FLOOR else f"pillar{i}")


def build_model() -> mujoco.MjModel:
    """The scene of ``collapse.xml`` plus every block and weld of the largest building.

    Blocks start parked out of sight (below the floor, spread apart); a reset moves the ones
    its layout uses into place. Weld ``w`` is equality ``w``; each starts inactive.
    """
    spec = mujoco.MjSpec.from_file(str(ASSETS / "collapse.xml"))
    block, weld_class = spec.find_default("block"), spec.find_default("weld")
    for slot in range(collapse.MAX_BLOCKS):
        pillar = collapse.IS_PILLAR[slot]
        body = spec.worldbody.add_body(name=block_name(slot), pos=[0.1 * slot, 0.0, -1.0])
        body.add_freejoint()
        body.add_geom(
            default=block,
            name=block_name(slot),
            type=mujoco.mjtGeom.mjGEOM_CAPSULE if pillar else mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.02, 0.02, 0.02],
            rgba=_PILLAR_RGBA if pillar else _SLAB_RGBA,
        )
    for weld in range(collapse.MAX_WELDS):
        pillar, slab = collapse.weld_ends(weld)
        spec.add_equality(
            default=weld_class,
            name=f"{block_name(pillar)}_{'head' if weld % 2 else 'foot'}",
            type=mujoco.mjtEq.mjEQ_WELD,
            objtype=mujoco.mjtObj.mjOBJ_BODY,
            name1=block_name(pillar),
            name2=block_name(slab) if slab >= 0 else "",  # "": the world, i.e. the ground
            active=0,
        )
    return spec.compile()


def relative_rotation(pillar: np.ndarray, slab: np.ndarray) -> np.ndarray:
    """Rotation vectors [n, 3] (axis times angle, rad, world axes) of rotation matrices
    ``pillar`` [n, 3, 3] relative to ``slab`` [n, 3, 3]: how far a bond has turned from rest,
    where both were aligned. The log map of ``pillar slab^T`` (exact up to a half turn)."""
    turn = pillar @ slab.transpose(0, 2, 1)  # [n, 3, 3]
    sine = 0.5 * np.stack(
        [
            turn[:, 2, 1] - turn[:, 1, 2],
            turn[:, 0, 2] - turn[:, 2, 0],
            turn[:, 1, 0] - turn[:, 0, 1],
        ],
        axis=1,
    )  # [n, 3] sin(angle) times the axis
    cosine = 0.5 * (turn[:, 0, 0] + turn[:, 1, 1] + turn[:, 2, 2] - 1.0)
    norm = np.sqrt((sine * sine).sum(axis=1))
    return (np.arctan2(norm, cosine) / np.maximum(norm, 1e-12))[:, None] * sine


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of [..., 3] arrays, a few times faster on the few dozen rows of a substep."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


class CollapseMujocoEnv(PhysicsTaskEnv):
    """Bring down a building of welded blocks with a demolition ram.

    ## Description
    A building of 2-4 floors stands on a kerbed site: on each floor 2 or 4 capsule pillars
    carry a box slab. Every pillar is welded at its foot (to the slab below, or the ground)
    and at its head (to its slab). A weld is an elastic MuJoCo weld constraint with a breaking
    strength: after every physics substep the load on each intact weld is read from its six
    constraint rows (``data.efc_force``), ``|force| + |torque| / 2.5 cm`` in newtons, and a
    weld loaded past its strength is switched off for good (``data.eq_active``). The rounded
    pillar ends cannot carry a load unwelded, so the building fails progressively once its
    joints go; loose blocks keep colliding. The check runs every substep because an impact
    peaks within a few milliseconds, which a once-per-control-step check (one substep in 20)
    would mostly miss; vectorised over the weld rows it costs ~5% of the substep. A ram -- a
    carriage on three position-controlled slides (force-limited, gravity-compensated) holding a
    head that a motor thrusts along +x against a return spring -- stands to the left. Each
    episode draws floors, rows, block sizes and spacing, per-block densities, the friction and
    per-weld strengths. The front camera frames site and ram: at 64x64 a pillar is ~5 px wide.

    With ``joint_model="viscoelastic"`` each joint is a bond with an explicit stress law
    instead (``ViscoelasticJoint``): a Kelvin-Voigt solid, ``sigma = E eps + eta d(eps)/dt``,
    that breaks for good once its peak strain reaches ``eps_critical``. Its strain is the
    relative displacement of its two anchor points (the pillar's end and the slab's point it
    rests on, which coincide at reset) and its relative rotation times the pillar radius, over
    the bond's rest length ``L``; it carries ``F = A sigma`` and a bending torque ``I sigma / r``.
    The force is computed from each substep's kinematics (``mj_step1``) and applied through
    ``xfrc_applied`` with no weld constraint active, so a bond's stress is the law's and no
    solver's: a MuJoCo weld's force is whatever holds its constraint (set by its solver time
    constant and the bodies' masses), not E times a strain. The weld model is the default: the
    datasets, shipped twins and expert figures come from it, its implicit constraint holds a
    pillar stiffly whatever its mass, and it steps about twice as fast. Explicit bonds must be
    soft (E = 20 kPa) to stay stable on 2 ms substeps. ``benchmarks/collapse_joints.py``
    measures both side by side. Spaces, state layout, reward and success are the same.

    ## Action Space
    ``Box(-1, 1, (4,), float32)``: ram target displacement dx, dy, dz (1 = 2 cm per step, the
    target is kept inside the workspace) and the strike: the head's motor force along +x,
    ``60 N x strike`` over an 8 cm stroke (a 150 N/m spring pulls the head back; negative
    retracts it harder). A strike hits hardest with a run-up: the head reaches ~3.4 m/s over
    5 cm. Out-of-range values are clipped; a wrong shape or a NaN/inf raises ``ValueError``.

    ## Observation Space
    ``obs_mode="dict"`` (default): ``{"image": uint8 (S, S, 3), "state": float32 (209,)}``;
    ``"state"``: the vector alone; ``"pixels"``: the image alone; ``"rgbd"``: dict plus
    ``"depth"``: float32 (S, S, 1) in metres. ``S = image_size`` (64). State layout (block and
    weld slots as in ``wm_envs.tasks.collapse``; unused slots are zeros):

    | index   | meaning |
    |---------|---------|
    | 0-2     | ram carriage position, m |
    | 3-5     | ram carriage velocity, m/s |
    | 6       | strike: head extension, m (0 to 0.08) |
    | 7       | strike: head velocity, m/s |
    | 8       | structure height now (highest point of any block on the site), m |
    | 9       | structure height at reset, m |
    | 10      | number of broken joints (welds or bonds) |
    | 11-13   | pillar half extents (radius, radius, centre to tip), m |
    | 14-16   | slab half extents, m |
    | 17-176  | 20 block slots x (position xyz, quaternion wxyz, used mask) |
    | 177-208 | 32 joint slots: 1 intact, 0 broken or unused |

    ## Rewards
    ``(E_prev - E) / E_0 - 0.001 * mean(action^2)``: the potential energy the blocks lost this
    step (masses times centre heights above the ground), normalised by its value at reset,
    minus a small action cost. Over an episode the first term sums to ``1 - E_end / E_0``:
    about 0.7-0.8 for a building brought to the ground.

    ## Starting State
    The building stands at rest, its centre drawn in a 4 x 4 cm square around (0.05, 0), all
    welds intact; the ram carriage at (-0.3, 0, 0.12) with the head retracted.
    ``info["physics"]`` reports the draw (``CollapseWorld``: layout, sizes, masses, friction,
    weld strengths, which only the weld model uses); every step's info has ``height`` (m),
    ``broken_welds`` (count) and ``weld_broken`` (bool per weld slot), for either model.
    The strengths are in no observation; ``redraw_strengths`` draws the intact welds' again
    from what the episode so far tells of them, to ask how far an outcome is decided by what
    can be seen (``benchmarks/collapse_hidden.py``).

    ## Episode End
    Terminated on success: the structure's height is at most 40% of its height at reset (it
    has lost at least 60%; ``info["is_success"]``). Height is the highest point of any block
    still on the site: a block thrown over the kerb no longer counts. Truncated after 150
    steps (registration).

    ## Arguments
    ``obs_mode``, ``image_size``, ``render_mode`` ("rgb_array"), ``width``/``height`` of
    ``render()``, ``randomization`` (a ``CollapseRandomization``: narrow ranges = a fixed
    world), ``joint_model`` (``"weld"``, the default, or ``"viscoelastic"``),
    ``joint_material`` (a ``ViscoelasticJoint``, viscoelastic only; by default E = 20 kPa,
    eta = 10 Pa s, eps_critical = 0.6, L = 1 cm).
    """

    state_dim = collapse.STATE_DIM
    action_dim = 4
    expert_class = CollapseExpert

    def __init__(
        self,
        obs_mode: str = "dict",
        image_size: int = 64,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
        randomization: CollapseRandomization | None = None,
        joint_model: str = "weld",
        joint_material: ViscoelasticJoint | None = None,
    ) -> None:
        if joint_model not in collapse.JOINT_MODELS:
            raise ValueError(
                f"joint_model must be one of {collapse.JOINT_MODELS}, got {joint_model!r}"
            )
        if joint_material is not None and joint_model != "viscoelastic":
            raise ValueError(
                f"joint_material is for joint_model='viscoelastic', got {joint_model!r}"
            )
        if joint_material is not None and not isinstance(joint_material, ViscoelasticJoint):
            raise ValueError(
                f"joint_material must be a ViscoelasticJoint, got {type(joint_material).__name__}"
            )
        super().__init__(obs_mode, image_size, render_mode, width, height)
        self.randomization = randomization or CollapseRandomization()
        self.joint_model = joint_model
        viscoelastic = joint_model == "viscoelastic"
        self.joint_material = (joint_material or ViscoelasticJoint()) if viscoelastic else None
        self.model = model = build_model()
        self.data = mujoco.MjData(model)
        self.frame_skip = round(collapse.CONTROL_DT / model.opt.timestep)
        self.renderer = MujocoRenderer(model, "front", hidden_groups=(_HIDDEN_GROUP,))
        names = [block_name(slot) for slot in range(collapse.MAX_BLOCKS)]
        self._bodies = np.array([model.body(name).id for name in names])
        self._geoms = np.array([model.geom(name).id for name in names])
        self._qpos = model.jnt_qposadr[model.body_jntadr[self._bodies]]
        # what a reset restores in every slot before sizing the used ones, so that unused
        # slots never carry an earlier episode's values into the model (and its statistics)
        self._parked = [
            (getattr(model, name), index, getattr(model, name)[index].copy())
            for name, index in [
                ("geom_size", self._geoms),
                ("geom_rbound", self._geoms),
                ("geom_aabb", self._geoms),
                ("geom_friction", self._geoms),
                ("body_mass", self._bodies),
                ("body_inertia", self._bodies),
            ]
        ]
        self._world: collapse.CollapseWorld | None = None
        self._used = np.zeros(collapse.MAX_BLOCKS, bool)
        self._half_extents = np.zeros((collapse.MAX_BLOCKS, 3))
        self._strength = np.zeros(collapse.MAX_WELDS)
        self._peak_load = np.zeros(collapse.MAX_WELDS)  # the most each weld has carried, N
        self._intact = np.zeros(0, int)  # intact weld slots (= equality ids), ascending
        # per weld slot: the bodies it joins (pillar, slab; the ground is the world body 0)
        # and the joint in each one's frame, m (the viscoelastic bonds' anchors)
        ends = [collapse.weld_ends(weld) for weld in range(collapse.MAX_WELDS)]
        self._weld_bodies = np.array(
            [[self._bodies[p], self._bodies[s] if s >= 0 else 0] for p, s in ends]
        )
        self._end_bodies = np.zeros((collapse.MAX_WELDS, 2, model.nbody))  # one-hot
        np.put_along_axis(self._end_bodies, self._weld_bodies[:, :, None], 1.0, axis=2)
        self._anchors = np.zeros((collapse.MAX_WELDS, 2, 3))
        self._wrench = np.zeros((model.nbody, 6))  # the bonds' share of data.xfrc_applied
        self._target = collapse.RAM_START.copy()
        self._energy = self._energy_at_reset = 1.0
        self._action_cost = 0.0

    # -- physics --------------------------------------------------------------------------
    def _reset_physics(self, options: dict | None) -> dict:
        model, data = self.model, self.data
        world = self._world = collapse.draw_world(self.np_random, self.randomization)
        self._used[:] = False
        self._used[world.blocks] = True
        self._half_extents[:] = 0.0
        self._half_extents[world.blocks] = world.half_extents
        geoms, bodies = self._geoms[world.blocks], self._bodies[world.blocks]
        model.geom_contype[self._geoms] = model.geom_conaffinity[self._geoms] = 3 * self._used
        model.geom_group[self._geoms] = np.where(self._used, 0, _HIDDEN_GROUP)
        model.body_gravcomp[self._bodies] = ~self._used  # parked blocks float in place
        for field, index, values in self._parked:
            field[index] = values
        half, pillars = world.half_extents, collapse.IS_PILLAR[world.blocks]
        capsules = np.stack([half[:, 0], half[:, 2] - half[:, 0], np.zeros(len(half))], axis=1)
        model.geom_size[geoms] = np.where(pillars[:, None], capsules, half)
        model.geom_rbound[geoms] = np.where(pillars, half[:, 2], np.linalg.norm(half, axis=1))
        model.geom_aabb[geoms, 3:] = half
        model.geom_friction[geoms, 0] = world.friction
        model.body_mass[bodies] = world.masses
        model.body_inertia[bodies] = collapse.inertias(half, world.masses, world.blocks)
        mujoco.mj_resetData(model, data)
        mujoco.mj_setConst(model, data)
        for position, address in zip(world.positions, self._qpos[world.blocks], strict=True):
            data.qpos[address : address + 7] = [*position, 1.0, 0.0, 0.0, 0.0]
        data.qpos[:3] = collapse.RAM_START
        self._set_welds(world)
        self._target = collapse.RAM_START.copy()
        data.ctrl[:] = [*self._target, 0.0]
        mujoco.mj_forward(model, data)
        self._energy = self._energy_at_reset = self._potential_energy()
        self._action_cost = 0.0
        return world.as_info()

    def _set_welds(self, world: collapse.CollapseWorld) -> None:
        """Join each used pillar to its slabs (or the ground) where they touch at rest: a
        weld constraint, or (viscoelastic) a bond whose anchors are that point."""
        positions = np.zeros((collapse.MAX_BLOCKS + 1, 3))  # the last row: the ground
        positions[world.blocks] = world.positions
        self.data.eq_active[:] = 0
        self._anchors[:] = 0.0
        for weld in world.welds:
            pillar, slab = collapse.weld_ends(weld)
            end = 1.0 if weld % 2 else -1.0  # head or foot
            joint = positions[pillar] + (0.0, 0.0, end * self._half_extents[pillar, 2])
            self._anchors[weld] = [joint - positions[pillar], joint - positions[slab]]
            if self.joint_model == "weld":
                # eq_data: the joint in the slab's frame, in the pillar's, relative quaternion
                offsets = [*self._anchors[weld, 1], *self._anchors[weld, 0]]
                self.model.eq_data[weld, :10] = [*offsets, 1.0, 0.0, 0.0, 0.0]
                self.data.eq_active[weld] = 1
        self._intact = world.welds.copy()
        self._peak_load[:] = 0.0
        self._strength[:] = 0.0
        self._strength[world.welds] = world.strength
        self._wrench[:] = 0.0  # mj_resetData has cleared xfrc_applied

    def _apply_action(self, action: np.ndarray) -> None:
        target = self._target + collapse.MAX_DELTA * action[:3]
        self._target = np.minimum(np.maximum(target, collapse.RAM_LOW), collapse.RAM_HIGH)
        self.data.ctrl[:] = [*self._target, action[3]]
        self._action_cost = collapse.ACTION_COST * float(np.mean(action * action))
        for _ in range(self.frame_skip):
            if self.joint_model == "weld":
                mujoco.mj_step(self.model, self.data)
                self._break_overloaded_welds()
            else:  # the bonds' forces depend on this substep's kinematics (mj_step1)
                mujoco.mj_step1(self.model, self.data)
                self._apply_bond_forces()
                mujoco.mj_step2(self.model, self.data)

    def redraw_strengths(self, seed: int) -> None:
        """Draw the strengths of the welds still intact again, from the prior above the most
        each has carried so far (it has not broken: the posterior given the episode so far).
        Only the ``"weld"`` joint model has strengths. What can an observer who knows all but
        the strengths tell of the rest of the episode (``benchmarks/collapse_hidden.py``)?"""
        if self.joint_model != "weld":
            raise ValueError(f"only the 'weld' joint model has strengths, not {self.joint_model!r}")
        low, high = self.randomization.strength
        floor = np.clip(self._peak_load[self._intact], low, high)
        rng = np.random.default_rng(seed)
        self._strength[self._intact] = rng.uniform(floor, high)

    def _break_overloaded_welds(self) -> None:
        """Switch off every intact weld whose load exceeded its strength in the last substep.

        Active welds are the only equality constraints, so their rows open ``efc_force`` in
        equality-id order, six per weld: force xyz, then rotation rows whose torque is half
        the row force (the weld's orientation error is a half-angle quaternion).
        """
        intact = self._intact
        if intact.size == 0:
            return
        rows = self.data.efc_force[: 6 * intact.size].reshape(-1, 6)  # [n_intact, 6]
        squared = rows * rows
        force = np.sqrt(squared[:, :3].sum(axis=1))
        torque = 0.5 * np.sqrt(squared[:, 3:].sum(axis=1))
        load = force + torque / collapse.WELD_LEVER
        self._peak_load[intact] = np.maximum(self._peak_load[intact], load)
        broken = load > self._strength[intact]
        if broken.any():
            self.data.eq_active[intact[broken]] = 0
            self._intact = intact[~broken]

    def _apply_bond_forces(self) -> None:
        """Apply the intact viscoelastic bonds' forces for this substep; break for good every
        bond whose peak strain reached the critical one (``ViscoelasticJoint``).

        Strain is read from the kinematics ``mj_step1`` has just computed: anchor positions
        and velocities, and the rotations of pillar and slab. Each bond's force and torque act
        equal and opposite on its two bodies at the midpoint of its anchors, so momentum and
        angular momentum balance. They go through ``xfrc_applied``, replacing the previous
        substep's share and keeping anything else applied there.
        """
        data, material, intact = self.data, self.joint_material, self._intact
        bodies = self._weld_bodies[intact]  # [n, 2] pillar, slab
        rotations = data.xmat[bodies].reshape(-1, 2, 3, 3)
        anchors = data.xpos[bodies] + (rotations @ self._anchors[intact, :, :, None])[..., 0]
        # [n, 2, 3] each: world axes, the linear velocity at the body's subtree_com
        spin, linear = data.cvel[bodies, :3], data.cvel[bodies, 3:]
        moving = linear + cross(spin, anchors - data.subtree_com[bodies])  # anchor velocities
        turn = relative_rotation(rotations[:, 0], rotations[:, 1])  # [n, 3]
        radius = self._half_extents[0, 0]
        scale = np.repeat([1.0, radius], 3) / material.gauge_length  # [6]
        strain = np.hstack([anchors[:, 0] - anchors[:, 1], turn]) * scale  # [n, 6]
        rate = np.hstack([moving[:, 0] - moving[:, 1], spin[:, 0] - spin[:, 1]]) * scale
        # force (area) and torque (second moment over radius) on the pillar; minus on the slab
        section = np.repeat([np.pi * radius**2, np.pi * radius**3 / 4], 3)
        load = -material.stress(strain, rate) * section  # [n, 6] N, N m
        load = load[:, None] * np.array([1.0, -1.0])[None, :, None]  # [n, 2, 6]
        arms = anchors.mean(axis=1, keepdims=True) - data.xipos[bodies]  # [n, 2, 3]
        load[..., 3:] += cross(arms, load[..., :3])  # torque about each body's centre of mass
        ends = self._end_bodies[intact].reshape(-1, self.model.nbody)  # [2 n, nbody]
        wrench = ends.T @ load.reshape(-1, 6)  # [nbody, 6]
        wrench[0] = 0.0  # the ground takes its share without moving
        data.xfrc_applied += wrench - self._wrench
        self._wrench = wrench
        broken = collapse.peak_strain(strain) >= material.critical_strain
        if broken.any():
            self._intact = intact[~broken]

    def _potential_energy(self) -> float:
        heights = self.data.xipos[self._bodies[self._used], 2]
        return collapse.GRAVITY * float(self.model.body_mass[self._bodies[self._used]] @ heights)

    def _height(self) -> float:
        """Highest point of any block still on the site, m (0 once none is)."""
        slots = np.flatnonzero(self._used & collapse.on_site(self.data.xpos[self._bodies]))
        bodies = self._bodies[slots]
        rotations = self.data.xmat[bodies].reshape(-1, 3, 3)
        extents = collapse.block_extents(rotations, self._half_extents[slots], slots)
        return float((self.data.xpos[bodies, 2] + extents[:, 2]).max(initial=0.0))

    def state_vector(self) -> np.ndarray:
        data, world = self.data, self._world
        blocks = np.zeros((collapse.MAX_BLOCKS, 8))
        blocks[:, :3] = data.xpos[self._bodies]
        blocks[:, 3:7] = data.xquat[self._bodies]
        blocks[:, 7] = self._used
        blocks[~self._used] = 0.0
        intact = np.zeros(collapse.MAX_WELDS)
        intact[self._intact] = 1.0
        return np.concatenate(
            [
                data.qpos[:3],
                data.qvel[:3],
                data.qpos[3:4],
                data.qvel[3:4],
                (self._height(), world.height, world.welds.size - self._intact.size),
                self._half_extents[0],  # floor 0 always has pillar 0 and its slab
                self._half_extents[collapse.PILLARS_PER_FLOOR],
                blocks.ravel(),
                intact,
            ]
        ).astype(np.float32)

    def _evaluate(self) -> Evaluation:
        world = self._world
        energy = self._potential_energy()
        reward = (self._energy - energy) / self._energy_at_reset - self._action_cost
        self._energy = energy
        height = self._height()
        weld_broken = np.zeros(collapse.MAX_WELDS, bool)
        weld_broken[world.welds] = True
        weld_broken[self._intact] = False
        info = {
            "height": height,
            "broken_welds": int(weld_broken.sum()),
            "weld_broken": weld_broken,
        }
        return Evaluation(reward, height <= collapse.HEIGHT_KEPT * world.height, False, info)

    def _render(self, width: int, height: int, depth: bool = False) -> np.ndarray:
        return self.renderer(self.data, width, height, depth)

    def close(self) -> None:
        self.renderer.close()
