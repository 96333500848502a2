"""Steps/s of every Phys-* env (on each of its engines) in `state` and `dict` mode, against
its engine's raw ceiling.

The ceiling, measured in the same run: one control step's worth of bare engine steps (no
Python env logic), plus, for image modes, one tuned 64x64 render. The ratios are what the
README quotes.

    python -m benchmarks.throughput [--steps N]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym

import wm_envs
from benchmarks.common import env_label, rate, write_results
from wm_envs.tasks import phys_envs
from wm_envs.tasks.pybullet_base import PybulletTaskEnv


def env_rate(env_id: str, obs_mode: str, steps: int, **kwargs) -> float:
    """Steps/s through ``gym.make`` (with its wrappers) under random actions, resets included."""
    env = gym.make(env_id, obs_mode=obs_mode, **kwargs)
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


def timed_ceiling(env: gym.Env, steps: int, elapsed: dict, render, warmup: int = 20):
    """Run ``env`` under random actions and return engine steps/s and engine+render steps/s.

    The caller has wrapped the engine's step call so that it adds its own time to
    ``elapsed["physics"]``; ``render()`` draws one 64x64 image of the task camera. Timing
    the engine inside the running env makes it do exactly the env's physics work on the
    env's own states: a replay of recorded states cannot restore what an env changes at each
    reset (Grasp's object, Collapse's building, a rebuilt PyBullet world) or mid-step (welds
    that break). Two passes: the engine alone (a render between steps evicts its data from
    the caches and slows it), then the engine with one render per step.
    """
    rates = []
    for draw in (None, render):
        env.reset(seed=0)
        env.action_space.seed(0)
        for i in range(warmup + steps):
            if i in (0, warmup):
                elapsed.update(physics=0.0, render=0.0)
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if draw is not None:
                start = time.perf_counter()
                draw()
                elapsed["render"] += time.perf_counter() - start
            if terminated or truncated:
                env.reset()
        rates.append(steps / (elapsed["physics"] + elapsed["render"]))
    return tuple(rates)


def timer(function, elapsed: dict):
    """``function`` wrapped to add its run time to ``elapsed["physics"]``."""

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        elapsed["physics"] += time.perf_counter() - start
        return result

    return timed


def mujoco_ceiling(env: gym.Env, steps: int) -> tuple[float, float]:
    """Bare ``mj_step`` for one control step, and that plus one tuned 64x64 render."""
    import mujoco  # after wm_envs has chosen the headless GL backend

    task, elapsed, mj_step = env.unwrapped, {}, mujoco.mj_step
    mujoco.mj_step = timer(mj_step, elapsed)  # the envs call it through the module attribute
    try:
        return timed_ceiling(env, steps, elapsed, lambda: task.renderer(task.data, 64, 64, False))
    finally:
        mujoco.mj_step = mj_step


def pybullet_ceiling(env: gym.Env, steps: int) -> tuple[float, float]:
    """Bare ``stepSimulation`` for one control step, and that plus one 64x64 TinyRenderer
    image of the task camera."""
    task, elapsed = env.unwrapped, {}
    client = task.client
    client.stepSimulation = timer(client.stepSimulation, elapsed)  # shadows the attribute

    def render() -> None:
        task._place_camera()
        task.camera.render(client, 64, 64)

    return timed_ceiling(env, steps, elapsed, render)


#: The raw ceiling of each engine.
CEILINGS = {"mujoco": mujoco_ceiling, "pybullet": pybullet_ceiling}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    rows = []
    for env_id, kwargs in phys_envs():
        with gym.make(env_id, obs_mode="state", **kwargs) as env:
            engine = "pybullet" if isinstance(env.unwrapped, PybulletTaskEnv) else "mujoco"
            raw_physics, raw_render = CEILINGS[engine](env, args.steps)
        state = env_rate(env_id, "state", args.steps, **kwargs)
        image = env_rate(env_id, "dict", args.steps, **kwargs)
        rows.append(
            {
                "env": env_label(env_id, kwargs),
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
