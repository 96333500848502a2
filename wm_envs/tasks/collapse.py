"""Collapse: what the task is, independent of the engine that simulates it.

A building of pillars and slabs, 2-4 floors, whose joints are welds that break under load.
Pillars are capsules: their rounded ends cannot stand under a load on their own, so the
building holds only while its welds do, and a pillar whose welds break falls. Slabs are boxes.
Blocks live in fixed slots so the state vector has one size for every layout: floor ``f``
owns slots ``5 f .. 5 f + 4``, pillars first (0: -x -y, 1: +x -y, 2: -x +y, 3: +x +y; a
one-row floor uses pillars 0 and 1 at y = 0), then its slab. Each pillar has two welds: slot
``2 p`` joins its foot to the slab below (the ground on floor 0), slot ``2 p + 1`` its head to
the slab it carries, where ``p`` is the pillar's index over all floors (``4 f + i``).

A joint is one of two models (``JOINT_MODELS``): ``"weld"``, a stiff weld that breaks once
its load passes a strength (``CollapseWorld.strength``), or ``"viscoelastic"``, a
Kelvin-Voigt bond (``ViscoelasticJoint``) whose stress follows its strain until the strain
reaches a critical value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

MAX_FLOORS = 4
PILLARS_PER_FLOOR = 4
BLOCKS_PER_FLOOR = PILLARS_PER_FLOOR + 1
MAX_BLOCKS = MAX_FLOORS * BLOCKS_PER_FLOOR
MAX_WELDS = 2 * MAX_FLOORS * PILLARS_PER_FLOOR
#: Half size of the site inside the kerb, centred on the origin (x, y), metres. Blocks
#: thrown over the kerb have left the site and no longer count as standing structure.
SITE_HALF = np.array([0.33, 0.19])
#: Ram carriage workspace, metres; the carriage starts at RAM_START.
RAM_LOW = np.array([-0.3, -0.17, 0.03])
RAM_HIGH = np.array([0.15, 0.17, 0.45])
RAM_START = np.array([-0.3, 0.0, 0.12])
#: How far one action of magnitude 1 moves the ram target per control step, metres.
MAX_DELTA = 0.02
#: Carriage origin to the tip of the retracted ram head along +x, metres.
HEAD_REACH = 0.07
#: Lever turning a weld's torque into an equivalent force at the joint's edge, metres.
WELD_LEVER = 0.025
#: Success: the structure keeps at most this fraction of its initial height.
HEIGHT_KEPT = 0.4
ACTION_COST = 1e-3
CONTROL_DT = 0.04
GRAVITY = 9.81

#: How a pillar is joined to its slabs: a weld that breaks at a load, or a viscoelastic bond
#: that breaks at a strain (``ViscoelasticJoint``).
JOINT_MODELS = ("weld", "viscoelastic")

#: Which block slots hold pillars (the others hold slabs).
IS_PILLAR = np.arange(MAX_BLOCKS) % BLOCKS_PER_FLOOR < PILLARS_PER_FLOOR

HEADER_DIM = 17
STATE_DIM = HEADER_DIM + 8 * MAX_BLOCKS + MAX_WELDS


@dataclass(frozen=True)
class CollapseRandomization:
    """Ranges the building is drawn from at reset (integers inclusive). Narrow = fixed world."""

    floors: tuple[int, int] = (2, 4)
    rows: tuple[int, int] = (1, 2)  # pillar rows along y
    pillar_radius: tuple[float, float] = (0.026, 0.03)
    pillar_half_height: tuple[float, float] = (0.045, 0.055)  # centre to the tip of an end
    slab_half_thickness: tuple[float, float] = (0.01, 0.014)
    span_x: tuple[float, float] = (0.05, 0.08)  # half distance between pillar columns
    span_y: tuple[float, float] = (0.04, 0.07)  # half distance between pillar rows
    centre_x: tuple[float, float] = (0.03, 0.07)
    centre_y: tuple[float, float] = (-0.02, 0.02)
    density: tuple[float, float] = (300.0, 800.0)  # kg/m^3, drawn per block
    friction: tuple[float, float] = (0.5, 1.0)
    strength: tuple[float, float] = (20.0, 60.0)  # N, drawn per weld

    def __post_init__(self) -> None:
        if not 1 <= self.floors[0] <= self.floors[1] <= MAX_FLOORS:
            raise ValueError(f"floors must lie in [1, {MAX_FLOORS}], got {self.floors}")
        if not 1 <= self.rows[0] <= self.rows[1] <= 2:
            raise ValueError(f"rows must lie in [1, 2], got {self.rows}")


@dataclass(frozen=True)
class ViscoelasticJoint:
    """Material of a viscoelastic joint: a bond of length ``gauge_length`` and the pillar's
    cross-section, a Kelvin-Voigt solid that fails for good at a critical strain.

    Strain has six components (``[n, 6]`` arrays): the relative displacement of the joint's
    two anchor points, pillar end against slab (3, axial and shear alike), and the relative
    rotation's vector times the pillar radius (3, the bending strain of the bond's edge fibre;
    torsion alike), both divided by ``gauge_length``. Each component's stress is
    ``sigma = E eps + eta d(eps)/dt``; the bond carries ``F = A sigma`` (``A = pi r^2``) and
    ``tau = (I / r) sigma`` (``I = pi r^4 / 4``), which are Euler-Bernoulli's axial and bending
    stiffnesses ``E A / L`` and ``E I / L``. It fails when its peak strain (``peak_strain``:
    axial plus bending, the most strained fibre) reaches ``critical_strain``.

    The defaults are soft, a rubbery 20 kPa, and lightly damped because the bond is an
    explicit force on 2 ms physics steps (``dt``): a pillar rocking on its two bonds is stable
    only while about ``c (k dt + 2 b) < 4``, with ``c = 2 h^2 dt / J`` (``h``: centre to end,
    ``J``: its moment of inertia), stiffness ``k = E A / L`` and damping ``b = eta A / L``. On
    the lightest pillar (~50 g) the defaults use two thirds of that bound
    (``tests/test_collapse.py`` jolts such pillars; 40 Pa s, or 30 kPa at 20 Pa s, fail).
    A bond of a 2.8 cm pillar is then a ~5 kN/m spring that breaks at 6 mm of pull (~30 N,
    within the weld model's 20-60 N strengths) or ~12 degrees of bend. ``eta / E`` = 0.5 ms:
    in a strike the viscous stress peaks at about a tenth of the elastic one, at rest it is
    nil. With these buildings stand under gravity and a strike fails them in a cascade
    (``benchmarks/collapse_joints.py`` measures both beside the welds).
    """

    young_modulus: float = 2e4  # E, Pa
    viscosity: float = 10.0  # eta, Pa s
    critical_strain: float = 0.6  # eps_critical, dimensionless
    gauge_length: float = 0.01  # L, the bond's rest length, m

    def __post_init__(self) -> None:
        for name in ("young_modulus", "critical_strain", "gauge_length"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        if not (np.isfinite(self.viscosity) and self.viscosity >= 0):
            raise ValueError(f"viscosity must be non-negative and finite, got {self.viscosity}")

    def stress(self, strain: np.ndarray, strain_rate: np.ndarray) -> np.ndarray:
        """Stress [n, 6] in Pa of bonds with strain [n, 6] and its rate [n, 6] (1/s):
        ``E eps + eta d(eps)/dt`` while the bond's peak strain is below the critical one,
        0 from there on."""
        intact = peak_strain(strain) < self.critical_strain  # [n]
        law = self.young_modulus * strain + self.viscosity * strain_rate
        return np.where(intact[:, None], law, 0.0)


def peak_strain(strain: np.ndarray) -> np.ndarray:
    """Peak strain [n] of bonds with strain [n, 6]: the displacement strain plus the bending
    strain of the edge fibre (``ViscoelasticJoint``), as the strains of a beam's most strained
    fibre add up under axial load and bending."""
    squares = strain * strain
    return np.sqrt(squares[:, :3].sum(axis=1)) + np.sqrt(squares[:, 3:].sum(axis=1))


@dataclass(frozen=True)
class CollapseWorld:
    """One draw of the building: what ``info["physics"]`` reports at reset.

    Arrays run over the used slots only, in slot order (``blocks`` and ``welds`` name them).
    """

    floors: int
    rows: int
    blocks: np.ndarray  # used block slots, int
    half_extents: np.ndarray  # [n_blocks, 3] half sizes of the (bounding) box, m
    positions: np.ndarray  # [n_blocks, 3] centres at rest, m
    masses: np.ndarray  # [n_blocks] kg
    friction: float
    welds: np.ndarray  # used weld slots, int
    strength: np.ndarray  # [n_welds] breaking load of the "weld" joint model, N
    height: float  # top of the building, m

    def as_info(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def draw_world(rng: np.random.Generator, ranges: CollapseRandomization) -> CollapseWorld:
    """Draw the layout, block sizes, masses, friction and weld strengths of one building."""
    floors = int(rng.integers(ranges.floors[0], ranges.floors[1] + 1))
    rows = int(rng.integers(ranges.rows[0], ranges.rows[1] + 1))
    width = rng.uniform(*ranges.pillar_radius)
    pillar_half = np.array([width, width, rng.uniform(*ranges.pillar_half_height)])
    span = np.array([rng.uniform(*ranges.span_x), rng.uniform(*ranges.span_y) * (rows - 1)])
    overhang = width + 0.01
    slab_half = np.array([*(span + overhang), rng.uniform(*ranges.slab_half_thickness)])
    centre = np.array([rng.uniform(*ranges.centre_x), rng.uniform(*ranges.centre_y)])
    storey = 2 * (pillar_half[2] + slab_half[2])
    corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]])[: 2 * rows]
    blocks, half_extents, positions = [], [], []
    for floor in range(floors):
        base = floor * storey
        for i, corner in enumerate(corners):
            blocks.append(floor * BLOCKS_PER_FLOOR + i)
            half_extents.append(pillar_half)
            positions.append([*(centre + corner * span), base + pillar_half[2]])
        blocks.append(floor * BLOCKS_PER_FLOOR + PILLARS_PER_FLOOR)
        half_extents.append(slab_half)
        positions.append([*centre, base + storey - slab_half[2]])
    half_extents = np.array(half_extents)
    welds = np.array([w for w in range(MAX_WELDS) if weld_ends(w)[0] in blocks])
    return CollapseWorld(
        floors=floors,
        rows=rows,
        blocks=np.array(blocks),
        half_extents=half_extents,
        positions=np.array(positions),
        masses=rng.uniform(*ranges.density, size=len(blocks)) * volumes(half_extents, blocks),
        friction=float(rng.uniform(*ranges.friction)),
        welds=welds,
        strength=rng.uniform(*ranges.strength, size=len(welds)),
        height=float(floors * storey),
    )


def weld_ends(weld: int) -> tuple[int, int]:
    """The block slots a weld joins: (pillar, slab), with slab -1 for the ground."""
    floor, i = divmod(weld // 2, PILLARS_PER_FLOOR)
    slab_floor = floor if weld % 2 else floor - 1
    slab = slab_floor * BLOCKS_PER_FLOOR + PILLARS_PER_FLOOR if slab_floor >= 0 else -1
    return floor * BLOCKS_PER_FLOOR + i, slab


def volumes(half_extents: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Volume of each block [n], m^3: a capsule for a pillar slot, a box for a slab slot."""
    radius, half_height = half_extents[:, 0], half_extents[:, 2]
    capsule = np.pi * radius**2 * (2 * (half_height - radius) + 4 / 3 * radius)
    return np.where(IS_PILLAR[slots], capsule, 8 * half_extents.prod(axis=1))


def inertias(half_extents: np.ndarray, masses: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Principal moments of inertia [n, 3]: solid boxes, pillars as solid cylinders tip to tip
    (a few percent above a capsule's, which is all the accuracy the task needs)."""
    squares = half_extents**2
    box = masses[:, None] / 3 * (squares.sum(axis=1, keepdims=True) - squares)
    radial = masses * (3 * squares[:, 0] + 4 * squares[:, 2]) / 12
    cylinder = np.stack([radial, radial, masses * squares[:, 0] / 2], axis=1)
    return np.where(IS_PILLAR[slots, None], cylinder, box)


def rotation_matrices(quats: np.ndarray) -> np.ndarray:
    """Rotation matrices [n, 3, 3] of unit quaternions [n, 4] (w, x, y, z)."""
    w, x, y, z = quats.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def block_extents(rotations: np.ndarray, half_extents: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """World-axis half extents [n, 3] of blocks with rotation matrices [n, 3, 3].

    The top of block ``i`` is at ``z_i + block_extents(...)[i, 2]``. A box projects its half
    sizes through the absolute rotation matrix; a capsule its axis half-length, plus radius.
    """
    box = np.einsum("nij,nj->ni", np.abs(rotations), half_extents)
    radius = half_extents[:, :1]
    capsule = radius + np.abs(rotations[:, :, 2]) * (half_extents[:, 2:] - radius)
    return np.where(IS_PILLAR[slots, None], capsule, box)


def on_site(positions: np.ndarray) -> np.ndarray:
    """Which blocks [n] have their centre (positions [n, 3]) inside the kerb."""
    return (np.abs(positions[:, :2]) <= SITE_HALF).all(axis=1)


def state_blocks(state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block positions [20, 3], quaternions [20, 4] and used mask [20] from a state vector."""
    blocks = state[HEADER_DIM : HEADER_DIM + 8 * MAX_BLOCKS].reshape(MAX_BLOCKS, 8)
    return blocks[:, :3], blocks[:, 3:7], blocks[:, 7] > 0.5


def state_outcome(
    states: torch.Tensor, held: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The physics env's success rule on state vectors [B, 209] (torch): success and
    terminated (on success only) where the height (state 8) is at most ``HEIGHT_KEPT`` of
    the initial one (state 9), each [B]; ``held`` [B] passes through (no hold is needed)."""
    success = states[:, 8] <= HEIGHT_KEPT * states[:, 9]
    return success, success, held


def tracked_errors(predicted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """What ``compare`` tracks, from predicted and true state vectors [T, 209] -> errors [T]:
    the remaining height fraction (the success measure; state 8 is the height, 9 the
    initial one) and the mean position error of the layout's blocks (cm)."""
    fraction = lambda states: states[:, 8] / np.maximum(states[:, 9], 1e-6)  # noqa: E731
    blocks = lambda states: states[:, HEADER_DIM : HEADER_DIM + 8 * MAX_BLOCKS].reshape(  # noqa: E731
        len(states), MAX_BLOCKS, 8
    )
    used = blocks(true)[:, :, 7] > 0.5  # [T, 20]
    distance = np.linalg.norm(blocks(predicted)[:, :, :3] - blocks(true)[:, :, :3], axis=2)
    return {
        "height_fraction": np.abs(fraction(predicted) - fraction(true)),
        "block_position_cm": 100.0 * (distance * used).sum(1) / np.maximum(used.sum(1), 1),
    }
