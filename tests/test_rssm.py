"""The RSSM against the WorldModel protocol: shapes, determinism, learning, state merging."""

import numpy as np
import pytest
import torch

from wm_envs.checkpoint import read_card
from wm_envs.data.windows import WindowDataset
from wm_envs.models import ModelSpec, build_model
from wm_envs.models.base import float_to_images, images_to_float, select_state
from wm_envs.models.rssm import anchor_frames, cold_starts, decode_chunk, state_motion
from wm_envs.tasks import TASKS, camera_poses, grasp


def tiny_model(**overrides):
    torch.manual_seed(0)
    return build_model("rssm", ModelSpec(64, 24, 4), "tiny", overrides)


def started(tiny_dataset, seed: int):
    """A prepared tiny model, a batch of 3 windows and the state after their 2 first frames."""
    batch = WindowDataset(*tiny_dataset, 6).sample(3, np.random.default_rng(seed))
    model = tiny_model()
    model.prepare(batch)
    context = {"image": batch["image"][:, :2], "state": batch["state"][:, :2]}
    with torch.no_grad():
        state = model.init_state(context, batch["action"][:, :2])
    return model, batch, state


def test_protocol_shapes(tiny_dataset):
    model, batch, state = started(tiny_dataset, seed=0)
    with torch.no_grad():
        state = model.step(state, batch["action"][:, 2])
        decoded = model.decode(state)
        reward, terminated, success = model.outcomes(state)
    assert decoded["image"].shape == (3, 64, 64, 3) and decoded["image"].dtype == torch.uint8
    assert decoded["state"].shape == (3, 24)
    assert reward.shape == terminated.shape == success.shape == (3,)
    assert terminated.dtype == torch.bool
    assert model.features(state).shape == (3, model.feature_dim)
    torch.testing.assert_close(model.reward(state), reward)
    _, p_terminated, p_success = model.outcome_scores(state)
    for p in (p_terminated, p_success):
        assert ((0 <= p) & (p <= 1)).all()
    assert torch.equal(success, p_success > 0.5) and torch.equal(terminated, p_terminated > 0.5)


def test_one_step_filter_continues_what_init_state_observed(tiny_dataset):
    """observe(), frame by frame, reaches the state init_state() reaches over the same K."""
    batch = WindowDataset(*tiny_dataset, 5).sample(3, np.random.default_rng(2))
    model = tiny_model()
    model.prepare(batch)
    frames = {key: batch[key] for key in ("image", "state")}
    with torch.no_grad():
        whole = model.init_state(frames, batch["action"])
        state = model.init_state({key: value[:, :1] for key, value in frames.items()})
        for t in range(1, 5):
            obs = {key: value[:, t] for key, value in frames.items()}
            state = model.observe(state, batch["action"][:, t], obs)
    for key in whole:
        torch.testing.assert_close(state[key], whole[key])


def test_mode_is_deterministic_and_sampling_follows_the_generator(tiny_dataset):
    batch = WindowDataset(*tiny_dataset, 4).sample(2, np.random.default_rng(1))
    model = tiny_model()
    context = {"image": batch["image"][:, :1], "state": batch["state"][:, :1]}

    def run(generator):
        with torch.no_grad():
            state = model.init_state(context, None, generator)
            return model.step(state, batch["action"][:, 1], generator)["stoch"]

    torch.testing.assert_close(run(None), run(None))
    draws = [run(torch.Generator().manual_seed(5)) for _ in range(2)]
    torch.testing.assert_close(draws[0], draws[1])


def test_a_few_updates_reduce_the_loss_on_a_fixed_batch(tiny_dataset):
    batch = WindowDataset(*tiny_dataset, 6).sample(4, np.random.default_rng(2))
    model = tiny_model(cold_start_rate=0.5)
    model.prepare(batch)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-2)
    losses = []
    for _ in range(25):
        loss, metrics = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(metrics["loss"])
    assert losses[-1] < 0.8 * losses[0]
    assert set(metrics) >= {"image", "state", "reward", "done", "kl"}


def test_rollout_state_starts_at_the_real_state_and_integrates_the_motion_head(tiny_dataset):
    model, batch, state = started(tiny_dataset, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(state)["state"], batch["state"][:, 1])
        after = model.step(state, batch["action"][:, 2])
        before = (batch["state"][:, 1] - model.state_mean) / model.state_std
        motion = model.motion_head(torch.cat([model.features(after), before], -1))
        motion = motion * model.motion_std
    torch.testing.assert_close(model.decode(after)["state"], batch["state"][:, 1] + motion)
    torch.testing.assert_close(model.state_vector(after), batch["state"][:, 1] + motion)


def test_state_motion_is_undefined_across_episode_starts():
    states = torch.arange(4.0).view(1, 4, 1).expand(2, 4, 3)
    is_first = torch.tensor([[True, False, True, False], [False, False, False, False]])
    motion, valid = state_motion({"state": states, "is_first": is_first})
    assert valid.tolist() == [[False, True, False, True], [False, True, True, True]]
    assert motion[valid].eq(1).all()


def test_cold_starts_add_one_restart_after_the_first_step_of_chosen_windows():
    is_first = torch.zeros(64, 8, dtype=torch.bool)
    is_first[0, 5] = True  # a real episode start stays
    torch.manual_seed(0)
    assert cold_starts(is_first, 0.0).equal(is_first)
    restarted = cold_starts(is_first, 1.0)
    added = restarted & ~is_first
    assert restarted[0, 5] and not restarted[:, 0].any()
    assert added[1:].sum(1).eq(1).all() and added[0].sum() <= 1
    assert added.any(0)[1:].all()  # every later step is drawn somewhere in 64 windows
    half = (cold_starts(torch.zeros(4000, 8, dtype=torch.bool), 0.5).sum(1) == 1).float()
    assert 0.45 < half.mean() < 0.55


def test_select_state_merges_rows():
    old = {"a": torch.zeros(3, 2), "b": torch.zeros(3)}
    new = {"a": torch.ones(3, 2), "b": torch.ones(3)}
    merged = select_state(torch.tensor([True, False, True]), new, old)
    assert merged["a"][:, 0].tolist() == [1, 0, 1] and merged["b"].tolist() == [1, 0, 1]


def test_decode_runs_in_chunks_on_a_cpu_and_in_one_pass_on_an_accelerator(tiny_dataset):
    assert decode_chunk(torch.device("cpu")) == 64
    assert decode_chunk(torch.device("cuda")) is None
    model, batch, state = started(tiny_dataset, seed=4)
    rows = torch.arange(150) % 3  # more rows than one chunk, and a part chunk at the end
    big = {key: value[rows] for key, value in state.items()}
    features = model.features(big)  # [150, F]
    with torch.no_grad():
        chunked = model._render(features, chunk=64)
        one_pass = model._render(features)
        decoded = model.decode(big)
    torch.testing.assert_close(chunked, one_pass, rtol=0, atol=1e-5)
    assert torch.equal(decoded["image"], float_to_images(chunked[:, :3]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decode_on_cuda_matches_the_cpu(tiny_dataset):
    model, batch, state = started(tiny_dataset, seed=5)
    with torch.no_grad():
        on_cpu = model.decode(state)["image"]
        on_cuda = model.cuda().decode({k: v.cuda() for k, v in state.items()})["image"]
    assert (on_cuda.cpu().int() - on_cpu.int()).abs().max() <= 1


def test_without_a_background_the_decoder_paints_every_pixel(tiny_dataset):
    """A moving camera (Drive) leaves no static background: with background="none" the
    median frame is not fitted and the rendered frame does not depend on it."""
    batch = WindowDataset(*tiny_dataset, 6).sample(2, np.random.default_rng(0))
    model = tiny_model(background="none", foreground_weight=0.0)
    model.prepare(batch)
    assert model.background.abs().sum() == 0
    features = torch.randn(2, model.feature_dim)
    with torch.no_grad():
        before = model._render(features)
        model.background.fill_(0.3)
        assert torch.equal(model._render(features), before)
        loss, _ = model.loss(batch)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="foreground_weight=0"):
        tiny_model(background="none")
    with pytest.raises(ValueError, match="background must be one of"):
        tiny_model(background="learned")


def grasp_states(gripper, obj, velocity, steps: int = 1, table: bool = False) -> torch.Tensor:
    """Grasp state vectors [steps + 1, 24] of an upright object (half height 3.5 cm) that
    starts at ``obj`` with ``velocity`` and flies ballistically (or, on the ``table``, keeps
    its velocity), the gripper still."""
    t = np.arange(steps + 1)[:, None] * grasp.CONTROL_DT
    gravity = np.array([0.0, 0.0, 0.0 if table else -9.81])
    positions = np.asarray(obj) + np.asarray(velocity) * t + 0.5 * gravity * t**2
    velocities = np.asarray(velocity) + gravity * t
    rows = [
        grasp.state_vector(
            np.asarray(gripper), np.zeros(3), 0.1, p, (1, 0, 0, 0), v, np.zeros(3), 0.035
        )
        for p, v in zip(positions, velocities, strict=True)
    ]
    return torch.from_numpy(np.stack(rows))


FAR_GRIPPER = (-0.06, 0.0, 0.22)  # fingertips 9 cm beside and 11.5 cm above a resting object


def test_grasp_rule_marks_untouched_flight_and_rest_only():
    flying = grasp_states(FAR_GRIPPER, (0.3, 0.3, 0.3), (0.2, -0.1, 0.5))
    resting = grasp_states(FAR_GRIPPER, (0.03, 0.0, 0.035), (0.0, 0.0, 0.0), table=True)
    held = grasp_states((0.0, 0.0, 0.2), (0.0, 0.0, 0.13), (0.0, 0.0, 0.0))
    pushed = grasp_states(FAR_GRIPPER, (0.03, 0.0, 0.035), (0.1, 0.0, 0.0), table=True)
    states = torch.cat([flying[:1], resting[:1], held[:1], pushed[:1]])
    flight, rest = TASKS["grasp"].free_motion.phases(states)
    assert flight.tolist() == [True, False, False, False]
    assert rest.tolist() == [False, True, False, False]
    numpy_flight, numpy_rest = grasp.free_motion_phases(states.numpy())  # numpy works alike
    assert numpy_flight.tolist() == flight.tolist() and numpy_rest.tolist() == rest.tolist()
    assert TASKS["grasp"].free_motion.dt == grasp.CONTROL_DT


def test_conservation_error_is_zero_on_free_motion_and_positive_when_broken():
    model = tiny_model(conservation_weight=1.0, task="grasp")
    model.motion_std.uniform_(0.01, 0.1)  # as fitted on data: any positive scale
    flying = grasp_states(FAR_GRIPPER, (0.3, 0.3, 0.3), (0.2, -0.1, 0.5), steps=3)
    resting = grasp_states(FAR_GRIPPER, (0.03, 0.0, 0.035), (0.0, 0.0, 0.0), 3, table=True)
    for states in (flying, resting):
        before, change = states[:-1], (states[1:] - states[:-1]) / model.motion_std  # [3, 24]
        error, marked = model._free_motion_error(before, change)
        assert marked.all()
        torch.testing.assert_close(error, torch.zeros(3), atol=1e-6, rtol=0)
    flight_change = (flying[1:] - flying[:-1]) / model.motion_std
    no_gravity, hover = flight_change.clone(), flight_change.clone()
    no_gravity[:, 16] = 0.0  # velocity kept: no fall
    hover[:, 7] += 0.5  # drifting sideways by half a std per step
    drift = torch.zeros(3, 24)
    drift[:, 8] = 0.5  # an object at rest creeping along y
    for before, broken in ((flying, no_gravity), (flying, hover), (resting, drift)):
        error, _ = model._free_motion_error(before[:-1], broken)
        assert (error > 0.1).all()


def test_conservation_refuses_a_task_without_a_free_motion_declaration():
    with pytest.raises(ValueError, match="drive.*declares none"):
        tiny_model(conservation_weight=1.0, task="drive")
    with pytest.raises(ValueError, match="needs the data's task"):
        tiny_model(conservation_weight=1.0)
    with pytest.raises(ValueError, match="conservation_horizon"):
        tiny_model(conservation_horizon=-1)
    tiny_model(task="drive")  # the declaration is needed only with the prior on


def test_conservation_adds_its_weighted_term_and_leaves_the_rest_of_the_loss(tiny_dataset):
    batch = WindowDataset(*tiny_dataset, 8).sample(3, np.random.default_rng(0))  # 8 at rest

    def loss(**overrides):
        model = tiny_model(cold_start_rate=0.5, **overrides)
        model.prepare(batch)
        torch.manual_seed(1)
        total, metrics = model.loss(batch)
        draws.append(torch.get_rng_state())
        return total, metrics

    draws = []

    base, base_metrics = loss()
    off, off_metrics = loss(task="grasp", conservation_weight=0.0)
    torch.testing.assert_close(off, base, rtol=0, atol=0)
    assert "conservation" not in off_metrics
    on, metrics = loss(task="grasp", conservation_weight=2.0)
    assert 0 < metrics["conservation_marked"] <= 1 and metrics["conservation"] > 0
    torch.testing.assert_close(on, base + 2.0 * metrics["conservation"], rtol=1e-5, atol=1e-5)
    assert all(metrics[key] == value for key, value in base_metrics.items() if key != "loss")
    assert all(torch.equal(draw, draws[0]) for draw in draws)  # the prior draws nothing
    _, one_step = loss(task="grasp", conservation_weight=2.0, conservation_horizon=0)
    assert one_step["conservation_marked"] != metrics["conservation_marked"]  # imagined steps
    on.backward()


def test_conservation_trains_the_motion_head_alone(tiny_dataset):
    """The prior's gradient reaches the motion head and nothing else: the latent, images and
    outcome heads learn as they would without it."""
    batch = WindowDataset(*tiny_dataset, 8).sample(3, np.random.default_rng(0))
    model = tiny_model(task="grasp", conservation_weight=1.0)
    model.prepare(batch)
    deter, stoch, prior, _ = model._observe(batch, None, straight_through=True)
    features = torch.cat([deter, model._draw(prior.flatten(0, 1), None, True).view_as(stoch)], -1)
    motion, valid = state_motion(batch)
    previous = (batch["state"] - motion).flatten(0, 1)
    one_step = (previous, features.flatten(0, 1), valid.flatten())
    conservation, _ = model.conservation_loss(batch, deter, stoch, one_step)
    conservation.backward()
    trained = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert trained == {"motion_head"}


def test_the_trainer_names_the_data_task_in_the_config(tiny_checkpoint):
    assert read_card(tiny_checkpoint)["config"]["task"] == "grasp"


def copying(model):
    """``model`` with a decoder whose alpha is 0 everywhere: it renders its background."""
    last = model.decoder.deconvs[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[3] = -1e4  # sigmoid -> 0
    return model


def test_anchor_frames_are_the_frame_of_the_last_restart():
    pixels = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1, 1, 1)  # frame ids
    is_first = torch.tensor([[0, 0, 1, 0, 0], [0, 1, 0, 0, 1]], dtype=torch.bool)
    anchors = anchor_frames(pixels, is_first).flatten(1)  # [B, T]
    assert anchors.tolist() == [[0, 0, 2, 2, 2], [5, 6, 6, 6, 9]]


def test_with_an_anchor_a_copying_decoder_pays_for_what_moved_since_the_restart(tiny_dataset):
    """A decoder that shows its anchor costs nothing only if the anchor is the target frame
    itself: its image loss is the error of each frame against the last restart's frame."""
    batch = WindowDataset(*tiny_dataset, 6).sample(3, np.random.default_rng(1))
    batch["is_first"] = torch.zeros_like(batch["is_first"])
    batch["is_first"][:, 3] = True
    model = copying(tiny_model(background="anchor", foreground_weight=0.0))
    model.prepare(batch)
    _, metrics = model.loss(batch)
    pixels = images_to_float(batch["image"])  # [B, T, 3, H, W]
    anchors = pixels[:, [0, 0, 0, 3, 3, 3]]
    expected = (anchors - pixels).square().sum((2, 3, 4)).mean()
    assert expected > 0
    assert metrics["image"] == pytest.approx(expected.item(), rel=1e-5)


def test_an_anchor_rollout_with_zero_alpha_shows_the_last_real_frame(tiny_dataset):
    """With alpha 0 a rollout shows the context's last frame at every step, an observed frame
    replaces it, and states of several envs merge with their anchors."""
    batch = WindowDataset(*tiny_dataset, 6).sample(3, np.random.default_rng(3))
    model = copying(tiny_model(background="anchor"))
    model.prepare(batch)
    context = {"image": batch["image"][:, :2], "state": batch["state"][:, :2]}
    with torch.no_grad():
        state = model.init_state(context, batch["action"][:, :2])
        for t in range(2, 5):
            state = model.step(state, batch["action"][:, t])
            assert torch.equal(model.decode(state)["image"], batch["image"][:, 1])
        obs = {"image": batch["image"][:, 5], "state": batch["state"][:, 5]}
        observed = model.observe(state, batch["action"][:, 5], obs)
        assert torch.equal(model.decode(observed)["image"], batch["image"][:, 5])
        merged = select_state(torch.tensor([True, False, True]), observed, state)
        shown = model.decode(merged)["image"]
    assert torch.equal(shown[[0, 2]], batch["image"][[0, 2], 5])
    assert torch.equal(shown[1], batch["image"][1, 1])
    assert model.background.abs().sum() == 0  # no median is fitted or used


def drive_frames(steps: int = 4) -> dict[str, torch.Tensor]:
    """RGB-D frames, states and actions of ``Phys-Drive-v0`` driving ahead in the replay
    layout, [1, T, ...] (no reward or outcome: zeros)."""
    import gymnasium as gym

    action = np.array([0.2, 1.0, -1.0], np.float32)  # a little left, full throttle
    with gym.make("Phys-Drive-v0", obs_mode="rgbd") as env:
        obs, _ = env.reset(seed=0)
        frames = [obs] + [env.step(action)[0] for _ in range(steps)]
    batch = {key: torch.from_numpy(np.stack([f[key] for f in frames]))[None] for key in obs}
    is_first = torch.zeros(1, steps + 1, dtype=torch.bool)
    is_first[:, 0] = True
    action = torch.from_numpy(np.tile(action, (1, steps + 1, 1)))
    flags = torch.zeros(1, steps + 1, dtype=torch.bool)
    outcomes = {"reward": torch.zeros(1, steps + 1), "terminated": flags, "success": flags}
    return batch | outcomes | {"action": action, "is_first": is_first}


def test_a_warp_background_shows_the_real_frame_from_the_moved_camera():
    """With alpha 0 and the depth of the new view, ``background="warp"`` shows the last real
    frame reprojected into the camera of the state now: far closer to the true frame than
    the frame itself wherever the view holds ground the real frame saw (not the car)."""
    frames = drive_frames()
    model = copying(
        build_model(
            "rssm",
            ModelSpec(64, 34, 3, depth=True),
            "tiny",
            {"background": "warp", "foreground_weight": 0.0},
            task="drive",
        )
    )
    model.prepare(frames)
    true_depth = frames["depth"][:, -1].permute(0, 3, 1, 2)  # [1, 1, H, W]
    decoder = model.decoder.forward
    model.decoder.forward = lambda x: torch.cat([decoder(x)[:, :4], true_depth], 1)
    with torch.no_grad():
        state = model.init_state({key: frames[key][:, :1] for key in ("image", "depth", "state")})
        start = model.decode(state)["image"].int()  # the anchor from its own camera
        assert (start - frames["image"][:, 0]).abs().max() <= 1
        state = model.step(state, frames["action"][:, 1]) | {"vector": frames["state"][:, -1]}
        shown = images_to_float(model.decode(state)["image"])
    truth, first = images_to_float(frames["image"][:, -1]), images_to_float(frames["image"][:, 0])
    ground = torch.ones(64, 64, dtype=torch.bool)
    ground[40:, 20:44] = False  # the car, which moves with the camera
    error = lambda image: (image - truth).square().mean(1)[0][ground].mean()  # noqa: E731
    assert error(shown) < 0.25 * error(first)  # 0.15 when written
    del model.decoder.forward  # the decoder's own depth again, for every training frame
    loss, _ = model.loss(frames)  # training warps each step's anchor by the true cameras
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="--obs-mode rgbd"):
        settings = {"background": "warp", "foreground_weight": 0.0}
        build_model("rssm", ModelSpec(64, 34, 3), "tiny", settings, task="drive")


def test_an_rgb_twin_continues_on_rgbd_with_its_latent_and_colours():
    """``adapt_weights``: an RSSM that painted every pixel of RGB frames loads into a warp
    model on RGB-D frames. The encoder ignores depth at first, so the posterior is the
    checkpoint's; the decoder keeps its RGB, and its alpha starts by showing the warped
    frame. Depth to RGB, and any other change of spec, is refused."""
    frames = drive_frames()
    none, warp = {"background": "none", "foreground_weight": 0.0}, {"background": "warp"}
    rgb = build_model("rssm", ModelSpec(64, 34, 3), "tiny", none, task="drive")
    rgbd = build_model("rssm", ModelSpec(64, 34, 3, True), "tiny", none | warp, task="drive")
    for model in (rgb, rgbd):
        model.prepare(frames)
    rgbd.load_state_dict(rgbd.adapt_weights(rgb.state_dict(), rgb.spec, none))
    with torch.no_grad():
        before = rgb.init_state({key: frames[key] for key in ("image", "state")})
        after = rgbd.init_state({key: frames[key] for key in ("image", "depth", "state")})
        for key in ("deter", "stoch"):
            torch.testing.assert_close(after[key], before[key])
        maps = rgbd.decoder(rgbd.features(after))  # [1, 5, H, W]
        torch.testing.assert_close(maps[:, :3], rgb.decoder(rgb.features(before))[:, :3])
    assert rgbd.decoder.deconvs[-1].bias[3] == -3.0  # the warped frame shows through
    with pytest.raises(ValueError, match="cannot continue"):
        rgb.adapt_weights(rgbd.state_dict(), rgbd.spec, none | warp)
    with pytest.raises(ValueError, match="cannot continue"):
        rgbd.adapt_weights(rgb.state_dict(), ModelSpec(64, 24, 3), none)


def weighted_term_metrics(batch, term: str, weight: float, wrap=None, **settings) -> dict:
    """The loss metrics of a tiny model with ``<term>_weight`` set (and ``settings``; ``wrap``
    applied to the model), after checking that the term adds exactly its weighted value and
    leaves every other metric as it is without it."""

    def loss(**overrides):
        model = tiny_model(**settings, **overrides)
        model = wrap(model) if wrap else model
        model.prepare(batch)
        torch.manual_seed(1)
        return model.loss(batch)

    base, base_metrics = loss()
    assert term not in base_metrics
    on, metrics = loss(**{f"{term}_weight": weight})
    torch.testing.assert_close(on, base + weight * metrics[term], rtol=1e-5, atol=1e-4)
    assert all(metrics[key] == value for key, value in base_metrics.items() if key != "loss")
    return metrics


def test_the_prior_image_term_scores_one_step_prior_frames_after_each_restart(tiny_dataset):
    """prior_image_weight adds its weighted term and leaves the rest of the loss; with a
    copying decoder it is the anchor's error, averaged over the steps after a restart."""
    batch = WindowDataset(*tiny_dataset, 6).sample(3, np.random.default_rng(1))
    batch["is_first"] = torch.zeros_like(batch["is_first"])
    batch["is_first"][:, 3] = True
    metrics = weighted_term_metrics(
        batch, "prior_image", 0.5, copying, background="anchor", foreground_weight=0.0
    )
    pixels = images_to_float(batch["image"])  # [B, T, 3, H, W]
    steps = [1, 2, 4, 5]  # not the window's first step nor the restart
    anchors = pixels[:, [0, 0, 3, 3]]
    expected = (anchors - pixels[:, steps]).square().sum((2, 3, 4)).mean()
    assert metrics["prior_image"] == pytest.approx(expected.item(), rel=1e-5)


def test_the_prior_outcome_term_scores_the_heads_on_one_step_prior_features(tiny_dataset):
    """prior_outcome_weight adds the weighted reward and done losses of the heads read on
    prior features, and leaves the rest of the loss."""
    batch = WindowDataset(*tiny_dataset, 6).sample(3, np.random.default_rng(2))
    metrics = weighted_term_metrics(batch, "prior_outcome", 2.0, done_weight=0.5)
    filtered = metrics["reward"] + 0.5 * metrics["done"]  # the same heads on posterior features
    assert metrics["prior_outcome"] > 0 and metrics["prior_outcome"] != pytest.approx(filtered)


def test_the_overshoot_term_is_the_open_loop_error_of_learned_env_steps(tiny_dataset):
    """overshoot_loss is the state error of ``step`` rollouts from each posterior state,
    averaged over the imagined steps that stay in the start's episode."""
    batch = WindowDataset(*tiny_dataset, 6).sample(3, np.random.default_rng(4))
    batch["is_first"][:, 3] = True  # an episode starts mid-window
    model = tiny_model(overshoot_horizon=2)
    model.prepare(batch)
    with torch.no_grad():
        deter, stoch, _, _ = model._observe(batch, None, straight_through=False)
        loss = model.overshoot_loss(batch, batch["is_first"], deter, stoch)
        errors = []
        for t in range(4):  # starts with two steps after them in the 6-step window
            state = {"deter": deter[:, t], "stoch": stoch[:, t], "vector": batch["state"][:, t]}
            for k in (1, 2):
                state = model.step(state, batch["action"][:, t + k])
                error = torch.nn.functional.huber_loss(
                    model.normalise_state(state["vector"]),
                    model.normalise_state(batch["state"][:, t + k]),
                    reduction="none",
                ).sum(-1)  # [3]
                if not batch["is_first"][0, t + 1 : t + k + 1].any():
                    errors.append(error)
    torch.testing.assert_close(loss, torch.cat(errors).mean())


def test_the_overshoot_term_adds_its_weight_and_trains_the_transition(tiny_dataset):
    batch = WindowDataset(*tiny_dataset, 6).sample(3, np.random.default_rng(2))
    metrics = weighted_term_metrics(batch, "overshoot", 0.5, overshoot_horizon=3)
    assert metrics["overshoot"] > 0
    model = tiny_model(overshoot_horizon=3)
    model.prepare(batch)
    deter, stoch, _, _ = model._observe(batch, None, straight_through=True)
    model.overshoot_loss(batch, batch["is_first"], deter, stoch).backward()
    assert model.gru.weight_hh.grad.abs().sum() > 0 and model.motion_head[0].weight.grad is not None


def test_the_rollout_image_term_scores_learned_env_rollouts_and_trains_the_decoder_alone():
    """rollout_image_loss renders ``step`` rollouts from the posterior after four frames over
    the start frame warped to the integrated state's camera, as a learned env decodes them;
    its gradient reaches the decoder and nothing else."""
    batch = drive_frames(steps=7)  # [1, 8, ...]
    settings = {"background": "warp", "foreground_weight": 0.0, "rollout_image_horizon": 3}
    model = build_model("rssm", ModelSpec(64, 34, 3, True), "tiny", settings, task="drive")
    model.prepare(batch)
    deter, stoch, _, _ = model._observe(batch, None, straight_through=False)
    pixels = model._pixels(batch)  # [1, 8, 4, H, W]
    loss = model.rollout_image_loss(batch, batch["is_first"], deter, stoch, pixels)
    with torch.no_grad():
        start = {key: batch[key][:, 3] for key in ("image", "depth", "state")}
        state = {"deter": deter[:, 3], "stoch": stoch[:, 3], "vector": start["state"]}
        state |= model._anchor(start)
        errors = []
        for t in (4, 5, 6):
            state = model.step(state, batch["action"][:, t])
            now = camera_poses("drive", state["vector"])
            relative = torch.linalg.inv(state["anchor_camera"]) @ now
            shown = model._render(model.features(state), state["anchor"], relative)
            errors.append((shown - pixels[:, t]).square().sum())
    torch.testing.assert_close(loss, torch.stack(errors).mean())
    model.zero_grad()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["decoder.linear.weight"].abs().sum() > 0
    assert all(g is None for name, g in grads.items() if not name.startswith("decoder."))
