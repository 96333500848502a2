"""The JEPA world model: embedding-space losses, the protocol, and its learned env."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import train_tiny
from gymnasium.utils.env_checker import check_env

import wm_envs  # noqa: F401  (registers the envs)
from wm_envs.models import ModelSpec, build_model

SPEC = ModelSpec(image_size=64, state_dim=24, action_dim=4)


def synthetic_batch(size: int = 4, time: int = 8, seed: int = 0) -> dict:
    """A learnable toy: a 16 px square that each action moves by up to 6 px; the state
    vector holds its position."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.zeros(size, time, dtype=torch.bool)
    first[:, 0] = True
    first[0, 5] = True  # a window that crosses an episode start
    action = torch.rand(size, time, 4, generator=generator) * 2 - 1
    start = torch.randint(8, 40, (size, 2), generator=generator).float()
    position = (start[:, None] + (6 * action[..., :2]).cumsum(1)).clamp(0, 48)  # [B, T, 2]
    image = torch.zeros(size, time, 64, 64, 3, dtype=torch.uint8)
    for b in range(size):
        for t in range(time):
            x, y = position[b, t].long().tolist()
            image[b, t, y : y + 16, x : x + 16] = 255
    state = torch.zeros(size, time, 24)
    state[..., :2] = position / 64
    return {
        "image": image,
        "state": state,
        "action": action,
        "reward": state[..., 0],
        "terminated": torch.zeros(size, time, dtype=torch.bool),
        "success": torch.zeros(size, time, dtype=torch.bool),
        "is_first": first,
    }


@pytest.fixture(scope="module")
def jepa_checkpoint(tiny_dataset, tmp_path_factory):
    """A tiny JEPA trained for a few updates on the tiny dataset: its folder."""
    out = tmp_path_factory.mktemp("runs") / "jepa"
    metrics = train_tiny(tiny_dataset, out, "jepa")
    assert "val/state_error_1step" in metrics and "val/psnr_1step" not in metrics
    return out


def test_training_lowers_the_prediction_and_probe_losses():
    torch.manual_seed(0)
    model = build_model("jepa", SPEC, "tiny")
    batch = synthetic_batch(size=8)
    model.prepare(batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        loss, metrics = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(metrics)
    assert history[-1]["one_step_nce"] < history[0]["one_step_nce"] - 0.15
    assert history[-1]["probe"] < 0.8 * history[0]["probe"]
    assert history[-1]["embed_std"] > 0.1  # not collapsed


def test_target_encoder_follows_the_online_one_by_ema():
    model = build_model("jepa", SPEC, "tiny")
    online = next(model.encoder.parameters())
    target = next(model.target_encoder.parameters())
    assert not target.requires_grad
    with torch.no_grad():
        online.add_(1.0)
    before = target.detach().clone()
    model.update_target()
    expected = before.lerp(online.detach(), 1.0 - model.config.target_momentum)
    assert torch.allclose(target, expected)


def test_protocol_shapes_and_batched_step():
    model = build_model("jepa", SPEC, "tiny").eval()
    batch = synthetic_batch(size=3)
    model.prepare(batch)
    with torch.inference_mode():
        state = model.init_state({"image": batch["image"][:, :2], "state": batch["state"][:, :2]})
        stepped = model.step(state, batch["action"][:, 2])
        assert model.features(stepped).shape == (3, model.feature_dim)
        assert model.state_vector(stepped).shape == (3, 24)
        assert all(score.shape == (3,) for score in model.outcome_scores(stepped))
        # one row stepped alone equals the same row stepped in the batch
        alone = model.step({k: v[1:2] for k, v in state.items()}, batch["action"][1:2, 2])
        assert torch.allclose(alone["embed"], stepped["embed"][1:2], atol=1e-5)
        # the filter: the real frame's embedding, the prediction becomes the previous one
        real = {"image": batch["image"][:, 3], "state": batch["state"][:, 3]}
        observed = model.observe(stepped, batch["action"][:, 3], real)
        assert torch.equal(observed["previous"], stepped["embed"])
        # the integrated read-out reports the real state where it was given, then adds the
        # motion probe's change per step
        assert torch.equal(model.state_vector(observed), real["state"])
        moved = model.step(observed, batch["action"][:, 4])
        change = model.motion_probe(model.features(moved)) * model.motion_std
        assert torch.allclose(model.state_vector(moved), real["state"] + change, atol=1e-5)


def test_learned_env_serves_latent_and_state_and_refuses_images(jepa_checkpoint):
    for obs_mode in ("latent", "state"):
        env = gym.make(
            "WM-Grasp-v0", model="jepa", checkpoint=str(jepa_checkpoint), obs_mode=obs_mode
        )
        check_env(env.unwrapped, skip_render_check=True)
        obs, _ = env.reset(seed=0)
        obs, reward, *_ = env.step(env.action_space.sample())
        assert np.isfinite(obs).all() and np.isfinite(reward)
        env.close()
    with pytest.raises(ValueError, match="no image decoder"):
        gym.make("WM-Grasp-v0", model="jepa", checkpoint=str(jepa_checkpoint), obs_mode="dict")
    with pytest.raises(ValueError, match="no image decoder"):
        gym.make(
            "WM-Grasp-v0",
            model="jepa",
            checkpoint=str(jepa_checkpoint),
            obs_mode="latent",
            render_mode="rgb_array",
        )
    vector = gym.make_vec(
        "WM-Grasp-v0", num_envs=3, model="jepa", checkpoint=str(jepa_checkpoint), obs_mode="latent"
    )
    obs, _ = vector.reset(seed=0)
    obs, *_ = vector.step(vector.action_space.sample())
    assert obs.shape == (3, 2 * 16)
    vector.close()
