"""DeepVerse: the protocol on synthetic RGB-D windows, the action-encoder registry, the
geometric consistency loss, depth metrics with known answers, and a tiny trained twin."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from wm_envs import geometry
from wm_envs.eval.metrics import chamfer_cm, depth_errors, pose_errors
from wm_envs.models import ModelSpec, build_model
from wm_envs.models.base import select_state
from wm_envs.models.deepverse import action_encoder, geometric_losses
from wm_envs.tasks import camera_intrinsics, camera_poses

SPEC = ModelSpec(image_size=64, state_dim=24, action_dim=4, depth=True)


def synthetic_batch(size: int = 2, time: int = 6, seed: int = 0) -> dict:
    """Random RGB-D windows in the replay layout, Grasp-shaped; an episode starts at t = 3
    of the last window."""
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(size, time, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[-1, 3] = True
    return {
        "image": torch.randint(0, 256, (size, time, 64, 64, 3), generator=g, dtype=torch.uint8),
        "depth": 0.3 + torch.rand(size, time, 64, 64, 1, generator=g),
        "state": torch.randn(size, time, 24, generator=g),
        "action": torch.rand(size, time, 4, generator=g) * 2 - 1,
        "reward": torch.randn(size, time, generator=g),
        "terminated": torch.zeros(size, time, dtype=torch.bool),
        "success": torch.zeros(size, time, dtype=torch.bool),
        "is_first": is_first,
    }


def tiny_model(**overrides):
    torch.manual_seed(0)
    model = build_model("deepverse", SPEC, "tiny", overrides, task="grasp")
    model.prepare(synthetic_batch())
    return model.eval()


@pytest.mark.parametrize("background", ["static", "warp"])
def test_the_protocol_on_synthetic_rgbd_windows(background):
    model = tiny_model(background=background)
    batch = synthetic_batch()
    loss, metrics = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert {"rgb", "disparity", "pose", "photometric", "depth_consistency", "fed/rgb"} <= set(
        metrics
    )
    context = {key: batch[key][:, :3] for key in ("image", "depth", "state")}
    with torch.no_grad():
        state = model.init_state(context, batch["action"][:, :3])
        for t in range(3, 6):
            state = model.step(state, batch["action"][:, t])
        decoded = model.decode(state)
    assert decoded["image"].dtype == torch.uint8 and decoded["image"].shape == (2, 64, 64, 3)
    assert decoded["depth"].shape == (2, 64, 64, 1) and (decoded["depth"] > 0).all()
    assert decoded["state"].shape == (2, 24)
    assert model.features(state).shape == (2, model.feature_dim)
    assert all(x.shape == (2,) for x in model.outcome_scores(state))
    info = model.extra_info(state)
    assert info["camera_pose"].shape == (2, 4, 4) and info["camera_relative_pose"].shape == (2, 6)
    picked = select_state(torch.tensor([True, False]), state, model.init_state(context))
    assert torch.equal(picked["frame"][0], state["frame"][0])
    with pytest.raises(ValueError, match="actions must be"):
        model.step(state, torch.zeros(2, 3))


def test_a_step_with_the_cache_matches_the_teacher_forced_window():
    """init_state + step over a context longer than the window predicts what the training
    pass predicts for the same frames: the cache slides over ``context - 1`` frames."""
    model = tiny_model(depth=2)  # two blocks: the cache must hold what deeper blocks saw
    batch = synthetic_batch(size=1, time=6, seed=1)
    batch["is_first"][:] = False
    batch["is_first"][:, 0] = True
    pixels = model._pixels(batch)
    segment = torch.zeros(1, 6, dtype=torch.long)
    with torch.no_grad():
        # frame t predicts t+1 under action[t+1]; the last frame's prediction is frame 6's
        actions = torch.cat([batch["action"][:, 1:], batch["action"][:, :1]], 1)
        frames, motion, pose, _ = model._run(pixels, batch["state"], actions, segment)
        context = {key: batch[key] for key in ("image", "depth", "state")}
        state = model.init_state(context, batch["action"])
        stepped = model.step(state, actions[:, -1])
    torch.testing.assert_close(stepped["frame"], frames[-1:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stepped["pose"], pose[-1:] * model.pose_std, atol=1e-6, rtol=1e-4)


def test_the_action_encoder_registry_refuses_an_unknown_spec():
    with pytest.raises(ValueError, match="unknown action spec 'tank'.*'arm', 'vehicle'"):
        action_encoder("tank", 4, 16, 16)
    with pytest.raises(ValueError, match="action spec 'vehicle' encodes 3 numbers.*4"):
        action_encoder("vehicle", 4, 16, 16)
    with pytest.raises(ValueError, match="unknown action spec 'tank'"):
        build_model("deepverse", SPEC, "tiny", {"action_spec": "tank"}, task="grasp")
    assert action_encoder("arm", 4, 16, 8)(torch.zeros(5, 4)).shape == (5, 16)
    assert action_encoder("vehicle", 3, 16, 8)(torch.zeros(5, 3)).shape == (5, 16)


def test_deepverse_refuses_data_without_depth_or_a_task_without_a_camera():
    with pytest.raises(ValueError, match="--obs-mode rgbd"):
        build_model("deepverse", ModelSpec(64, 24, 4, False), "tiny", task="grasp")
    with pytest.raises(ValueError, match="camera model"):
        build_model("deepverse", ModelSpec(64, 209, 4, True), "tiny", task="collapse")


def shifted_plane(shift_pixels: int = 2, distance: float = 2.0):
    """A textured fronto-parallel plane at ``distance`` m, seen before and after the camera
    moves right by exactly ``shift_pixels`` pixels' worth: (source, target, depth, relative
    pose, camera)."""
    camera = camera_intrinsics("grasp", 64).double()
    texture = torch.rand(1, 3, 64, 64 + shift_pixels, generator=torch.Generator().manual_seed(0))
    source = texture[..., :64].double()
    target = texture[..., shift_pixels : 64 + shift_pixels].double()  # the view moved right
    depth = torch.full((1, 64, 64), distance, dtype=torch.float64)
    translation = shift_pixels * distance / camera[0]  # metres
    relative = torch.tensor([[translation, 0, 0, 0, 0, 0]], dtype=torch.float64)
    return source, target, depth, relative, camera


def test_the_consistency_loss_is_zero_for_a_perfect_warp():
    source, target, depth, relative, camera = shifted_plane()
    photometric, consistency = geometric_losses(source, depth, target, depth, relative, camera)
    assert photometric.item() < 1e-9 and consistency.item() < 1e-9
    wrong_pose = relative * 2.0
    photometric, _ = geometric_losses(source, depth, target, depth, wrong_pose, camera)
    assert photometric.item() > 0.05
    _, consistency = geometric_losses(source, depth, target, depth * 1.25, relative, camera)
    assert consistency.item() == pytest.approx(1 / 2.0 - 1 / 2.5, rel=1e-6)


def test_the_warp_background_carries_the_frame_into_the_next_view():
    """Under ``background="warp"`` a transparent decoder gives the current frame reprojected
    by its own depth and the predicted pose; pixels the warp cannot fill, and an opaque
    decoder, give the decoder's paint."""
    model = tiny_model(background="warp").double()
    source, target, depth, relative, camera = shifted_plane(shift_pixels=2)
    model.disparity_mean.fill_(1.0)
    frame = torch.cat([source - 0.5, 1 / depth[:, None]], 1)  # model space [1, 4, H, W]
    maps = torch.zeros(1, 5, 64, 64, dtype=torch.float64)  # paint: grey (RGB 0 in model space)
    maps[:, 4] = 1 / depth  # the decoder's disparity: the plane's
    maps[:, 3] = -40.0  # alpha: transparent
    painted = model._paint(maps, frame, relative)
    torch.testing.assert_close(painted[:, :3, :, :-2], target[..., :-2] - 0.5)
    assert painted[:, :3, :, -2:].abs().max() < 1e-12  # beyond the source's edge: the paint
    torch.testing.assert_close(painted[:, 3], maps[:, 4])  # depth is the decoder's
    maps[:, 3] = 40.0  # opaque
    assert model._paint(maps, frame, relative)[:, :3].abs().max() < 1e-12


def test_depth_metrics_on_synthetic_data_with_known_answers():
    truth = 0.5 + torch.rand(3, 8, 8, 1, generator=torch.Generator().manual_seed(0))
    absrel, delta = depth_errors(1.1 * truth, truth)
    torch.testing.assert_close(absrel, torch.full((3,), 0.1))
    torch.testing.assert_close(delta, torch.ones(3))
    half = truth.clone()
    half[:, :4] *= 1.3  # half the pixels 30% too far
    absrel, delta = depth_errors(half, truth)
    torch.testing.assert_close(absrel, torch.full((3,), 0.15))
    torch.testing.assert_close(delta, torch.full((3,), 0.5))
    # the same depth and pose: no Chamfer distance; the camera moved 3 cm along its view axis
    # moves every point of a fronto-parallel plane 3 cm (the points lie 20 cm apart)
    camera = camera_intrinsics("grasp", 8)
    pose = camera_poses("grasp", torch.zeros(1, 24))
    plane = torch.ones(1, 8, 8, 1)
    assert chamfer_cm(plane, pose, plane, pose, camera).item() == pytest.approx(0, abs=1e-9)
    moved = pose.clone()
    moved[:, :3, 3] += 0.03 * pose[:, :3, 2]
    assert chamfer_cm(plane, moved, plane, pose, camera).item() == pytest.approx(3.0, rel=1e-5)
    # camera errors: 3 cm and 10 degrees
    turned = pose.clone()
    turned[:, :3, :3] = turned[:, :3, :3] @ geometry.axis_angle_to_matrix(
        torch.tensor([[0.0, 0.0, math.radians(10)]])
    )
    turned[:, :3, 3] += torch.tensor([0.0, 0.03, 0.0])
    translation, rotation = pose_errors(turned, pose)
    assert translation.item() == pytest.approx(3.0, rel=1e-4)
    assert rotation.item() == pytest.approx(10.0, rel=1e-4)


def test_poses_round_trip_through_axis_angle_and_relative_poses():
    g = torch.Generator().manual_seed(0)
    pose6 = torch.cat([torch.randn(5, 3, generator=g), 0.5 * torch.randn(5, 3, generator=g)], -1)
    first = camera_poses("drive", torch.randn(5, 34, generator=g))
    second = first @ geometry.pose_matrix(pose6)
    torch.testing.assert_close(geometry.relative_pose(first, second), pose6, atol=1e-4, rtol=1e-4)
    fx, fy, cx, cy = geometry.intrinsics(90.0, 64).tolist()
    assert (fx, fy, cx, cy) == (pytest.approx(32.0), pytest.approx(32.0), 31.5, 31.5)


@pytest.fixture(scope="module")
def deepverse_checkpoint(tmp_path_factory):
    """A tiny DeepVerse trained for a few updates on four RGB-D Grasp episodes."""
    from wm_envs.data import CollectConfig, collect
    from wm_envs.train import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("rgbd")
    collect(CollectConfig(episodes=4, seed=0, obs_mode="rgbd"), root, "grasp/rgbd-v0", workers=1)
    out = root / "deepverse"
    config = TrainConfig(
        model="deepverse",
        preset="tiny",
        data=str(root),
        dataset_id="grasp/rgbd-v0",
        out=str(out),
        steps=2,
        batch_size=2,
        window=6,
        eval_every=2,
        eval_context=2,
        eval_horizon=3,
        eval_windows=2,
        bank_size=4,
    )
    Trainer(config).run()
    return out


@pytest.mark.parametrize("obs_mode", ["rgbd", "dict"])
def test_check_env_passes_on_a_tiny_trained_checkpoint(deepverse_checkpoint, obs_mode):
    with gym.make(
        "WM-Grasp-v0", model="deepverse", checkpoint=str(deepverse_checkpoint), obs_mode=obs_mode
    ) as env:
        check_env(env.unwrapped)
        obs, info = env.reset(seed=0)
        assert info["camera_pose"].shape == (4, 4)
        obs, _, _, _, info = env.step(env.action_space.sample())
        assert set(obs) == (
            {"image", "state", "depth"} if obs_mode == "rgbd" else {"image", "state"}
        )
        assert info["camera_pose"].shape == (4, 4) and np.isfinite(info["camera_pose"]).all()


def test_the_vector_env_reports_the_predicted_camera_of_every_env(deepverse_checkpoint):
    from wm_envs.learned_env import WorldModelVectorEnv

    envs = WorldModelVectorEnv(
        3, task="grasp", model="deepverse", checkpoint=str(deepverse_checkpoint), obs_mode="rgbd"
    )
    envs.reset(seed=0)
    obs, _, _, _, infos = envs.step(np.zeros((3, 4), np.float32))
    assert obs["depth"].shape == (3, 64, 64, 1) and infos["camera_pose"].shape == (3, 4, 4)
