"""What every model shares: the background it paints over, the state normaliser and the
losses of the state, reward and done heads."""

import pytest
import torch
import torch.nn.functional as F

from wm_envs.models import MODELS, ModelSpec, build_model
from wm_envs.models.layers import median_frame, paint_over


def test_median_frame_is_the_static_scene_behind_a_moving_object():
    scene = torch.rand(3, 8, 8) - 0.5  # [C, H, W]
    pixels = scene.expand(2, 3, 3, 8, 8).clone()  # [B, T, C, H, W]
    pixels[0, 0, :, 2:4, 2:4] = 0.5  # the object, somewhere else in two of six frames
    pixels[1, 2, :, 5:7, 1:3] = -0.5
    assert torch.equal(median_frame(pixels), scene)


def test_paint_over_composites_rgb_and_depth_with_the_alpha():
    background = torch.full((4, 2, 2), -0.25)  # RGB and a depth map
    maps = torch.zeros(3, 5, 2, 2)  # [N, RGB + alpha + depth, H, W]
    maps[:, :3] = 20.0  # RGB logits: white
    maps[:, 4] = 1.5  # depth, taken as it is
    maps[:, 3] = torch.tensor([-30.0, 0.0, 30.0])[:, None, None]  # alpha: 0, 1/2, 1
    painted = paint_over(maps, background)
    assert painted.shape == (3, 4, 2, 2)
    torch.testing.assert_close(painted[0], background)
    torch.testing.assert_close(painted[1, :3], torch.full((3, 2, 2), 0.125))
    torch.testing.assert_close(painted[1, 3], torch.full((2, 2), 0.625))
    torch.testing.assert_close(painted[2, :3], torch.full((3, 2, 2), 0.5))
    torch.testing.assert_close(painted[2, 3], torch.full((2, 2), 1.5))
    rgb_only = paint_over(maps[:, :4], background[:3])  # no depth: RGB alone
    torch.testing.assert_close(rgb_only, painted[:, :3])


def batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (2, 4, 64, 64, 3), generator=generator, dtype=torch.uint8),
        "state": 3 + 2 * torch.randn(2, 4, 24, generator=generator),
        "reward": torch.rand(2, 4, generator=generator),
        "terminated": torch.rand(2, 4, generator=generator) < 0.5,
        "success": torch.rand(2, 4, generator=generator) < 0.5,
        "is_first": torch.tensor([[True, False, False, False]] * 2),
    }


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prepare_fits_the_state_normaliser_that_learned_envs_read(name):
    rgbd = name == "deepverse"  # it models RGB-D frames only
    model = build_model(name, ModelSpec(64, 24, 4, depth=rgbd), "tiny", task="grasp")
    data = batch()
    if rgbd:
        data["depth"] = 0.3 + torch.rand(
            2, 4, 64, 64, 1, generator=torch.Generator().manual_seed(1)
        )
    model.prepare(data)
    states = data["state"].flatten(0, 1)
    torch.testing.assert_close(model.state_dict()["state_mean"], states.mean(0))
    torch.testing.assert_close(model.state_dict()["state_std"], states.std(0))
    normalised = model.normalise_state(data["state"])  # [B, T, S]
    torch.testing.assert_close(normalised.flatten(0, 1).mean(0), torch.zeros(24), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.denormalise_state(normalised), data["state"])


def test_head_losses_score_state_reward_and_done_predictions():
    model = build_model("rssm", ModelSpec(64, 24, 4), "tiny")
    data = batch(1)
    model.prepare(data)
    target = model.normalise_state(data["state"])  # [B, T, S]
    logits = torch.randn(2, 4, generator=torch.Generator().manual_seed(2))
    exact = model.head_losses(data, target, data["reward"], logits, -logits)
    assert exact[0] == 0 and exact[1] == 0
    done = F.binary_cross_entropy_with_logits(logits, data["terminated"].float())
    done = done + F.binary_cross_entropy_with_logits(-logits, data["success"].float())
    torch.testing.assert_close(exact[2], done)
    # flattened predictions [B*T] score the same; an error of 0.5 std in every state entry
    # costs Huber(0.5) = 0.125 per entry, summed over the vector
    flat = model.head_losses(
        data,
        target.flatten(0, 1) + 0.5,
        data["reward"].flatten() + 0.1,
        logits.flatten(),
        -logits.flatten(),
    )
    torch.testing.assert_close(flat[0], torch.tensor(24 * 0.125))
    torch.testing.assert_close(flat[1], torch.tensor(0.01))
    torch.testing.assert_close(flat[2], done)
