"""Drive beyond the shared env tests: track geometry, failure rules, a fixed track."""

import gymnasium as gym
import numpy as np

from wm_envs.tasks import drive
from wm_envs.tasks.drive import DriveRandomization


def test_projection_inverts_the_centre_line_frame():
    track = drive.draw_track(np.random.default_rng(0), DriveRandomization())
    for s, offset in [(0.0, 0.0), (7.3, 0.4), (15.1, -0.6), (track.length, 0.2)]:
        xy = track.point_at(s) + offset * track.normal_at(s)
        s_back, offset_back, _ = track.project(xy)
        assert abs(s_back - s) < 0.02 and abs(offset_back - offset) < 0.01


def test_leaving_the_road_fails_with_a_penalty():
    env = gym.make("Phys-Drive-v0", obs_mode="state")
    env.reset(seed=0)
    terminated, steps = False, 0
    while not terminated:
        _, reward, terminated, truncated, info = env.step(np.array([1.0, 1.0, -1.0]))  # hard left
        steps += 1
        assert not truncated
    assert info["off_track"] and not info["is_success"] and reward < -5
    assert steps < 50
    env.close()


def test_narrow_randomization_gives_a_fixed_track_without_obstacles():
    fixed = DriveRandomization(
        length=(25.0, 25.0),
        half_width=(0.8, 0.8),
        curvature=(0.1, 0.1),
        obstacles=(0, 0),
        friction=(1.0, 1.0),
        start_offset=(0.0, 0.0),
        start_yaw=(0.0, 0.0),
    )
    env = gym.make("Phys-Drive-v0", obs_mode="state", randomization=fixed)
    (obs_a, info_a), (obs_b, info_b) = env.reset(seed=1), env.reset(seed=2)
    np.testing.assert_array_equal(
        info_a["physics"]["centre_line"], info_b["physics"]["centre_line"]
    )
    np.testing.assert_array_equal(obs_a, obs_b)
    assert len(info_a["physics"]["obstacles"]) == 0 and not obs_a[22:].any()  # empty slots
    env.close()
