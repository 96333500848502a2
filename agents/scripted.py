"""Scripted policies of graded skill: the task's expert, with noise or a deliberate flaw.

They make the ladder on which ``wm-envs transfer`` asks whether success in a learned
simulator predicts success in physics: a ladder needs policies that fail in known, different
ways, not only good ones. A spec names one, as on the command line:

    expert                      the scripted expert
    expert:noise=0.3            Gaussian action noise of std 0.3
    expert:every=3              acts only every 3rd step and holds its action in between
    expert:never_close          (Grasp) never closes the fingers
    expert:release=4            (Grasp) opens the fingers 4 steps into the lift
    expert:off_centre=0.02      (Grasp) aims 2 cm beside the object
    expert:grasp_height=0.02    (Grasp) closes the fingers 2 cm above the object's centre
    expert:noise=0.1,every=2    flaws combine
    random                      uniform random actions
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from wm_envs.config import parse_settings
from wm_envs.tasks.experts import GraspExpert, make_expert

GRIP = 3  # Grasp's action index of the finger command (+1 closes, -1 opens)
OBJECT_X, OBJECT_Z = 7, 9  # Grasp's state indices of the object's x and z position


@dataclass(frozen=True)
class Flaws:
    """What a scripted policy gets wrong; the defaults are the expert."""

    noise: float = 0.0
    every: int = 1
    never_close: bool = False
    release: int = 0  # steps into the lift at which the fingers open; 0 = never
    off_centre: float = 0.0  # metres
    grasp_height: float = 0.0  # metres above the object's centre; high grasps lift it short

    @property
    def grasp_only(self) -> list[str]:
        """The flaws that only the Grasp expert has a meaning for."""
        return [
            name
            for name in ("never_close", "release", "off_centre", "grasp_height")
            if getattr(self, name) != getattr(Flaws, name)
        ]


def parse_policy(spec: str) -> tuple[str, Flaws]:
    """``"expert:noise=0.3,every=2"`` -> ``("expert", Flaws(noise=0.3, every=2))``."""
    kind, _, rest = spec.partition(":")
    if kind not in ("expert", "random"):
        raise ValueError(f"a scripted policy is 'expert[:flaws]' or 'random', got {spec!r}")
    if kind == "random" and rest:
        raise ValueError(f"'random' takes no flaws, got {spec!r}")
    flaws = parse_settings(Flaws, rest, spec)
    if flaws.every < 1 or flaws.noise < 0 or flaws.release < 0:
        raise ValueError(f"every must be >= 1, noise and release >= 0, got {spec!r}")
    return kind, flaws


class FlawedGraspExpert(GraspExpert):
    """The Grasp expert with the grasp-specific flaws of ``Flaws``."""

    def __init__(self, env: gym.Env, flaws: Flaws, seed: int | None = None) -> None:
        super().__init__(env, noise=flaws.noise, seed=seed)
        self.flaws = flaws

    def reset(self) -> None:
        super().reset()
        self.lift_steps = 0

    def plan(self, state: np.ndarray) -> np.ndarray:
        seen = state.copy()
        seen[OBJECT_X] += self.flaws.off_centre
        seen[OBJECT_Z] += self.flaws.grasp_height
        action = super().plan(seen)
        self.lift_steps = self.lift_steps + 1 if self.phase == "lift" else 0
        opens = self.flaws.release and self.lift_steps > self.flaws.release
        if self.flaws.never_close or opens:
            action[GRIP] = -1.0
        return action


def random_grasp_flaws(rng: np.random.Generator) -> Flaws:
    """Flaws drawn for one episode of the ``flawed`` dataset policy: the experience near
    contact that expert and random data lack. Every episode grasps at a random height (the
    workspace ceiling leaves a grasp above the centre short of the 10 cm lift); some also aim
    off centre, release during the lift, or act only every 2nd or 3rd step."""
    return Flaws(
        noise=float(rng.uniform(0.0, 0.2)),
        every=int(rng.choice([1, 2, 3], p=[0.8, 0.1, 0.1])),
        release=int(rng.integers(1, 9)) if rng.random() < 0.15 else 0,
        off_centre=float(rng.uniform(-0.025, 0.025)) if rng.random() < 0.3 else 0.0,
        grasp_height=float(rng.uniform(-0.01, 0.04)),
    )


class ScriptedPolicy:
    """``obs -> action`` with ``reset()``, for any env whose task has a scripted expert
    (Phys-* and WM-* alike: the expert reads ``env.unwrapped.state_vector()``)."""

    def __init__(self, env: gym.Env, spec: str | Flaws, seed: int | None = None) -> None:
        """``spec`` is a spec string, or the ``Flaws`` of an expert."""
        self.spec = spec
        kind, self.flaws = ("expert", spec) if isinstance(spec, Flaws) else parse_policy(spec)
        self.space = env.action_space
        if kind == "random":
            self.space.seed(seed)
            self.expert = None
        elif self.flaws.grasp_only:
            if getattr(env.unwrapped, "expert_class", None) is not GraspExpert:
                raise ValueError(f"{self.flaws.grasp_only} are Grasp flaws; {spec!r} on {env}")
            self.expert = FlawedGraspExpert(env, self.flaws, seed)
        else:
            self.expert = make_expert(env, noise=self.flaws.noise, seed=seed)

    def reset(self) -> None:
        self.step = 0
        self.action = None
        if self.expert is not None:
            self.expert.reset()

    def __call__(self, obs: Any) -> np.ndarray:
        if self.expert is None:
            return self.space.sample()
        if self.action is None or self.step % self.flaws.every == 0:
            self.action = self.expert(obs)
        self.step += 1
        return self.action
