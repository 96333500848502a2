"""Gravity recovered by sparse regression from the free-flight phases of recorded data, beside
the engine's (``MjModel.opt.gravity``).

    python -m benchmarks.symbolic [--data data] [--datasets grasp/mixed-6k-v0,...]

Grasp (the state holds the object's velocity): the transitions the task's own rule marks as
untouched free flight (``TaskSpec.free_motion``: the object clear of the gripper by what both
can move in a step, and of the table -- above it, or past its edge), fitted by the symbolic
model's STLSQ on its full library (``wm_envs.symbolic``). g is minus the constant term of the
law it finds for the vertical velocity's change, over the control step.

Collapse (the state holds block positions, not velocities): the second difference of a block's
position over three states, ``p[t+1] - 2 p[t] + p[t-1] = a dt^2``, on steps where the block
flies free at all three (``collapse_flight``), regressed by the same STLSQ on a linear library
of the block's height and its velocity estimate (drag would show as velocity terms; the
samples are too few for products); g is minus the vertical law's
constant over dt^2.

The collapse datasets: ``wm-envs collect --env Phys-Collapse-v0 --episodes 60 --workers 1
--out data --dataset-id collapse/mixed-60-v0`` (and ``--episodes 300 ... mixed-300-v0``).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import mujoco
import numpy as np
import sympy
import torch

import wm_envs  # noqa: F401  (registers the envs)
from benchmarks.common import write_results
from wm_envs.data.windows import open_datasets, read_state_episodes
from wm_envs.models.base import ModelSpec
from wm_envs.models.symbolic import Library
from wm_envs.symbolic import (
    NormalEquations,
    accumulate,
    equations,
    flight_gravity,
    formula,
    prepared_model,
    sparse_fit,
    transitions,
)
from wm_envs.tasks import TASKS, collapse, task_of

BAR = 0.05  # relative error the recovered g must stay within


def engine_gravity(task: str) -> float:
    """The downward gravity of the task's MuJoCo model, m/s^2."""
    with gym.make(f"Phys-{TASKS[task].name}-v0", obs_mode="state") as env:
        return float(-env.unwrapped.model.opt.gravity[2])


def grasp_gravity(episodes: list[dict], threshold: float) -> dict:
    """g from the flight phase's vertical-velocity law of a symbolic fit to ``episodes``."""
    before, actions, after = transitions(episodes)
    spec = ModelSpec(episodes[0]["first_image"].shape[0], before.shape[1], actions.shape[1])
    model = prepared_model("grasp", spec, before, actions, after)
    system = accumulate(model, before, actions, after, chunk=32768)
    model.coefficients.copy_(sparse_fit(system, threshold))
    flight = model.rules.phases.index("flight")
    return {
        "samples": int(system.count[flight]),
        "law": f"dvz_o = {equations(model)['flight']['dvz_o']}",
        "g_recovered": flight_gravity(model)["flight_gravity"],
    }


def scene_obstacles(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray, list]:
    """Collapse's fixed boxes (kerbs, backdrop: centres [K, 3], half sizes [K, 3]) and the
    ram's parts as (offset from the carriage [3], bounding radius, moves with the strike)."""
    boxes = [
        i
        for i in range(model.ngeom)
        if model.geom_bodyid[i] == 0 and model.geom_type[i] == mujoco.mjtGeom.mjGEOM_BOX
    ]
    ram = [
        (model.geom(name).pos.copy(), float(model.geom(name).rbound[0]), name == "head")
        for name in ("sleeve", "head")
    ]
    return model.geom_pos[boxes].copy(), model.geom_size[boxes].copy(), ram


def collapse_flight(states: np.ndarray, obstacles: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Block positions [T, 20, 3] of an episode's states [T, 209] and where each block flies
    free [T, 20]: a used block with no intact weld whose box (``collapse.block_extents``) is
    clear of the floor, of every other block, of the scene's fixed boxes and of the ram's parts
    by 5 mm plus half the distance it moves in the step before or after (so that a contact
    cannot come and go between two frames)."""
    steps = len(states)
    blocks = states[:, collapse.HEADER_DIM : collapse.HEADER_DIM + 8 * collapse.MAX_BLOCKS]
    blocks = blocks.reshape(steps, collapse.MAX_BLOCKS, 8)
    position, quaternion, used = blocks[..., :3], blocks[..., 3:7], blocks[0, :, 7] > 0.5
    slots = np.arange(collapse.MAX_BLOCKS)
    half = np.where(collapse.IS_PILLAR[:, None], states[0, 11:14], states[0, 14:17])
    extents = np.stack(
        [collapse.block_extents(collapse.rotation_matrices(q), half, slots) for q in quaternion]
    )  # [T, 20, 3]
    low, high = position - extents, position + extents
    moved = np.linalg.norm(np.diff(position, axis=0), axis=-1)  # [T-1, 20]
    reach = np.maximum(np.pad(moved, ((1, 0), (0, 0))), np.pad(moved, ((0, 1), (0, 0))))
    margin = 0.005 + 0.5 * reach  # [T, 20]
    gap = np.maximum(low[:, :, None] - high[:, None], low[:, None] - high[:, :, None]).max(-1)
    gap[:, :, ~used] = np.inf
    gap[:, slots, slots] = np.inf
    clear = gap.min(-1) > margin  # of the other blocks
    centres, sizes, ram = obstacles
    box_gap = np.maximum(
        low[:, :, None] - (centres + sizes), (centres - sizes) - high[:, :, None]
    ).max(-1)  # [T, 20, K]
    clear &= box_gap.min(-1) > margin
    for offset, radius, strikes in ram:
        centre = states[:, 0:3] + offset + np.outer(states[:, 6] * strikes, [1.0, 0.0, 0.0])
        nearest = np.clip(centre[:, None], low, high)  # the box's point nearest the part
        clear &= np.linalg.norm(nearest - centre[:, None], axis=-1) > radius + margin
    intact = states[:, collapse.HEADER_DIM + 8 * collapse.MAX_BLOCKS :] > 0.5  # [T, 32]
    welded = np.zeros((steps, collapse.MAX_BLOCKS), bool)
    for weld in range(collapse.MAX_WELDS):
        for block in collapse.weld_ends(weld):
            if block >= 0:
                welded[:, block] |= intact[:, weld]
    free = clear & (low[..., 2] > margin) & used & ~welded
    return position, free


def collapse_gravity(episodes: list[dict], obstacles: tuple, threshold: float) -> dict:
    """g from the vertical law STLSQ finds for blocks' second differences in free flight."""
    dt = collapse.CONTROL_DT
    rows = []
    for episode in episodes:
        position, free = collapse_flight(episode["state"], obstacles)
        triple = free[:-2] & free[1:-1] & free[2:]  # [T-2, 20]
        velocity = (position[1:-1] - position[:-2]) / dt  # into the middle state, m/s
        second = position[2:] - 2 * position[1:-1] + position[:-2]  # [T-2, 20, 3]
        inputs = np.concatenate([velocity, position[1:-1, :, 2:]], axis=-1)  # vx, vy, vz, z
        rows.append((inputs[triple], second[triple]))
    inputs = torch.from_numpy(np.concatenate([r[0] for r in rows])).double()
    targets = torch.from_numpy(np.concatenate([r[1] for r in rows])).double()
    if len(inputs) < 2:
        return {"samples": len(inputs), "law": "(too few free-flight samples)", "g_recovered": None}
    library = Library(4, degree=1, trig=())  # few samples: linear terms only
    library.shift.copy_(inputs.mean(0))
    library.scale.copy_(inputs.std(0).clamp_min(1e-6))
    theta = library(inputs)  # [N, F]
    system = NormalEquations(
        (theta.T @ theta)[None],
        (theta.T @ targets)[None],
        targets.square().sum(0)[None],
        torch.tensor([len(theta)]),
    )
    raw = library.raw_coefficients(sparse_fit(system, threshold)[0])  # [F, 3]
    terms = [sympy.sympify(t) for t in library.names(["vx", "vy", "vz", "z"])]
    return {
        "samples": len(inputs),
        "law": f"d2z = {sympy.sstr(formula(raw[:, 2], terms))}",
        "g_recovered": -float(raw[0, 2]) / dt**2,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data")
    parser.add_argument(
        "--datasets", default="grasp/mixed-6k-v0,collapse/mixed-60-v0,collapse/mixed-300-v0"
    )
    parser.add_argument("--threshold", type=float, default=0.03, help="STLSQ threshold")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for dataset_id in args.datasets.split(","):
        task = task_of(open_datasets(args.data, dataset_id)[0].spec.env_spec.id)
        episodes = read_state_episodes(args.data, dataset_id)
        engine = engine_gravity(task)
        if task == "grasp":
            found = grasp_gravity(episodes, args.threshold)
        elif task == "collapse":
            with gym.make("Phys-Collapse-v0", obs_mode="state") as env:
                obstacles = scene_obstacles(env.unwrapped.model)
            found = collapse_gravity(episodes, obstacles, args.threshold)
        else:
            raise ValueError(f"{dataset_id!r} is a {task} dataset; gravity is read from grasp "
                             "and collapse data")  # fmt: skip
        g = found["g_recovered"]
        error = None if g is None else abs(g - engine) / engine
        rows.append(
            {
                "dataset": dataset_id,
                "episodes": len(episodes),
                "free_flight_samples": found["samples"],
                "g_recovered": g,
                "g_engine": engine,
                "error_pct": None if error is None else 100 * error,
                "within_5pct": None if error is None else bool(error <= BAR),
                "law": found["law"],
            }
        )
    notes = (
        "Free flight in Grasp is the task's flight rule on the state before a step (objects "
        "knocked off the table, falling past its edge: an object the expert drops from the "
        "gripper lands within a step of leaving the fingers' reach, so the rule marks none of "
        "its fall); in Collapse, blocks clear of everything for three states. Laws per "
        f"0.04 s control step, SI units; STLSQ threshold {args.threshold}. Bar: within "
        f"{BAR:.0%} of the engine's g."
    )
    write_results("symbolic", rows, notes)


if __name__ == "__main__":
    main()
