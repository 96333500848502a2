"""Phys-Collapse-v0 on MuJoCo: a demolition ram brings down a building whose welds break."""

from __future__ import annotations

import mujoco
import numpy as np

from wm_envs.assets import ASSETS
from wm_envs.tasks import collapse
from wm_envs.tasks.base import Evaluation, PhysicsTaskEnv
from wm_envs.tasks.collapse import CollapseRandomization
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
    | 10      | number of broken welds |
    | 11-13   | pillar half extents (radius, radius, centre to tip), m |
    | 14-16   | slab half extents, m |
    | 17-176  | 20 block slots x (position xyz, quaternion wxyz, used mask) |
    | 177-208 | 32 weld slots: 1 intact, 0 broken or unused |

    ## Rewards
    ``(E_prev - E) / E_0 - 0.001 * mean(action^2)``: the potential energy the blocks lost this
    step (masses times centre heights above the ground), normalised by its value at reset,
    minus a small action cost. Over an episode the first term sums to ``1 - E_end / E_0``:
    about 0.7-0.8 for a building brought to the ground.

    ## Starting State
    The building stands at rest, its centre drawn in a 4 x 4 cm square around (0.05, 0), all
    welds intact; the ram carriage at (-0.3, 0, 0.12) with the head retracted.
    ``info["physics"]`` reports the draw (``CollapseWorld``: layout, sizes, masses, friction,
    weld strengths); every step's info has ``height`` (m), ``broken_welds`` (count) and
    ``weld_broken`` (bool per weld slot).

    ## Episode End
    Terminated on success: the structure's height is at most 40% of its height at reset (it
    has lost at least 60%; ``info["is_success"]``). Height is the highest point of any block
    still on the site: a block thrown over the kerb no longer counts. Truncated after 150
    steps (registration).

    ## Arguments
    ``obs_mode``, ``image_size``, ``render_mode`` ("rgb_array"), ``width``/``height`` of
    ``render()``, ``randomization`` (a ``CollapseRandomization``: narrow ranges = a fixed
    world).
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
    ) -> None:
        super().__init__(obs_mode, image_size, render_mode, width, height)
        self.randomization = randomization or CollapseRandomization()
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
        self._intact = np.zeros(0, int)  # intact weld slots (= equality ids), ascending
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
        """Weld each used pillar to its slabs (or the ground) where they touch at rest."""
        positions = np.zeros((collapse.MAX_BLOCKS + 1, 3))  # the last row: the ground
        positions[world.blocks] = world.positions
        self.data.eq_active[:] = 0
        for weld in world.welds:
            pillar, slab = collapse.weld_ends(weld)
            end = 1.0 if weld % 2 else -1.0  # head or foot
            joint = positions[pillar] + (0.0, 0.0, end * self._half_extents[pillar, 2])
            # eq_data: the joint in the slab's frame, in the pillar's, relative quaternion
            offsets = [*(joint - positions[slab]), *(joint - positions[pillar])]
            self.model.eq_data[weld, :10] = [*offsets, 1.0, 0.0, 0.0, 0.0]
            self.data.eq_active[weld] = 1
        self._intact = world.welds.copy()
        self._strength[:] = 0.0
        self._strength[world.welds] = world.strength

    def _apply_action(self, action: np.ndarray) -> None:
        target = self._target + collapse.MAX_DELTA * action[:3]
        self._target = np.minimum(np.maximum(target, collapse.RAM_LOW), collapse.RAM_HIGH)
        self.data.ctrl[:] = [*self._target, action[3]]
        self._action_cost = collapse.ACTION_COST * float(np.mean(action * action))
        for _ in range(self.frame_skip):
            mujoco.mj_step(self.model, self.data)
            self._break_overloaded_welds()

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
        broken = force + torque / collapse.WELD_LEVER > self._strength[intact]
        if broken.any():
            self.data.eq_active[intact[broken]] = 0
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
