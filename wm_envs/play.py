"""``wm-envs play --keyboard``: drive any env with the keyboard in a pygame window.

Each frame the held keys (the task's ``TaskSpec.keys``) make one action, which steps the env
once, at a fixed frame rate. A WM-* env started from a physics seed starts from that seed's
real first frame and its physics twin steps beside it with the same actions (physics |
learned), so a person sees where the learned simulator drifts from physics.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable

import gymnasium as gym
import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402

from wm_envs.demo import learned_env_kwargs  # noqa: E402
from wm_envs.tasks import TASKS, TaskSpec, task_of  # noqa: E402

#: Keys the player owns (pygame key names), on every task.
QUIT_KEYS = ("escape", "q")
RESET_KEY = "r"
#: SDL video drivers without a window: nothing to read live keys from.
HEADLESS_DRIVERS = ("dummy", "offscreen")
#: Pixels under each view for its text line.
TEXT_HEIGHT = 22


def keyboard_action(task: TaskSpec, held: Collection[str]) -> np.ndarray:
    """The action for the held keys (pygame key names): per action index the sum of its held
    keys' values (``task.keys``), clipped to [-1, 1]; the task's ``rest_action`` value where
    none is held. Keys outside the map are ignored."""
    action = np.array(task.rest_action, np.float32)
    totals: dict[int, float] = {}
    for name in held:
        if name in task.keys:
            index, value = task.keys[name]
            totals[index] = totals.get(index, 0.0) + value
    for index, total in totals.items():
        action[index] = total
    return np.clip(action, -1.0, 1.0)


def playable_env(env_id: str) -> str:
    """``env_id`` without its ``module:`` prefix, if it names a Phys-* or WM-* env."""
    name = env_id.split(":")[-1]
    playable = [f"{kind}-{task.name}-v0" for task in TASKS.values() for kind in ("Phys", "WM")]
    if name not in playable:
        raise ValueError(f"unknown env id {env_id!r}; keyboard play takes {', '.join(playable)}")
    return name


class KeyboardPlay:
    """One keyboard session without its window: the envs (``views``: label -> env, physics
    first), the held keys, and each view's last frame, step, reward, return and success.

    ``handle`` takes a pygame event, ``step`` steps every view once with the held keys' action
    (both views reset, on the next seed, when either episode ends), ``view`` draws the frames
    side by side. ``seed`` starts episode k on ``seed + k``; with a WM-* env it is a physics
    seed (the twin's first frame starts the learned env), and None starts the learned env
    alone from its checkpoint's start bank.
    """

    def __init__(
        self,
        env_id: str,
        seed: int | None = 0,
        scale: int = 6,
        model: str | None = None,
        checkpoint: str | None = None,
    ) -> None:
        name = playable_env(env_id)
        if not (isinstance(scale, int) and scale >= 1):
            raise ValueError(
                f"scale must be a whole number >= 1 (pixels per frame pixel), got {scale!r}"
            )
        self.task = TASKS[task_of(name)]
        env = gym.make(env_id, obs_mode="dict", **learned_env_kwargs(env_id, model, checkpoint))
        if not name.startswith("WM-"):
            self.views = {"physics": env}
        elif seed is None:
            self.views = {"learned": env}
        else:  # the twin the checkpoint learned
            twin = env.unwrapped.simulator.twin_kwargs
            physics = gym.make(f"Phys-{self.task.name}-v0", obs_mode="dict", **twin)
            self.views = {"physics": physics, "learned": env}
        self.seed, self.scale = seed, scale
        self.held: set[str] = set()
        self.episode = 0  # episodes started
        pygame.font.init()
        self.font = pygame.font.Font(None, TEXT_HEIGHT)
        self.reset()

    def reset(self) -> None:
        """Start the next episode in every view."""
        seed = None if self.seed is None else self.seed + self.episode
        self.episode += 1
        self.steps = 0
        self.frames: dict[str, np.ndarray] = {}
        self.stats = {
            label: {"reward": 0.0, "return": 0.0, "success": False} for label in self.views
        }
        options = None
        for label, env in self.views.items():
            obs, _ = env.reset(seed=seed, options=options)
            self.frames[label] = obs["image"]
            options = {"observation": obs}  # the learned view starts from physics' frame

    def handle(self, event: pygame.event.Event) -> bool:
        """Track held keys; reset on ``RESET_KEY``. False on a quit key or window close."""
        if event.type == pygame.QUIT:
            return False
        if event.type == pygame.KEYDOWN:
            name = pygame.key.name(event.key)
            if name in QUIT_KEYS:
                return False
            if name == RESET_KEY:
                self.reset()
            else:
                self.held.add(name)
        elif event.type == pygame.KEYUP:
            self.held.discard(pygame.key.name(event.key))
        elif event.type == pygame.WINDOWFOCUSLOST:
            self.held.clear()  # key-ups go to another window
        return True

    def step(self) -> np.ndarray:
        """Step every view with the held keys' action; return the action."""
        action = keyboard_action(self.task, self.held)
        ended = False
        for label, env in self.views.items():
            obs, reward, terminated, truncated, info = env.step(action)
            stats = self.stats[label]
            stats["reward"], stats["success"] = float(reward), bool(info.get("is_success"))
            stats["return"] += float(reward)
            self.frames[label] = obs["image"]
            ended = ended or terminated or truncated
        self.steps += 1
        if ended:
            print(f"episode {self.episode} ended after {self.steps} steps: {self.summary()}")
            self.reset()
        return action

    def summary(self) -> str:
        """Each view's return and success, one line."""
        return " | ".join(
            f"{label} return {s['return']:+.2f}{' success' if s['success'] else ''}"
            for label, s in self.stats.items()
        )

    def view(self) -> pygame.Surface:
        """The views' frames side by side (physics | learned), each upscaled ``scale`` times
        over its text line: step, last reward and success."""
        side = self.frames[next(iter(self.views))].shape[0] * self.scale
        surface = pygame.Surface((side * len(self.views), side + TEXT_HEIGHT))
        for column, (label, frame) in enumerate(self.frames.items()):
            image = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
            surface.blit(pygame.transform.scale(image, (side, side)), (column * side, 0))
            stats = self.stats[label]
            line = f"{label}  step {self.steps}  reward {stats['reward']:+.2f}"
            line += "  success" if stats["success"] else ""
            text = self.font.render(line, True, (255, 255, 255))
            surface.blit(text, (column * side + 4, side + 4))
        return surface

    def close(self) -> None:
        for env in self.views.values():
            env.close()


def play_keyboard(
    env_id: str,
    seed: int | None = 0,
    scale: int = 6,
    fps: int = 10,
    max_steps: int | None = None,
    events: Iterable[list[pygame.event.Event]] | None = None,
    model: str | None = None,
    checkpoint: str | None = None,
) -> dict:
    """Drive ``env_id`` with the keyboard in a pygame window at ``fps`` frames a second (0: as
    fast as it runs), one env step a frame, until Esc/q, the window closes, or ``max_steps``.

    ``events``: one list of pygame events per frame, replacing the keyboard (the session ends
    when they run out), for scripted play. Returns the actions sent [T, A], the episodes
    started and the window's size.
    """
    session = KeyboardPlay(env_id, seed, scale, model, checkpoint)
    pygame.display.init()  # no mixer: no audio device needed
    try:
        try:
            screen = pygame.display.set_mode(session.view().get_size())
        except pygame.error as error:
            raise RuntimeError(f"keyboard play found no display for its window: {error}") from error
        if events is None and pygame.display.get_driver() in HEADLESS_DRIVERS:
            raise RuntimeError(
                f"keyboard play found no display (SDL's video driver is "
                f"{pygame.display.get_driver()!r}, no window takes keys); run it on a desktop "
                f"(DISPLAY set), or script the keys with play_keyboard(events=...)"
            )
        pygame.display.set_caption(f"wm-envs play {env_id}: arrows/keys act, r resets, q quits")
        keys = ", ".join(f"{name} -> a[{i}]={v:+g}" for name, (i, v) in session.task.keys.items())
        print(f"{env_id}: {keys}; rest {session.task.rest_action}; r resets, Esc/q quits")
        clock = pygame.time.Clock()
        scripted = None if events is None else iter(events)
        actions = []
        while max_steps is None or len(actions) < max_steps:
            screen.blit(session.view(), (0, 0))
            pygame.display.flip()
            clock.tick(fps)
            frame_events = pygame.event.get() if scripted is None else next(scripted, None)
            if frame_events is None or not all(session.handle(e) for e in frame_events):
                break
            actions.append(session.step())
        window = screen.get_size()
    finally:
        session.close()
        pygame.quit()
    shape = (len(actions), session.task.action_dim)
    return {
        "actions": np.array(actions).reshape(shape),
        "episodes": session.episode,
        "window": window,
    }
