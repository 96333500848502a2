"""Physics envs report their camera (pose and intrinsics in info), and it agrees with the
task's camera definition and with the depth they render (metres along the camera axis)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import wm_envs  # noqa: F401  (registers the envs)
from wm_envs.geometry import transform, unproject
from wm_envs.tasks import camera_intrinsics, camera_poses

#: env id, make kwargs, task, how far the unprojected floor may lie from z = 0 (m): the
#: table top (MuJoCo, PyBullet) and Drive's ground, whose road and lines lie 2-6 mm above it
#: and whose depth buffer spans 40 m.
CASES = [
    ("Phys-Grasp-v0", {}, "grasp", 1e-4),
    ("Phys-Grasp-v0", {"backend": "pybullet"}, "grasp", 5e-3),
    ("Phys-Drive-v0", {}, "drive", 3e-2),
]


@pytest.mark.parametrize(("env_id", "kwargs", "task", "floor"), CASES)
def test_info_reports_the_camera_the_depth_was_rendered_from(env_id, kwargs, task, floor):
    with gym.make(env_id, obs_mode="rgbd", **kwargs) as env:
        obs, info = env.reset(seed=3)
        action = np.full(env.action_space.shape, 0.5, np.float32)
        for _ in range(4):
            obs, _, _, _, info = env.step(action)
    pose, intrinsics = info["camera_pose"], info["camera_intrinsics"]
    assert pose.shape == (4, 4) and intrinsics.shape == (4,)
    np.testing.assert_allclose(pose, camera_poses(task, obs["state"]).numpy(), atol=1e-5)
    np.testing.assert_allclose(intrinsics, camera_intrinsics(task, 64).numpy(), rtol=1e-6)
    points = transform(
        unproject(
            torch.from_numpy(obs["depth"][..., 0]).double(), torch.from_numpy(intrinsics).double()
        ),
        torch.from_numpy(pose).double(),
    )
    height = points[..., 2].flatten()
    assert abs(float(height.median())) < floor  # most of the view is the table / ground


def test_drive_camera_moves_with_the_car_and_grasp_camera_stays():
    for env_id, moves in (("Phys-Drive-v0", True), ("Phys-Grasp-v0", False)):
        with gym.make(env_id, obs_mode="state") as env:
            _, info = env.reset(seed=0)
            first = info["camera_pose"]
            action = np.zeros(env.action_space.shape, np.float32)
            action[:2] = [0.3, 1.0]
            for _ in range(10):
                _, _, _, _, info = env.step(action)
        assert (np.abs(info["camera_pose"] - first).max() > 0.05) == moves
