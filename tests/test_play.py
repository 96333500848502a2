"""`wm-envs play --keyboard`: key maps, and scripted sessions in SDL's dummy video driver."""

import os

os.environ["SDL_VIDEODRIVER"] = "dummy"  # no window; events come from the script
os.environ["SDL_AUDIODRIVER"] = "dummy"

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pygame  # noqa: E402
import pytest  # noqa: E402

from wm_envs.cli import main  # noqa: E402
from wm_envs.play import QUIT_KEYS, RESET_KEY, KeyboardPlay, keyboard_action, play_keyboard  # noqa: E402
from wm_envs.tasks import TASKS  # noqa: E402


def down(key: int) -> pygame.event.Event:
    return pygame.event.Event(pygame.KEYDOWN, key=key)


def up(key: int) -> pygame.event.Event:
    return pygame.event.Event(pygame.KEYUP, key=key)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_key_map_gives_in_bounds_actions_of_its_task(task):
    spec = TASKS[task]
    space = gym.spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)
    assert spec.keys and len(spec.rest_action) == spec.action_dim
    assert not set(spec.keys) & {*QUIT_KEYS, RESET_KEY}
    pygame.display.init()
    try:
        for name in spec.keys:  # real pygame key names
            assert pygame.key.name(pygame.key.key_code(name)) == name
    finally:
        pygame.quit()
    assert space.contains(keyboard_action(spec, []))
    for name, (index, value) in spec.keys.items():
        action = keyboard_action(spec, [name])
        assert space.contains(action) and action[index] == np.clip(value, -1, 1)
    assert space.contains(keyboard_action(spec, list(spec.keys)))  # all at once: clipped


def test_held_keys_add_up_and_unheld_indices_rest():
    grasp = TASKS["grasp"]
    np.testing.assert_array_equal(keyboard_action(grasp, []), [0, 0, 0, -1])  # fingers open
    np.testing.assert_array_equal(keyboard_action(grasp, ["right", "up", "space"]), [1, 1, 0, 1])
    np.testing.assert_array_equal(keyboard_action(grasp, ["left", "right", "x"]), [0, 0, 0, -1])
    assert keyboard_action(TASKS["drive"], ["left", "up"]).tolist() == [1, 1, 0]  # +1 steers left


def test_scripted_session_drives_the_learned_env_beside_its_physics():
    right, space = pygame.K_RIGHT, pygame.K_SPACE
    script = [[down(right)], [], [up(right), down(space)], [down(pygame.K_ESCAPE)], [down(right)]]
    result = play_keyboard("WM-Grasp-v0", seed=3, fps=0, events=script)
    actions = result["actions"]
    assert actions.shape == (3, 4)  # Esc ended it before the fifth frame's keys
    assert actions[0, 0] > 0 and actions[1, 0] > 0 and actions[0, 3] == -1  # right held: dx > 0
    assert actions[2].tolist() == [0, 0, 0, 1]  # right released, the fingers close
    side = 64 * 6
    assert result["window"][0] == 2 * side  # physics | learned
    assert result["episodes"] == 1


def test_the_learned_view_starts_from_the_physics_seeds_first_frame_and_resets():
    session = KeyboardPlay("WM-Grasp-v0", seed=5, scale=2)
    try:
        assert list(session.views) == ["physics", "learned"]
        with gym.make("Phys-Grasp-v0", obs_mode="dict") as physics:
            first = physics.reset(seed=5)[0]["image"]
        np.testing.assert_array_equal(session.frames["physics"], first)
        assert session.view().get_size() == (2 * 128, 128 + 22)
        assert session.handle(down(pygame.K_w))
        session.step()
        assert session.steps == 1 and session.stats["physics"]["return"] != 0
        assert session.handle(down(pygame.K_r)) and session.steps == 0 and session.episode == 2
        assert session.held == {"w"}  # r resets, it does not act
        assert not session.handle(down(pygame.K_q))
    finally:
        session.close()


def test_a_physics_env_and_a_learned_env_without_a_seed_show_one_view():
    for env_id, label in (("Phys-Grasp-v0", "physics"), ("WM-Grasp-v0", "learned")):
        session = KeyboardPlay(env_id, seed=None if label == "learned" else 0, scale=1)
        try:
            assert list(session.views) == [label] and session.view().get_width() == 64
        finally:
            session.close()


def test_unknown_env_id_and_keyboard_with_policy_are_refused(capsys):
    with pytest.raises(ValueError, match="unknown env id 'WM-Nope-v0'; keyboard play takes"):
        play_keyboard("WM-Nope-v0", events=[])
    with pytest.raises(ValueError, match="scale must be a whole number >= 1"):
        play_keyboard("Phys-Grasp-v0", scale=0, events=[])
    with pytest.raises(SystemExit):
        main(["play", "--keyboard", "--policy", "random"])
    assert "--keyboard (drive by hand) and --policy" in capsys.readouterr().err


def test_live_play_without_a_display_is_refused():
    with pytest.raises(RuntimeError, match="found no display.*'dummy'"):
        play_keyboard("Phys-Grasp-v0", max_steps=1)


def test_an_ended_episode_resets_on_the_next_seed():
    session = KeyboardPlay("Phys-Grasp-v0", seed=0, scale=1)
    try:
        limit = TASKS["grasp"].max_episode_steps
        for _ in range(limit):
            session.step()
        assert session.episode == 2 and session.steps == 0  # truncated, then reset
        with gym.make("Phys-Grasp-v0", obs_mode="dict") as physics:
            np.testing.assert_array_equal(
                session.frames["physics"], physics.reset(seed=1)[0]["image"]
            )
    finally:
        session.close()
