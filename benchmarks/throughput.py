"""Steps/s of every Phys-* env in `state` and `dict` mode, against its engine's raw ceiling.

The ceiling, measured in the same run: one control step's worth of bare engine steps (no
Python env logic), plus, for image modes, one tuned 64x64 render. The ratios are what the
README quotes.

    python benchmarks/throughput.py [--steps N]
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import wm_envs
from benchmarks.common import rate, write_results


def env_rate(env_id: str, obs_mode: str, steps: int) -> float:
    """Steps/s through ``gym.make`` (with its wrappers) under random actions, resets included."""
    env = gym.make(env_id, obs_mode=obs_mode)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(256)]
    counter = iter(range(10**9))

    def step():
        _, _, terminated, truncated, _ = env.step(actions[next(counter) % 256])
        if terminated or truncated:
            env.reset()

    result = rate(step, steps)
    env.close()
    return result


def mujoco_ceiling(env_id: str, steps: int) -> tuple[float, float]:
    """Bare ``mj_step`` for one control step, and that plus one render, per second.

    Replays the controls the env itself applied under the same random actions, restoring the
    same start states at episode starts, so the engine does the same physics work.
    """
    import mujoco  # after wm_envs has chosen the headless GL backend

    env = gym.make(env_id, obs_mode="state")
    model, data = env.unwrapped.model, env.unwrapped.data
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(256)]
    starts, controls = {0: (data.qpos.copy(), data.qvel.copy())}, []
    for i in range(steps + 20):
        _, _, terminated, truncated, _ = env.step(actions[i % 256])
        controls.append(data.ctrl.copy())
        if terminated or truncated:
            env.reset()
            starts[i + 1] = (data.qpos.copy(), data.qvel.copy())
    counter = iter(range(10**9))
    substeps = env.unwrapped.frame_skip

    def physics():
        i = next(counter) % len(controls)
        if i in starts:
            data.qpos[:], data.qvel[:] = starts[i]
        data.ctrl[:] = controls[i]
        mujoco.mj_step(model, data, nstep=substeps)

    def physics_and_render():
        physics()
        env.unwrapped.renderer(data, 64, 64, False)

    raw_physics = rate(physics, steps)
    counter = iter(range(10**9))
    raw_render = rate(physics_and_render, steps)
    env.close()
    return raw_physics, raw_render


CEILINGS = {"Phys-Grasp-v0": mujoco_ceiling}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    rows = []
    for env_id in sorted(i for i in gym.registry if i.startswith("Phys-")):
        raw_physics, raw_render = CEILINGS[env_id](env_id, args.steps)
        state = env_rate(env_id, "state", args.steps)
        image = env_rate(env_id, "dict", args.steps)
        rows.append(
            {
                "env": env_id,
                "state steps/s": state,
                "ceiling (engine) steps/s": raw_physics,
                "state ratio": state / raw_physics,
                "dict steps/s": image,
                "ceiling (engine + render) steps/s": raw_render,
                "dict ratio": image / raw_render,
            }
        )
    write_results(
        "throughput",
        rows,
        notes=f"wm-envs {wm_envs.__version__}; random actions; "
        "gym.make wrappers included; 64x64 images.",
    )


if __name__ == "__main__":
    main()
