"""Genie: FSQ, shapes of the protocol calls, batching, the KV cache, stages and resume."""

import math
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env

import wm_envs  # noqa: F401  (registers WM-Grasp-v0)
from wm_envs.checkpoint import read_card, save_checkpoint
from wm_envs.eval.compare import CompareConfig, compare
from wm_envs.models import ModelSpec, build_model
from wm_envs.models.base import float_to_images
from wm_envs.models.genie import PRESETS, Genie, GenieConfig, controllability
from wm_envs.models.genie.fsq import FSQ
from wm_envs.models.genie.model import windowed_flag_loss
from wm_envs.models.genie.transformer import temporal_mask
from wm_envs.train import TrainConfig, Trainer

SPEC = ModelSpec(image_size=64, state_dim=24, action_dim=4)


def synthetic_batch(size: int = 3, frames: int = 6, seed: int = 0) -> dict:
    """Random frames in the replay layout; row 0 starts a new episode half way."""
    generator = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(size, frames, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[0, frames // 2] = True
    return {
        "image": torch.randint(
            0, 256, (size, frames, 64, 64, 3), generator=generator, dtype=torch.uint8
        ),
        "state": torch.randn(size, frames, 24, generator=generator),
        "action": torch.rand(size, frames, 4, generator=generator) * 2 - 1,
        "reward": torch.rand(size, frames, generator=generator),
        "terminated": torch.zeros(size, frames, dtype=torch.bool),
        "success": torch.zeros(size, frames, dtype=torch.bool),
        "is_first": is_first,
    }


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    genie = build_model("genie", SPEC, "tiny")
    genie.prepare(synthetic_batch())
    return genie.eval()


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (2, 2, 2), (3, 4)])
def test_fsq_round_trip(levels):
    fsq = FSQ(levels)
    codes = fsq(torch.randn(1000, len(levels)) * 3)
    indices = fsq.codes_to_indices(codes)
    assert indices.min() >= 0 and indices.max() < fsq.size
    assert torch.equal(fsq.indices_to_codes(indices), codes)
    every = torch.arange(fsq.size)
    assert torch.equal(fsq.codes_to_indices(fsq.indices_to_codes(every)), every)
    assert codes.abs().max() <= 1


def test_fsq_passes_gradients_straight_through():
    z = torch.randn(64, 3, requires_grad=True)
    FSQ((5, 5, 5))(z).sum().backward()
    assert z.grad.abs().min() > 0


def test_every_stage_loss_is_finite_and_trains_only_its_part(model):
    batch = synthetic_batch()
    for stage in model.stages:
        model.set_stage(stage)
        loss, metrics = model.loss(batch)
        assert torch.isfinite(loss) and "loss" in metrics
        trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
        assert (
            trainable
            == {
                "tokenizer": {"tokenizer"},
                "latent_actions": {"latent_actions"},
                "dynamics": {"dynamics", "heads", "adapter", "motion_head"},
                "heads": {"heads", "motion_head"},
            }[stage]
        )
    with pytest.raises(ValueError, match="stage"):
        model.set_stage("everything")


def test_protocol_shapes(model):
    batch = synthetic_batch()
    state = model.init_state({"image": batch["image"][:, :3], "state": batch["state"][:, :3]})
    state = model.step(state, batch["action"][:, 3])
    decoded = model.decode(state)
    assert decoded["image"].shape == (3, 64, 64, 3) and decoded["image"].dtype == torch.uint8
    assert decoded["state"].shape == (3, 24)
    torch.testing.assert_close(model.state_vector(state), decoded["state"])
    assert model.features(state).shape == (3, model.feature_dim)
    for value in (model.reward(state), model.terminated(state), model.success(state)):
        assert value.shape == (3,)
    assert model.terminated(state).dtype == torch.bool


def test_step_is_the_same_for_a_row_alone_and_in_a_batch(model):
    batch = synthetic_batch()
    state = model.init_state({"image": batch["image"][:, :2]})
    action = batch["action"][:, 2]
    together = model.step(state, action)
    for row in range(3):
        alone = model.step({k: v[row : row + 1] for k, v in state.items()}, action[row : row + 1])
        assert torch.equal(alone["tokens"][0], together["tokens"][row])
        torch.testing.assert_close(alone["features"][0], together["features"][row])


def test_sampling_is_repeatable_with_a_seeded_generator(model):
    state = model.init_state({"image": synthetic_batch()["image"][:, :2]})
    action = torch.zeros(3, 4)
    first, second = (model.step(state, action, torch.Generator().manual_seed(7)) for _ in "ab")
    assert torch.equal(first["tokens"], second["tokens"])


def test_cached_step_matches_a_full_pass_over_the_window(model):
    """The step's cached keys and values give the features a fresh pass would give."""
    batch = synthetic_batch()
    frames = model.config.memory + 1
    state = model.init_state({"image": batch["image"][:, :frames]})
    codes = torch.tensor([0, 1, 2])
    state = model.step_latent(state, codes)
    pixels = torch.cat([batch["image"][:, :frames], model.decode(state)["image"][:, None]], 1)
    is_first = torch.zeros(3, frames + 1, dtype=torch.bool)
    is_first[:, 0] = True
    pixels = pixels.permute(0, 1, 4, 2, 3).float() / 255 - 0.5
    tokens = model.tokenizer.tokenize(pixels.flatten(0, 1)).view(3, frames + 1, -1)
    tokens[:, -1] = state["tokens"]  # the generated tokens, not their re-encoding
    actions = model.infer_actions(pixels, is_first)
    actions[:, -1] = codes
    mask = temporal_mask(is_first.cumsum(1), model.config.memory)
    hidden, _ = model.dynamics(tokens, actions, mask)
    torch.testing.assert_close(model.dynamics.features(hidden[:, -1]), state["features"])


def test_latent_action_mode_and_bad_actions(model):
    state = model.init_state({"image": synthetic_batch()["image"][:, :1]})
    with pytest.raises(ValueError, match="actions must be"):
        model.step(state, torch.zeros(3, 5))
    model.action_mode = "latent"
    try:
        stepped = model.step(state, torch.arange(3) % model.n_latent_actions)
        assert stepped["tokens"].shape == state["tokens"].shape
        with pytest.raises(ValueError, match="integer indices"):
            model.step(state, torch.zeros(3, 4))
        with pytest.raises(ValueError, match="must lie in"):
            model.step(state, torch.full((3,), model.n_latent_actions))
    finally:
        model.action_mode = "env"


@pytest.mark.parametrize("context", [False, True])
def test_the_adapter_reads_the_frame_only_with_adapter_context(context):
    torch.manual_seed(0)
    genie = build_model("genie", SPEC, "tiny", {"adapter_context": context})
    genie.prepare(synthetic_batch())
    genie.set_stage("dynamics")
    loss, metrics = genie.loss(synthetic_batch())
    assert torch.isfinite(loss) and 0 <= metrics["adapter/accuracy"] <= 1
    state = genie.eval().init_state({"image": synthetic_batch()["image"][:, :2]})
    action = torch.zeros(64, 4)  # one task action, on 64 different frames' features
    features = torch.randn(64, genie.feature_dim, generator=torch.Generator().manual_seed(1))
    chosen = genie.latent_action({**state, "features": features}, action)
    assert (len(chosen.unique()) > 1) == context


def test_task_action_input_starts_neutral_trains_and_steers_the_next_frame():
    torch.manual_seed(0)
    genie = build_model("genie", SPEC, "tiny", {"task_action_input": True})
    genie.prepare(synthetic_batch())
    genie.set_stage("dynamics")
    loss, _ = genie.loss(synthetic_batch())
    loss.backward()
    embed = genie.dynamics.task_action_embed
    assert embed.weight.grad.abs().sum() > 0  # it learns, from a zero start
    genie.eval()
    state = genie.init_state({"image": synthetic_batch()["image"][:, :2]})
    latent = torch.zeros(3, dtype=torch.long)
    left, right = torch.full((3, 4), -1.0), torch.full((3, 4), 1.0)
    same = [genie.step_latent(state, latent, None, task)["features"] for task in (left, right)]
    torch.testing.assert_close(same[0], same[1])  # zero-initialised: no effect yet
    with torch.no_grad():
        embed.weight.normal_()
    moved = [genie.step_latent(state, latent, None, task)["features"] for task in (left, right)]
    assert not torch.allclose(moved[0], moved[1])
    torch.testing.assert_close(
        genie.step_latent(state, latent)["features"],
        genie.step_latent(state, latent, None, torch.zeros(3, 4))["features"],
    )  # no task action is a zero one


def test_the_task_route_steps_on_the_task_action_alone_which_training_taught(monkeypatch):
    for overrides, problem in (
        ({"env_action_route": "sideways"}, "'adapter' or 'task'"),
        ({"env_action_route": "task", "task_action_input": True}, "latent_action_dropout"),
    ):
        with pytest.raises(ValueError, match=problem):
            build_model("genie", SPEC, "tiny", overrides)
    torch.manual_seed(0)
    route = {"task_action_input": True, "latent_action_dropout": 1.0, "env_action_route": "task"}
    genie = build_model("genie", SPEC, "tiny", route)
    genie.prepare(synthetic_batch())
    genie.set_stage("dynamics")
    given, real_loss = [], genie.dynamics.loss

    def recording_loss(tokens: torch.Tensor, actions: torch.Tensor, *rest):
        given.append(actions)
        return real_loss(tokens, actions, *rest)

    monkeypatch.setattr(genie.dynamics, "loss", recording_loss)
    genie.loss(synthetic_batch())
    assert (given[0] == genie.n_latent_actions).all()  # every latent action hidden
    genie.eval()
    state = genie.init_state({"image": synthetic_batch()["image"][:, :2]})
    left, right = torch.full((3, 4), -1.0), torch.full((3, 4), 1.0)
    assert (genie.latent_action(state, left) == genie.n_latent_actions).all()
    with torch.no_grad():
        genie.dynamics.task_action_embed.weight.normal_()
    moved = [genie.step(state, action)["features"] for action in (left, right)]
    assert not torch.allclose(moved[0], moved[1])  # the task action alone steers the frame
    genie.action_guidance = 2.0  # guides latent actions; a step on the task action is plain
    torch.testing.assert_close(genie.step(state, right)["features"], moved[1])
    mixed = torch.tensor([0, 1, genie.n_latent_actions])  # guided rows beside a plain one
    with pytest.raises(ValueError, match="latent action in every row"):
        genie.step_latent(state, mixed)


def test_generated_frames_decode_from_expected_codes_that_are_the_tokens_when_certain(
    model, monkeypatch
):
    state = model.init_state({"image": synthetic_batch()["image"][:, :2]})
    stepped = model.step_latent(state, torch.zeros(3, dtype=torch.long))
    codes, hard = stepped["codes"], model.tokenizer.fsq.indices_to_codes(stepped["tokens"])
    assert codes.shape == hard.shape and codes.abs().max() <= 1
    assert not torch.allclose(codes, hard)  # an untrained model is unsure: codes in between
    pixels = model.tokenizer.decode(codes)
    monkeypatch.setattr(model, "residual_tolerance", 0.0)  # the frame as its codes decode
    assert torch.equal(model.decode(stepped)["image"], float_to_images(pixels))
    logits = model.dynamics.to_logits
    saved = logits.weight.detach().clone()
    with torch.no_grad():
        logits.weight.mul_(1e4)  # near one-hot per digit: the expected code is the token's
    sure = model.step_latent(state, torch.zeros(3, dtype=torch.long))
    with torch.no_grad():
        logits.weight.copy_(saved)
    hard = model.tokenizer.fsq.indices_to_codes(sure["tokens"])
    torch.testing.assert_close(sure["codes"], hard, atol=1e-3, rtol=0)


def test_decoding_keeps_the_last_real_frame_where_the_decoding_has_not_moved(model, monkeypatch):
    images = synthetic_batch()["image"][:, :2]
    state = model.init_state({"image": images})
    assert torch.equal(model.decode(state)["image"], images[:, -1])  # the context's own frame
    stepped = model.step_latent(state, torch.zeros(3, dtype=torch.long))
    plain = model.tokenizer.decode(stepped["codes"])  # [B, 3, H, W]
    change = (plain - state["anchor"]).abs().amax(1)  # [B, H, W]
    moved = change >= change.median()  # an untrained decoder barely moves: half of the pixels
    monkeypatch.setattr(model, "residual_tolerance", change.median().item())
    decoded = model.decode(stepped)["image"]  # [B, H, W, 3]
    assert torch.equal(decoded[moved], float_to_images(plain)[moved])  # painted as decoded
    assert not torch.equal(decoded[~moved], float_to_images(plain)[~moved])  # the real error


def test_integrated_state_starts_at_the_real_state_and_adds_the_motion_head():
    torch.manual_seed(0)
    genie = build_model("genie", SPEC, "tiny")
    batch = synthetic_batch()
    genie.prepare(batch)
    genie.set_stage("dynamics")
    loss, metrics = genie.loss(batch)
    loss.backward()
    assert metrics["motion"] > 0 and genie.motion_head[0].weight.grad.abs().sum() > 0
    genie.eval()
    state = genie.init_state({"image": batch["image"][:, :2], "state": batch["state"][:, :2]})
    torch.testing.assert_close(genie.state_vector(state), batch["state"][:, 1])
    latent = torch.zeros(3, dtype=torch.long)
    stepped = genie.step_latent(state, latent)
    change = genie.motion(state["features"], stepped["features"], state["vector"], None)
    expected = batch["state"][:, 1] + change * genie.motion_std
    torch.testing.assert_close(genie.decode(stepped)["state"], expected)
    pushed = [genie.step_latent(state, latent, None, torch.full((3, 4), a)) for a in (-1.0, 1.0)]
    assert not torch.allclose(pushed[0]["vector"], pushed[1]["vector"])  # it reads the action
    with torch.no_grad():
        genie.motion_head[-1].weight.zero_()
        genie.motion_head[-1].bias.zero_()
    still = genie.step_latent(genie.step_latent(state, latent), latent)
    torch.testing.assert_close(genie.state_vector(still), batch["state"][:, 1])  # no motion
    unknown = genie.init_state({"image": batch["image"][:, :2]})  # no state: the head's reading
    read = genie.denormalise_state(genie.heads["state"](unknown["features"]))
    torch.testing.assert_close(genie.state_vector(unknown), read)
    reader = build_model("genie", SPEC, "tiny", {"integrate_state": False}).eval()
    assert not hasattr(reader, "motion_head")
    start = reader.init_state({"image": batch["image"][:, :2], "state": batch["state"][:, :2]})
    read = reader.denormalise_state(reader.heads["state"](start["features"]))
    torch.testing.assert_close(reader.state_vector(start), read)  # the head's reading


def test_the_heads_stage_scores_generated_frames_within_their_episode():
    torch.manual_seed(0)
    genie = build_model("genie", SPEC, "tiny")
    batch = synthetic_batch(frames=6)  # memory 2: 4 generated frames; row 0 restarts at 3
    genie.prepare(batch)
    genie.set_stage("heads")
    loss, metrics = genie.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and metrics["motion"] > 0 and metrics["integrated_state"] > 0
    assert genie.motion_head[0].weight.grad.abs().sum() > 0
    assert genie.heads["success"][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in genie.dynamics.parameters())
    restarted = {**batch, "is_first": torch.ones_like(batch["is_first"])}
    empty, _ = genie.loss(restarted)  # no generated frame inside its episode: nothing scored
    assert empty.item() == 0
    with pytest.raises(ValueError, match="windows longer"):
        genie.loss(synthetic_batch(frames=2))


def test_outcome_heads_read_the_state_history_within_the_episode():
    torch.manual_seed(0)
    genie = build_model("genie", SPEC, "tiny", {"outcome_history": 3})
    batch = synthetic_batch(frames=6)  # row 0 restarts at frame 3
    genie.prepare(batch)
    history = genie.state_history(batch["state"], batch["is_first"])  # [B, T, 3, S]
    states = batch["state"][0]
    torch.testing.assert_close(history[0, 1], states[[0, 0, 1]])  # the episode's first repeats
    torch.testing.assert_close(history[0, 4], states[[3, 3, 4]])  # not back past a restart
    torch.testing.assert_close(history[1, 5], batch["state"][1, 3:6])
    for stage in ("dynamics", "heads"):
        genie.zero_grad()
        genie.set_stage(stage)
        genie.loss(batch)[0].backward()
        assert genie.heads["success"][0].weight.grad[:, -3 * 24 :].abs().sum() > 0
    genie.eval()
    state = genie.init_state({"image": batch["image"][:, :2], "state": batch["state"][:, :2]})
    torch.testing.assert_close(state["history"], batch["state"][:, [0, 0, 1]])
    stepped = genie.step_latent(state, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(stepped["history"][:, :2], batch["state"][:, [0, 1]])
    torch.testing.assert_close(stepped["history"][:, 2], stepped["vector"])
    moved = {**stepped, "history": stepped["history"] + 1}
    assert not torch.allclose(genie.outcome_scores(moved)[0], genie.outcome_scores(stepped)[0])
    with pytest.raises(ValueError, match="integrate_state"):
        build_model("genie", SPEC, "tiny", {"outcome_history": 3, "integrate_state": False})


def test_heads_stage_rollouts_start_after_a_drawn_number_of_real_frames():
    torch.manual_seed(0)
    genie = build_model("genie", SPEC, "tiny", {"outcome_history": 3, "rollout_context_min": 1})
    batch = synthetic_batch(frames=6)  # memory 2: frames 0 and 1 real, or frame 1 alone
    genie.prepare(batch)
    genie.set_stage("heads")
    batch["state"][:, 0] = float("nan")  # read only by a rollout shown both real frames
    finite = []
    for seed in range(8):
        torch.manual_seed(seed)
        finite.append(bool(torch.isfinite(genie.loss(batch)[0])))
    assert any(finite) and not all(finite)
    with pytest.raises(ValueError, match="rollout_context_min"):
        build_model("genie", SPEC, "tiny", {"rollout_context_min": 3})


def test_a_windowed_flag_loss_scores_a_flag_fired_early_within_the_window():
    flags = torch.tensor([[False, False, False, True, False]])
    valid = torch.tensor([[True, True, True, True, False]])  # a new episode at step 4
    on_time = torch.tensor([[-9.0, -9.0, -9.0, 9.0, 5.0]])
    early = torch.tensor([[-9.0, -9.0, 9.0, -9.0, 5.0]])
    plain = F.binary_cross_entropy_with_logits(on_time[valid], flags[valid].float())
    torch.testing.assert_close(windowed_flag_loss(on_time, flags, valid, 1), plain)
    assert windowed_flag_loss(early, flags, valid, 1) > 1  # one step early: wrong twice
    # within a 2-step window the early flag is the positive and the step after is not scored
    torch.testing.assert_close(
        windowed_flag_loss(early, flags, valid, 2), windowed_flag_loss(on_time, flags, valid, 2)
    )
    assert windowed_flag_loss(early, flags, valid, 2) < 1e-3
    too_early = torch.tensor([[9.0, -9.0, -9.0, -9.0, 5.0]])
    assert windowed_flag_loss(too_early, flags, valid, 2) > 1


def test_the_heads_stage_trains_windowed_flags():
    torch.manual_seed(0)
    genie = build_model("genie", SPEC, "tiny", {"flag_window": 2})
    batch = synthetic_batch(frames=6)
    batch["success"][1, 4] = batch["terminated"][1, 4] = True
    genie.prepare(batch)
    genie.set_stage("heads")
    loss, metrics = genie.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and metrics["done"] > 0
    assert genie.heads["success"][0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="flag_window"):
        build_model("genie", SPEC, "tiny", {"flag_window": 0})


def test_a_longer_outcome_history_continues_a_checkpoint_reading_as_before(model):
    longer = build_model("genie", SPEC, "tiny", {"outcome_history": 2}).eval()
    saved = longer.adapt_weights(model.state_dict(), SPEC, vars(model.config))
    longer.load_state_dict(saved)
    batch = synthetic_batch()
    context = {"image": batch["image"][:, :2], "state": batch["state"][:, :2]}
    states = [genie.init_state(context) for genie in (model, longer)]
    torch.testing.assert_close(model.outcome_scores(states[0]), longer.outcome_scores(states[1]))
    shorter = build_model("genie", SPEC, "tiny").eval()
    with pytest.raises(ValueError, match="shorter history"):
        shorter.adapt_weights(longer.state_dict(), SPEC, {"outcome_history": 2})


def test_changed_tokens_weigh_more_only_where_tokens_change():
    """changed_token_weight reweighs the masked-token loss toward tokens that differ from the
    frame before: on a still video (no token changes) every weight gives the same loss, on
    a moving one a larger weight gives another."""
    dynamics = build_model("genie", SPEC, "tiny").dynamics
    tokens = torch.randint(0, dynamics.fsq.size, (2, 5, dynamics.tokens))  # [B, T, P]
    still = tokens[:, :1].expand(-1, 5, -1)
    actions = torch.zeros(2, 5, dtype=torch.long)
    segment = torch.zeros(2, 5, dtype=torch.long)

    def loss(video: torch.Tensor, weight: float) -> tuple[float, dict]:
        dynamics.changed_weight = weight
        torch.manual_seed(3)  # the same masks for every weight
        value, _, metrics = dynamics.loss(video, actions, segment)
        return value.item(), metrics

    assert loss(still, 5.0)[0] == pytest.approx(loss(still, 1.0)[0])
    assert loss(tokens, 5.0)[0] != pytest.approx(loss(tokens, 1.0)[0])
    assert 0 <= loss(tokens, 5.0)[1]["dynamics/changed_accuracy"] <= 1


def test_mask_ratios_follow_the_cosine_schedule_or_genies_uniform_range():
    dynamics = build_model("genie", SPEC, "tiny").dynamics
    torch.manual_seed(0)
    cosine = dynamics.mask_ratios(200, 8, torch.device("cpu"))  # [200, 8, 1]
    assert cosine.shape == (200, 8, 1) and 0 <= cosine.min() < 0.2 and cosine.max() <= 1
    assert cosine.mean() == pytest.approx(2 / math.pi, abs=0.02)  # E[cos(pi/2 U)]
    dynamics.mask_ratio_min = 0.5
    uniform = dynamics.mask_ratios(200, 8, torch.device("cpu"))
    assert 0.5 <= uniform.min() < 0.51 and uniform.max() <= 1
    assert uniform.mean() == pytest.approx(0.75, abs=0.02)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_inference_settings_bound_every_preset_and_exclude_an_all_mask_frame(preset):
    bounds = Genie.inference_settings
    assert set(bounds) == {
        "maskgit_steps",
        "temperature",
        "residual_tolerance",
        "done_threshold",
        "action_guidance",
    }
    assert all(low <= high for low, high in bounds.values())
    assert bounds["maskgit_steps"][0] >= 1 and bounds["temperature"][0] > 0
    assert bounds["residual_tolerance"][0] == 0  # 0: frames exactly as their codes decode
    config = GenieConfig(**PRESETS[preset])
    for name, (low, high) in bounds.items():
        assert low <= getattr(config, name) <= high


def test_the_done_threshold_sets_where_the_flags_fire(model, monkeypatch):
    state = model.init_state({"image": synthetic_batch()["image"][:, :2]})
    _, terminated, success = model.outcome_scores(state)
    assert 0.01 < success.min() and success.max() < 0.99
    for threshold in (0.01, 0.99):
        monkeypatch.setattr(model, "done_threshold", threshold)
        _, terminated_flag, success_flag = model.outcomes(state)
        assert torch.equal(success_flag, success > threshold)
        assert torch.equal(terminated_flag, terminated > threshold)


def test_action_guidance_of_one_is_the_plain_pass_and_zero_marginalises_the_action(model):
    state = model.init_state({"image": synthetic_batch()["image"][:, :2]})
    past = list(zip(state["keys"].unbind(1), state["values"].unbind(1), strict=True))
    mask = F.pad(state["valid"], (0, 1), value=True)[:, None]  # [B, 1, K + 1]
    time = state["time"][:, None] + 1  # [B, 1]
    actions = torch.tensor([0, 3, model.n_latent_actions - 1])
    tokens = torch.full((3, model.dynamics.tokens), model.dynamics.mask_token)
    hidden, _ = model.dynamics(tokens[:, None], actions[:, None], mask, time, past)
    plain = [logits.log_softmax(-1) for logits in model.dynamics.logits(hidden[:, 0])]
    guided = model.dynamics.guided_logits(tokens, actions, mask, time, past, None, 1.0)
    for expected, got in zip(plain, guided, strict=True):
        assert torch.allclose(expected, got, atol=1e-5)  # each row read under its own action
    try:
        model.action_guidance = 0.0
        frames = [
            model.step_latent(state, torch.full((3,), a))["tokens"]
            for a in (0, model.n_latent_actions - 1)
        ]
        assert torch.equal(*frames)
        model.action_guidance = 3.0
        sharpened = model.step_latent(state, actions)["tokens"]
        assert (sharpened < model.tokenizer.fsq.size).all()
    finally:
        model.action_guidance = model.config.action_guidance


def test_generation_at_the_lowest_bounds_works_and_below_them_is_refused(model):
    state = model.init_state({"image": synthetic_batch()["image"][:, :2]})
    action = torch.zeros(3, 4)
    try:
        model.maskgit_steps = Genie.inference_settings["maskgit_steps"][0]
        model.temperature = Genie.inference_settings["temperature"][0]
        stepped = model.step(state, action, torch.Generator().manual_seed(0))
        assert (stepped["tokens"] < model.tokenizer.fsq.size).all()  # no mask token left
        model.maskgit_steps = 0
        with pytest.raises(ValueError, match="maskgit_steps must be at least 1"):
            model.step(state, action)
    finally:
        model.maskgit_steps = model.config.maskgit_steps
        model.temperature = model.config.temperature


def test_learned_env_takes_latent_actions_and_generation_settings(model, tmp_path):
    batch = synthetic_batch()
    bank = {"bank/image": batch["image"][:, 0], "bank/state": batch["state"][:, 0]}
    save_checkpoint(tmp_path, model, {"task": "grasp"}, bank)
    settings = {
        "maskgit_steps": 1,
        "temperature": 0.5,
        "residual_tolerance": 0.0,
        "done_threshold": 0.2,
    }
    env = gym.make(
        "WM-Grasp-v0",
        model="genie",
        checkpoint=str(tmp_path),
        device="cpu",
        action_mode="latent",
        model_settings=settings,
    )
    assert env.action_space == gym.spaces.Discrete(model.n_latent_actions)
    simulator = env.unwrapped.simulator
    model_settings = (simulator.model.maskgit_steps, simulator.model.temperature)
    assert model_settings == (1, 0.5) and simulator.model.residual_tolerance == 0.0
    assert simulator.model.done_threshold == 0.2
    check_env(env.unwrapped)
    env.reset(seed=0)
    for bad in (0.5, model.n_latent_actions, np.zeros(4)):
        with pytest.raises(ValueError, match="latent action"):
            env.step(bad)
    envs = gym.make_vec(
        "WM-Grasp-v0",
        num_envs=3,
        model="genie",
        checkpoint=str(tmp_path),
        device="cpu",
        action_mode="latent",
    )
    envs.reset(seed=0)
    obs, *_ = envs.step(np.arange(3) % model.n_latent_actions)
    assert obs["image"].shape == (3, 64, 64, 3)
    with pytest.raises(ValueError, match="must lie in"):
        envs.step(np.full(3, model.n_latent_actions))
    with pytest.raises(ValueError, match="action_mode 'tokens'"):
        gym.make(
            "WM-Grasp-v0",
            model="genie",
            checkpoint=str(tmp_path),
            device="cpu",
            action_mode="tokens",
        )
    with pytest.raises(ValueError, match="model_settings"):
        gym.make(
            "WM-Grasp-v0",
            model="genie",
            checkpoint=str(tmp_path),
            device="cpu",
            model_settings={"beam_width": 4},
        )


def test_controllability_reports_delta_psnr_and_codebook_usage(model):
    metrics = controllability(model, synthetic_batch(frames=7), context=2)
    assert set(metrics) >= {"delta_psnr", "token_usage", "action_usage", "action_perplexity"}
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert 0 < metrics["action_usage"] <= 1


def test_trainer_runs_and_resumes_every_stage(tiny_dataset, tmp_path):
    """Interrupted after every update (a tiny time limit), each re-run resumes where the last
    stopped, stage by stage; a stage leaves the parts of the other stages untouched."""
    root, dataset_id = tiny_dataset
    config = TrainConfig(
        model="genie",
        preset="tiny",
        data=str(root),
        dataset_id=dataset_id,
        out=str(tmp_path / "genie"),
        steps=2,
        batch_size=2,
        window=6,
        eval_every=100,
        eval_context=2,
        eval_horizon=4,
        eval_windows=2,
        bank_size=2,
        max_minutes=1e-9,
    )
    seen, tokenizers, dynamics, heads = [], [], [], []
    for _ in range(8):
        trainer = Trainer(config)
        trainer.run()
        seen.append((trainer.model.stages[trainer.stage], trainer.step))
        tokenizers.append(trainer.model.tokenizer.patch_out.weight.detach().clone())
        dynamics.append(trainer.model.dynamics.to_logits.weight.detach().clone())
        heads.append(trainer.model.heads["success"][0].weight.detach().clone())
    stages = ("tokenizer", "latent_actions", "dynamics", "heads")
    assert seen == [(stage, step) for stage in stages for step in (1, 2)]
    assert not torch.equal(tokenizers[0], tokenizers[1])  # trained in its stage ...
    assert all(torch.equal(tokenizers[1], later) for later in tokenizers[2:])  # ... then frozen
    assert all(torch.equal(dynamics[5], later) for later in dynamics[6:])  # frozen for heads
    assert not torch.equal(heads[5], heads[7])  # the heads train on generated frames
    assert "val/delta_psnr" in trainer.metrics
    recipe = read_card(tmp_path / "genie")["recipe"]  # every stage counts, across resumes
    assert recipe["updates"] == recipe["total_updates"] == 8
    assert recipe["updates_by_stage"] == {stage: 2 for stage in stages}
    # a continuation starts at the checkpoint's stage, or at an earlier one named with
    # updates; a later stage given none is never entered (its parts may have nothing to train)
    for run, (stage_steps, parts, trained) in enumerate(
        (
            ("dynamics=0,heads=1", "", {"heads": 1}),
            ("dynamics=1,heads=1", "", {"dynamics": 1, "heads": 1}),
            ("dynamics=1,heads=0", "dynamics", {"dynamics": 1}),
        )
    ):
        out = tmp_path / f"continued-{run}"
        continued = replace(
            config,
            out=str(out),
            init_from=config.out,
            stage_steps=stage_steps,
            train_parts=parts,
            max_minutes=0.0,
        )
        Trainer(continued).run()
        recipe = read_card(out)["recipe"]
        assert recipe["updates_by_stage"] == trained and recipe["stage"] == list(trained)[-1]
    # compare reports Genie's controllability and codebook usage on the physics episodes
    compared = compare(
        CompareConfig(
            model="genie",
            checkpoint=config.out,
            episodes=1,
            horizon=3,
            videos=0,
            out=str(tmp_path / "compare"),
            device="cpu",
            done_thresholds=(0.5, 0.2),
        )
    )
    for start in ("first_frame", "mid_episode"):
        row = compared["headline"][start]
        assert {"success_agreement_at_0.5", "success_agreement_at_0.2"} <= set(row)
        metrics = compared["model_metrics"][start]
        assert {"delta_psnr", "token_usage", "action_usage"} <= set(metrics)
