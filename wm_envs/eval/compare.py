"""Physics against a learned simulator, on the same seeds and the same actions.

    wm-envs compare --task grasp --model rssm --episodes 20

For each seed of the split, ``Phys-<Task>-v0`` plays a whole episode under a noisy expert (even
episodes) or smooth random actions (odd episodes). ``WM-<Task>-v0`` then starts from real
frames of that episode -- the first frame, and a mid-episode frame just before the tracked
object first moves, where a still frame stops being a good guess -- and replays the same
actions open-loop to the end of the episode. Every rollout is scored on the same steps as the
baselines, to the physics episode's end: a learned env that terminates earlier is stepped on,
and its termination decides only its success. Reported against the horizon: image PSNR and
SSIM, foreground PSNR, the errors the task declares it tracks (``TaskSpec.tracked``: the object's
position for Grasp; the car's position and heading for Drive; the remaining height fraction and
block positions for Collapse), reward error; per rollout: success agreement. Baselines on the
same steps: repeating the start frame and its state ("copy"), the state extrapolated at the
velocity of the last two real states ("velocity"; the copy at an episode's first frame), and
for success the best constant guess (always "fail" or always "succeed").

Tasks whose episodes run longer than ``long_episodes`` steps (Drive's 300) also get their
tracked errors at ``long_steps`` (50 and 100) two ways: open loop from the first frame, and
re-anchored on the real frames every ``reanchor_every`` steps (as a user who resyncs a learned
env with physics would), each beside the copy of the last real state it saw.

Foreground PSNR scores only the pixels that differ from the background in the true or the
predicted frame (``metrics.foreground_psnr``). The background is the same for every model:
the per-pixel median of all physics frames of the compared episodes.

Seeds come in two fixed splits (``SPLITS``): ``val`` (90000-99999) for choosing between runs
and ``test`` (100000-199999) for the numbers a README or card reports. Both lie outside the
checkpoint's training data, which its card records as ``dataset.seed_ranges``; seeds that
overlap it, or a card that does not record it, are refused unless ``--allow-train-seeds``.
Writes ``compare.json``, ``compare.png`` (error vs horizon) and ``compare.mp4``
(physics | learned | difference).

For a model trained on RGB-D (DeepVerse) physics plays in ``obs_mode="rgbd"`` and the scores
add depth AbsRel and δ<1.25, the Chamfer distance of the world point clouds in cm and, where
the model reports its camera, the camera's position and rotation errors beside a camera that
stands still (``depth_scores``); the video adds physics | learned depth and ``depth.png``
shows depth side by side at a few horizons.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from wm_envs.checkpoint import read_card, shipped_checkpoint, write_model_card
from wm_envs.config import parse_overrides
from wm_envs.data.collect import SmoothRandomPolicy
from wm_envs.eval.metrics import (
    chamfer_cm,
    depth_errors,
    foreground_psnr,
    pose_errors,
    psnr,
    ssim,
    static_background,
)
from wm_envs.io import atomic_path, write_json, write_video
from wm_envs.learned_env import LearnedSimulator
from wm_envs.models import MODELS
from wm_envs.tasks import TASKS, camera_intrinsics, camera_poses, tracked_errors
from wm_envs.tasks.experts import make_expert

SPLITS = {"val": (90_000, 99_999), "test": (100_000, 199_999)}  # inclusive reset seeds
#: What a rollout keeps of each learned step, where the model gives it.
PREDICTED = ("image", "state", "depth", "camera_pose")
#: What a rollout keeps per step: the predictions and the heads' outcomes.
KEPT = (*PREDICTED, "reward", "terminated", "terminated_probability", "success_probability")


@dataclass(frozen=True)
class CompareConfig:
    task: str = "grasp"
    model: str = "rssm"
    checkpoint: str | None = None  # default: the shipped one
    episodes: int = 20
    split: str = "test"  # which seeds (SPLITS): "val" chooses between runs, "test" is reported
    allow_train_seeds: bool = False  # compare even on seeds the training data may hold
    horizon: int = 15
    context: int = 4  # real frames the model sees before a mid-episode start
    reanchor_every: int = 15  # steps between re-anchorings of the long-horizon rollout
    long_steps: tuple[int, ...] = (50, 100)  # episode steps the long-horizon errors are read at
    long_episodes: int = 200  # tasks with longer episodes get the long-horizon errors
    expert_noise: float = 0.3
    videos: int = 4
    out: str = "compare_out"
    device: str = "auto"
    record: bool = False  # also write the headline into the checkpoint's card.json (test only)
    #: The learned env's success and termination: its heads, or the task's rule on the
    #: predicted state ("state"; ``WorldModelEnv``'s ``success_from``).
    success_from: str = "head"
    #: Inference settings of the learned env (``model_settings``), comma-separated, e.g.
    #: "done_threshold=0.2,maskgit_steps=8"; empty: the checkpoint's own.
    model_settings: str = ""
    #: Also the success agreement the heads' flags reach at each of these done thresholds
    #: (``done_threshold``, e.g. 0.5,0.3,0.2), from the same rollouts, run at the highest
    #: (a rollout at a lower threshold is the same until it ends sooner): how a model's
    #: threshold is chosen on the validation split.
    done_thresholds: tuple[float, ...] = ()

    @property
    def seed(self) -> int:
        """The first reset seed of the split."""
        return split_seeds(self.split, self.episodes)[0]


def split_seeds(split: str, episodes: int) -> range:
    """The reset seeds of the first ``episodes`` episodes of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    first, last = SPLITS[split]
    if not 1 <= episodes <= last - first + 1:
        raise ValueError(
            f"the {split} split holds seeds {first}-{last}: 1 to {last - first + 1} episodes, "
            f"got {episodes}"
        )
    return range(first, first + episodes)


def check_held_out(card: dict, seeds: range, allow: bool) -> str:
    """Refuse ``seeds`` that overlap the reset seeds of the checkpoint's dataset (the card's
    ``dataset.seed_ranges``: inclusive [first, last] pairs), or that cannot be checked because
    the card lacks them, unless ``allow``. Returns what was found, for the report."""
    ranges = card.get("dataset", {}).get("seed_ranges")
    span = f"seeds {seeds[0]}-{seeds[-1]}"
    if ranges is None:
        problem = (
            f"the checkpoint's card records no dataset.seed_ranges, so {span} cannot be "
            "checked against its training data"
        )
    else:
        if not all(len(pair) == 2 and pair[0] <= pair[1] for pair in ranges):
            raise ValueError(
                f"card dataset.seed_ranges must be [first, last] pairs with first <= last, "
                f"got {ranges}"
            )
        overlap = [
            [first, last] for first, last in ranges if first <= seeds[-1] and last >= seeds[0]
        ]
        if not overlap:
            return f"held out: {span} lie outside the training data's seed ranges {ranges}"
        problem = f"{span} overlap the training data's seed ranges {overlap}"
    if not allow:
        raise ValueError(
            f"{problem}; pass --allow-train-seeds to compare anyway (the numbers then do not "
            "measure held-out episodes)"
        )
    print(f"warning: {problem}; compared anyway (--allow-train-seeds)")
    return f"{problem}; compared anyway (--allow-train-seeds)"


def play_physics(
    task: str, seed: int, policy_kind: str, noise: float, obs_mode: str = "dict"
) -> dict:
    """One physics episode: observations [T+1] (with depth [T+1, H, W, 1] for ``obs_mode``
    "rgbd"), actions [T], rewards [T], success [T]."""
    with gym.make(f"Phys-{TASKS[task].name}-v0", obs_mode=obs_mode) as env:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        if policy_kind == "expert":
            policy = make_expert(env, noise=noise, seed=seed)
            policy.reset()
        else:
            policy = SmoothRandomPolicy(env.action_space, rng)
        images, states, actions, rewards, successes = [obs["image"]], [obs["state"]], [], [], []
        depths = [obs.get("depth")]
        done = False
        while not done:
            action = policy(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            images.append(obs["image"])
            states.append(obs["state"])
            depths.append(obs.get("depth"))
            actions.append(action)
            rewards.append(reward)
            successes.append(info["is_success"])
            done = terminated or truncated
    episode = {
        "image": np.stack(images),
        "state": np.stack(states),
        "action": np.stack(actions),
        "reward": np.array(rewards),
        "success": np.array(successes),
        "seed": seed,
        "policy": policy_kind,
    }
    return episode | ({"depth": np.stack(depths)} if obs_mode == "rgbd" else {})


def held_out_episodes(
    task: str, seed: int, count: int, noise: float, obs_mode: str = "dict"
) -> list[dict]:
    """``count`` physics episodes from seed ``seed`` on: even ones a noisy expert, odd ones
    smooth random actions."""
    return [
        play_physics(task, seed + i, "expert" if i % 2 == 0 else "random", noise, obs_mode)
        for i in range(count)
    ]


def mid_episode_start(states: np.ndarray, trigger: slice | None, horizon: int) -> int:
    """The step before the ``trigger`` position first moves by 5 mm (else, or with no
    trigger, the middle of the episode), leaving ``horizon`` steps after it."""
    last = len(states) - 1 - horizon
    if last < 1:
        return 0
    first = len(states) // 2
    if trigger is not None:
        moved = np.linalg.norm(states[:, trigger] - states[0, trigger], axis=1) > 0.005
        first = int(np.argmax(moved)) if moved.any() else first
    return int(np.clip(first - 1, 1, last))


def clip_around(images: np.ndarray, start: int, context: int, after: int = 4) -> np.ndarray:
    """``context`` real frames up to ``start`` and ``after`` frames past it, shifted to fit
    the episode: [context + after, H, W, 3]."""
    first = int(np.clip(start - context + 1, 0, len(images) - context - after))
    return images[first : first + context + after]


def rollout_learned(
    simulator: LearnedSimulator,
    episodes: list[dict],
    starts: list[int],
    context: int,
    max_steps: int | None = None,
    probabilities: bool = False,
) -> list[dict]:
    """Start the learned simulator from real frames up to each episode's ``start`` and replay
    the rest of its actions open loop (at most ``max_steps``) to the episode's end. Its
    ``success`` is whether it reports success up to the step it first terminates (its head,
    or the task's rule: ``success_from``), where a user's episode would end; the steps after
    that are still predicted, so that every model is scored on the same steps as physics and
    the baselines. Rollouts with the same number of context frames run as one batch. With
    ``probabilities``, each also keeps the heads' terminated and success probabilities [T]."""
    firsts = [max(0, start - context + 1) for start in starts]
    groups: dict[int, list[int]] = {}
    for i, (first, start) in enumerate(zip(firsts, starts, strict=True)):
        groups.setdefault(start + 1 - first, []).append(i)
    predictions: list[dict] = [{} for _ in episodes]
    action_dim = simulator.model.spec.action_dim
    keys = [key for key in ("image", "state", "depth") if key in episodes[0]]
    if simulator.obs_mode != "rgbd":
        keys = [key for key in keys if key != "depth"]
    for frames, rows in groups.items():
        observation = {
            key: np.stack([episodes[i][key][firsts[i] : starts[i] + 1] for i in rows])
            for key in keys
        }  # [N, K, ...]
        led_in = np.zeros((len(rows), frames, action_dim), np.float32)  # the first is ignored
        rest = [episodes[i]["action"][starts[i] :][:max_steps] for i in rows]
        plan = np.zeros((max(map(len, rest)), len(rows), action_dim), np.float32)  # [T, N, A]
        for j, i in enumerate(rows):
            led_in[j, 1:] = episodes[i]["action"][firsts[i] : starts[i]]
            plan[: len(rest[j]), j] = rest[j]
        options = {"observation": observation, "actions": led_in}
        state, _ = simulator.start_from(options, None, len(rows), batched=True, generator=None)
        held = torch.zeros(len(rows), dtype=torch.long, device=simulator.device)
        steps = []
        for action in torch.from_numpy(np.clip(plan, -1, 1)).to(simulator.device):
            state, reward, terminated, success = simulator.step(state, action, None)
            terminated, success, held = simulator.judge(state, terminated, success, held)
            obs = simulator.observe(state)  # a dict, or the state [N, S] of a state-only model
            obs = obs if isinstance(obs, dict) else {"state": obs}
            obs |= simulator.model.extra_info(state)  # DeepVerse: its camera pose
            outcome = {"reward": reward.float(), "terminated": terminated, "success": success}
            if probabilities:
                with torch.inference_mode():
                    _, ending, succeeding = simulator.model.outcome_scores(state)
                outcome |= {
                    "terminated_probability": ending.float(),
                    "success_probability": succeeding.float(),
                }
            steps.append(
                {key: obs[key].cpu().numpy() for key in PREDICTED if key in obs}
                | {key: value.cpu().numpy() for key, value in outcome.items()}
            )
        rollout = {key: np.stack([step[key] for step in steps], 1) for key in steps[0]}  # [N, T]
        for j, i in enumerate(rows):
            steps_run = len(rest[j])
            ended = steps_until_end(rollout["terminated"][j, :steps_run])
            predictions[i] = {
                key: rollout[key][j, :steps_run] for key in KEPT if key in rollout
            } | {"success": bool(rollout["success"][j, :ended].any())}
    return predictions


def baseline_states(states: np.ndarray, start: int, steps: int) -> dict[str, np.ndarray]:
    """The state baselines [steps, S] after real step ``start``: "copy" repeats its state,
    "velocity" extrapolates the change into it (zero at an episode's first frame)."""
    velocity = states[start] - states[max(start - 1, 0)]
    ahead = np.arange(1, steps + 1)[:, None]  # [steps, 1]
    return {
        "copy": np.repeat(states[start : start + 1], steps, 0),
        "velocity": states[start] + ahead * velocity,
    }


def steps_until_end(terminated: np.ndarray) -> int:
    """How many steps a rollout runs given its terminated flags [T]: up to and including
    the first one set, else all of them."""
    ended = np.flatnonzero(terminated)
    return int(ended[0]) + 1 if len(ended) else len(terminated)


def success_at_thresholds(prediction: dict, thresholds: tuple[float, ...]) -> dict[float, bool]:
    """Whether a rollout's heads report success at each done threshold: its success
    probability [T] above the threshold up to the first step its terminated probability [T]
    is (where a rollout at that threshold ends)."""
    successes = {}
    for threshold in thresholds:
        length = steps_until_end(prediction["terminated_probability"] > threshold)
        successes[threshold] = bool((prediction["success_probability"][:length] > threshold).any())
    return successes


def score(
    task: str,
    prediction: dict,
    episode: dict,
    start: int,
    horizon: int,
    background: torch.Tensor,
    done_thresholds: tuple[float, ...] = (),
) -> dict:
    """Per-horizon errors of one rollout and of the baselines (repeat the start frame and
    its state; extrapolate its velocity), with foreground PSNR over pixels that differ from
    ``background`` [H, W, 3]; whether it agrees with physics on success (and at each of
    ``done_thresholds``), and whether physics succeeds."""
    steps = min(horizon, len(prediction["state"]), len(episode["state"]) - 1 - start)
    truth_state = episode["state"][start + 1 : start + 1 + steps]
    true_success = bool(episode["success"][start:].any())
    scores = {
        "reward_error": np.abs(
            prediction["reward"][:steps] - episode["reward"][start : start + steps]
        )
    }
    if "image" in prediction:  # models with an image decoder
        truth_image = torch.from_numpy(episode["image"][start + 1 : start + 1 + steps])
        model_image = torch.from_numpy(prediction["image"][:steps])
        copy_image = torch.from_numpy(episode["image"][start]).expand_as(truth_image)
        scores |= {
            "psnr": psnr(model_image, truth_image).numpy(),
            "fg_psnr": foreground_psnr(model_image, truth_image, background).numpy(),
            "ssim": ssim(model_image, truth_image).numpy(),
            "copy_psnr": psnr(copy_image, truth_image).numpy(),
            "copy_fg_psnr": foreground_psnr(copy_image, truth_image, background).numpy(),
            "copy_ssim": ssim(copy_image, truth_image).numpy(),
        }
    if "depth" in prediction:
        scores |= depth_scores(task, prediction, episode, start, steps)
    scores |= tracked_errors(task, prediction["state"][:steps], truth_state)
    for name, states in baseline_states(episode["state"], start, steps).items():
        errors = tracked_errors(task, states, truth_state)
        scores |= {f"{name}_{key}": value for key, value in errors.items()}
    swept = success_at_thresholds(prediction, done_thresholds)
    return scores | {
        "success_agrees": bool(prediction["success"]) == true_success,
        **{f"success_agrees_at_{t:g}": success == true_success for t, success in swept.items()},
        "true_success": true_success,
    }


def depth_scores(task: str, prediction: dict, episode: dict, start: int, steps: int) -> dict:
    """Depth and camera errors of one rollout [steps] beside repeating the start frame:
    depth AbsRel and δ<1.25; the Chamfer distance (cm) between the world point clouds of
    predicted and true depth, each unprojected with its camera (the model's predicted pose
    where it reports one, else the task camera at its predicted state; the start frame's for
    the copy); and that camera's position (cm) and rotation (degrees) errors beside a camera
    that stands still at the start pose. True poses come from the task's camera
    definition (``TaskSpec.camera``), which the physics env's ``info["camera_pose"]`` matches."""
    truth = torch.from_numpy(episode["depth"][start + 1 : start + 1 + steps])  # [T, H, W, 1]
    model = torch.from_numpy(prediction["depth"][:steps])
    copy = torch.from_numpy(episode["depth"][start]).expand_as(truth)
    poses = camera_poses(task, episode["state"][start : start + 1 + steps]).double()
    true_pose, still = poses[1:], poses[:1].expand_as(poses[1:])  # [T, 4, 4]
    if "camera_pose" in prediction:
        model_pose = torch.from_numpy(prediction["camera_pose"][:steps]).double()
    else:  # what the model's own state says of the camera
        model_pose = camera_poses(task, prediction["state"][:steps]).double()
    camera = camera_intrinsics(task, truth.shape[-2])
    scores = {}
    for prefix, depth, pose in (("", model, model_pose), ("copy_", copy, still)):
        absrel, delta = depth_errors(depth, truth)
        scores |= {
            f"{prefix}depth_absrel": absrel.numpy(),
            f"{prefix}depth_delta1": delta.numpy(),
            f"{prefix}chamfer_cm": chamfer_cm(depth, pose, truth, true_pose, camera).numpy(),
        }
    for prefix, pose in (("", model_pose), ("still_", still)):
        translation, rotation = pose_errors(pose, true_pose)
        scores |= {
            f"{prefix}camera_translation_cm": translation.numpy(),
            f"{prefix}camera_rotation_deg": rotation.numpy(),
        }
    return scores


def long_horizon(
    task: str,
    simulator: LearnedSimulator,
    episodes: list[dict],
    open_loop: list[dict],
    config: CompareConfig,
) -> dict:
    """Mean tracked errors at each of ``config.long_steps`` that the episodes reach: open loop
    from the first frame (``open_loop``: those rollouts), and re-anchored on the real frames
    every ``config.reanchor_every`` steps, each beside the copy of the last real state it
    saw."""
    every = config.reanchor_every
    steps = [step for step in config.long_steps if any(len(e["action"]) >= step for e in episodes)]
    if not steps:
        return {}
    anchors = [list(range(0, len(episode["action"]), every)) for episode in episodes]
    flat = [(i, anchor) for i, rows in enumerate(anchors) for anchor in rows]
    segments = rollout_learned(
        simulator, [episodes[i] for i, _ in flat], [a for _, a in flat], config.context, every
    )
    by_anchor = {key: segment for key, segment in zip(flat, segments, strict=True)}
    errors: dict[str, list] = {}
    for step in steps:
        for i, episode in enumerate(episodes):
            if len(episode["action"]) < step:
                continue
            truth = episode["state"][step : step + 1]  # [1, S]
            anchor = (step - 1) // every * every
            predictions = {
                "open_loop": open_loop[i]["state"][step - 1 : step],
                "open_loop_copy": episode["state"][:1],
                "reanchored": by_anchor[(i, anchor)]["state"][step - 1 - anchor : step - anchor],
                "reanchored_copy": episode["state"][anchor : anchor + 1],
            }
            for name, state in predictions.items():
                for key, value in tracked_errors(task, state, truth).items():
                    errors.setdefault(f"{name}_{key}_{step}", []).append(float(value[0]))
    return {key: round(float(np.mean(values)), 4) for key, values in errors.items()}


def _mean_curves(scores: list[dict], horizon: int) -> dict:
    """Mean of each per-step metric at each horizon step (over rollouts that reach it and
    have a value there); per-rollout flags become rates."""
    curves = {}
    for key in scores[0]:
        if isinstance(scores[0][key], bool):
            curves[key] = float(np.mean([s[key] for s in scores]))
            continue
        padded = np.full((len(scores), horizon), np.nan)
        for row, s in enumerate(scores):
            padded[row, : len(s[key])] = s[key]
        reached = (~np.isnan(padded)).sum(0)  # rollouts with a value at each step
        mean = np.nansum(padded, axis=0) / np.maximum(reached, 1)
        curves[key] = np.where(reached > 0, mean, np.nan).round(4).tolist()
    return curves


def compare(config: CompareConfig) -> dict:
    """Run the comparison; write JSON, plot and video under ``config.out``."""
    started = time.perf_counter()
    task = TASKS[config.task]
    if not task.tracked:
        raise ValueError(f"task {config.task!r} declares no tracked quantities to compare")
    trigger = slice(*task.start_trigger) if task.start_trigger else None
    seeds = split_seeds(config.split, config.episodes)
    if config.record and config.split != "test":
        raise ValueError(
            "--record writes the card's headline, which reports the test split; run "
            f"--split {config.split} without --record (compare.json holds its numbers)"
        )
    if config.record and config.model_settings:
        raise ValueError(
            "--record writes the card's headline, which reports the checkpoint's own "
            f"settings; run --model-settings {config.model_settings!r} without --record"
        )
    settings = parse_overrides(
        list(filter(None, config.model_settings.split(","))), "--model-settings"
    )
    if config.done_thresholds:
        if config.record or config.success_from != "head" or "done_threshold" in settings:
            raise ValueError(
                "--done-thresholds sweeps the heads' done_threshold on one set of rollouts; "
                "run it without --record, --success-from state or a done_threshold in "
                "--model-settings"
            )
        if not all(0 < threshold < 1 for threshold in config.done_thresholds):
            raise ValueError(f"--done-thresholds must lie in (0, 1), got {config.done_thresholds}")
        settings["done_threshold"] = max(config.done_thresholds)
    folder = Path(config.checkpoint) if config.checkpoint else None
    folder = folder or shipped_checkpoint(config.model, config.task)
    card = read_card(folder)
    seed_check = check_held_out(card, seeds, config.allow_train_seeds)
    obs_mode = compared_obs_mode(config.model, card["spec"].get("depth", False))
    simulator = LearnedSimulator(
        config.task,
        config.model,
        config.checkpoint,
        obs_mode=obs_mode,
        device=config.device,
        success_from=config.success_from,
        model_settings=settings,
    )
    physics_mode = "rgbd" if obs_mode == "rgbd" else "dict"
    episodes = held_out_episodes(
        config.task, seeds[0], config.episodes, config.expert_noise, physics_mode
    )
    background = static_background(np.concatenate([episode["image"] for episode in episodes]))
    starts = {
        "first_frame": [0] * len(episodes),
        "mid_episode": [
            mid_episode_start(episode["state"], trigger, config.horizon) for episode in episodes
        ],
    }
    results, video_frames, long = {}, [], {}
    for name, rows in starts.items():
        predictions = rollout_learned(
            simulator, episodes, rows, config.context, probabilities=bool(config.done_thresholds)
        )
        results[name] = [
            score(
                config.task,
                prediction,
                episode,
                start,
                config.horizon,
                background,
                config.done_thresholds,
            )
            for prediction, episode, start in zip(predictions, episodes, rows, strict=True)
        ]
        if name == "first_frame" and task.max_episode_steps > config.long_episodes:
            long = long_horizon(config.task, simulator, episodes, predictions, config)
        if name == "mid_episode" and "image" in predictions[0]:
            for i in range(min(config.videos, len(episodes))):
                video_frames += side_by_side(episodes[i], predictions[i], rows[i], config.horizon)
        if name == "mid_episode" and "depth" in predictions[0]:
            plot_depth(episodes, predictions, rows, Path(config.out) / "depth.png")
    # Model-specific metrics (Genie: controllability, codebook usage) on the real frames
    # around each start: [episodes, context + 4, H, W, 3] per start kind.
    model_metrics = {}
    for name, rows in starts.items():
        clips = [
            clip_around(episode["image"], start, config.context)
            for episode, start in zip(episodes, rows, strict=True)
        ]
        batch = {"image": torch.from_numpy(np.stack(clips)).to(simulator.device)}
        metrics = simulator.model.validation_metrics(batch, config.context)
        if metrics:
            model_metrics[name] = metrics
    summary = {name: _mean_curves(scores, config.horizon) for name, scores in results.items()}
    checkpoint_card = simulator.card
    report = {
        "config": {**asdict(config), "seed": seeds[0]},
        "seeds": [seeds[0], seeds[-1]],
        "seed_check": seed_check,
        "checkpoint": {
            "path": str(config.checkpoint or "shipped"),
            "recipe": checkpoint_card.get("recipe"),
            "training_metrics": checkpoint_card.get("metrics"),
        },
        "results": summary,
        "headline": headline(summary, config.horizon),
        "long_horizon": long,
        "model_metrics": model_metrics,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    out = Path(config.out)
    write_json(out / "compare.json", report)
    plot(summary, out / "compare.png", f"{config.model} vs Phys-{task.name}-v0")
    if video_frames:
        write_video(out / "compare.mp4", video_frames, fps=10)
    print_headline(report["headline"])
    if long:
        print("long horizon: " + ", ".join(f"{key} {value:.3g}" for key, value in long.items()))
    for name, metrics in model_metrics.items():
        print(f"{name}: " + ", ".join(f"{key} {value:.3g}" for key, value in metrics.items()))
    if config.record:
        keys = ("config", "seeds", "seed_check", "headline", "long_horizon", "model_metrics")
        recorded = {key: report[key] for key in keys}
        card = {**read_card(folder), "compare": recorded}
        write_json(folder / "card.json", card)
        write_model_card(folder)
    return report


def compared_obs_mode(model: str, depth: bool = False) -> str:
    """ "rgbd" for a model trained on depth, "dict" (images and state) for other models with
    an image decoder, else "state"."""
    modes = MODELS[model].obs_modes
    if depth and "rgbd" in modes:
        return "rgbd"
    return "dict" if "dict" in modes else "state"


def tracked_names(curves: dict) -> list[str]:
    """The task's tracked quantities among a summary's curves (those with baselines)."""
    return [key for key in curves if f"velocity_{key}" in curves]


def headline(summary: dict, horizon: int) -> dict:
    """The numbers the README quotes: 1-step and last-step figures per start kind, each
    beside its baselines (repeat the start frame; extrapolate the state's velocity; for
    success, the best constant guess)."""
    rows = {}
    for name, curves in summary.items():
        tracked = {}
        for key in tracked_names(curves):
            tracked |= {
                f"{prefix}{key}_{horizon}": curves[f"{prefix}{key}"][-1]
                for prefix in ("", "copy_", "velocity_")
            }
            tracked[f"{key}_beats_copy_every_step"] = bool(
                np.all(np.array(curves[key]) < np.array(curves[f"copy_{key}"]))
            )
        images = {}
        if "psnr" in curves:  # models with an image decoder
            images = {
                f"{prefix}{metric}_{step}": curves[f"{prefix}{metric}"][at]
                for metric in ("psnr", "fg_psnr")
                for step, at in ((1, 0), (horizon, -1))
                for prefix in ("", "copy_")
            } | {f"ssim_{horizon}": curves["ssim"][-1]}
        geometry = {}
        for metric in ("depth_absrel", "depth_delta1", "chamfer_cm"):
            if metric in curves:
                geometry |= {
                    f"{prefix}{metric}_{step}": curves[f"{prefix}{metric}"][at]
                    for step, at in ((1, 0), (horizon, -1))
                    for prefix in ("", "copy_")
                }
        for metric in ("camera_translation_cm", "camera_rotation_deg"):
            if metric in curves:
                geometry |= {
                    f"{prefix}{metric}_{horizon}": curves[f"{prefix}{metric}"][-1]
                    for prefix in ("", "still_")
                }
        rows[name] = {
            **images,
            **geometry,
            **tracked,
            "reward_error_mean": float(np.nanmean(curves["reward_error"])),
            "success_agreement": curves["success_agrees"],
            **{
                key.replace("agrees", "agreement"): value
                for key, value in curves.items()
                if key.startswith("success_agrees_at_")
            },
            "constant_success_agreement": max(curves["true_success"], 1 - curves["true_success"]),
        }
    return rows


def print_headline(rows: dict) -> None:
    keys = list(next(iter(rows.values())))
    print("| start | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


def side_by_side(episode: dict, prediction: dict, start: int, horizon: int) -> list:
    """Frames of physics | learned | |difference| (and, for RGB-D rollouts, physics depth |
    learned depth), upscaled 4x for viewing."""
    frames = []
    for h in range(min(horizon, len(prediction["image"]), len(episode["image"]) - 1 - start)):
        truth = episode["image"][start + 1 + h]
        learned = prediction["image"][h]
        difference = np.abs(truth.astype(np.int16) - learned.astype(np.int16)).astype(np.uint8)
        panels = [truth, learned, difference]
        if "depth" in prediction:
            far = float(episode["depth"][start:].max())
            panels += [
                depth_image(episode["depth"][start + 1 + h], far),
                depth_image(prediction["depth"][h], far),
            ]
        row = np.concatenate(panels, axis=1)
        frames.append(np.kron(row, np.ones((4, 4, 1), np.uint8)))
    return frames


def depth_image(depth: np.ndarray, far: float) -> np.ndarray:
    """Depth [H, W, 1] in metres -> a grey uint8 image [H, W, 3], near bright, ``far`` black."""
    grey = np.clip(1 - depth / far, 0, 1) * 255
    return np.repeat(grey.round().astype(np.uint8), 3, axis=-1)


def plot_depth(
    episodes: list[dict],
    predictions: list[dict],
    starts: list[int],
    path: Path,
    steps: tuple[int, ...] = (1, 5, 15),
) -> None:
    """Depth side by side for up to 4 rollouts: per row the start frame's RGB, then physics
    and learned depth at each of ``steps`` open-loop steps (near bright)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(range(min(4, len(episodes))))
    figure, axes = plt.subplots(
        len(rows),
        1 + 2 * len(steps),
        figsize=(2 * (1 + 2 * len(steps)), 2 * len(rows)),
        squeeze=False,
    )
    for row in rows:
        episode, prediction, start = episodes[row], predictions[row], starts[row]
        far = float(episode["depth"][start:].max())
        axes[row, 0].imshow(episode["image"][start])
        axes[row, 0].set_title("start RGB", fontsize=8)
        for k, step in enumerate(steps):
            step = min(step, len(prediction["depth"]), len(episode["depth"]) - 1 - start)
            for j, (name, depth) in enumerate(
                (
                    ("physics", episode["depth"][start + step]),
                    ("learned", prediction["depth"][step - 1]),
                )
            ):
                axis = axes[row, 1 + 2 * k + j]
                axis.imshow(depth[..., 0], cmap="magma_r", vmin=0, vmax=far)
                axis.set_title(f"{name} depth, step {step}", fontsize=8)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
    plt.close(figure)


def plot(summary: dict, path: Path, title: str) -> None:
    """PSNR, foreground PSNR and each tracked error against the horizon, model vs
    repeat-the-start-frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(summary.values()))
    panels = [("psnr", "PSNR (dB)"), ("fg_psnr", "foreground PSNR (dB)")] if "psnr" in first else []
    panels += [(key, f"{key} error") for key in tracked_names(first)]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    axes = axes[0]
    for name, curves in summary.items():
        steps = np.arange(1, len(curves[panels[0][0]]) + 1)
        for axis, (key, label) in zip(axes, panels, strict=True):
            (line,) = axis.plot(steps, curves[key], label=f"model, {name}")
            axis.plot(
                steps,
                curves[f"copy_{key}"],
                "--",
                color=line.get_color(),
                label=f"repeat start frame, {name}",
            )
            axis.set_xlabel("open-loop step")
            axis.set_ylabel(label)
    axes[0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
