"""Collect episodes from a Phys-* env into a Minari dataset, in parallel and resumably.

Workers (local processes or Ray tasks) build their own env and return whole episodes; one
writer (this process) stages each finished episode as its own file, atomically. When every
episode is staged, the Minari dataset (HDF5) is built in a scratch folder and renamed into
place. A killed run loses at most the episodes in flight; re-running the same command
continues from the staged episodes, with no duplicate and no half-written file.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from wm_envs.agents.scripted import ScriptedPolicy, random_grasp_flaws
from wm_envs.io import atomic_path, json_text, write_json, write_video
from wm_envs.tasks import task_of
from wm_envs.tasks.experts import make_expert

POLICIES = ("expert", "random", "mixed", "flawed", "agent", "planner")


@dataclass(frozen=True)
class CollectConfig:
    """Everything that decides the content of a dataset (printed and stored with it)."""

    env_id: str = "Phys-Grasp-v0"
    episodes: int = 100
    policy: str = "mixed"
    noise: float = 0.2  # std of the expert's Gaussian action noise ("expert" policy)
    seed: int = 0  # episode i is reset with seed + i
    obs_mode: str = "dict"
    agent: str = ""  # the "agent" policy: a trained agent's folder or shipped name
    planner: str = ""  # the "planner" policy's settings ("samples=128,horizon=10")
    checkpoint: str = ""  # the world model the planner plans in; empty = the shipped rssm

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if (self.policy == "agent") != bool(self.agent):
            raise ValueError("--agent names the agent the 'agent' policy runs, and only that")
        if self.policy != "planner" and (self.planner or self.checkpoint):
            raise ValueError("--planner and --checkpoint set the 'planner' policy, and only that")
        if self.env_id not in gym.registry:
            known = sorted(i for i in gym.registry if i.startswith("Phys-"))
            raise ValueError(f"unknown env id {self.env_id!r}; known: {known}")
        if self.policy == "flawed" and task_of(self.env_id) != "grasp":
            raise ValueError(f"the 'flawed' policy draws Grasp flaws; {self.env_id} is not Grasp")
        if self.obs_mode not in ("dict", "rgbd"):
            raise ValueError(
                f"datasets need images and state: obs_mode 'dict' or 'rgbd', got {self.obs_mode!r}"
            )
        if self.episodes < 1:
            raise ValueError(f"episodes must be positive, got {self.episodes}")

    @property
    def default_dataset_id(self) -> str:
        task = task_of(self.env_id)
        return f"{task}/{self.policy}-v0"


class SmoothRandomPolicy:
    """Temporally correlated random actions (AR(1)), which explore further than white noise."""

    def __init__(self, space: gym.spaces.Box, rng: np.random.Generator, keep: float = 0.8):
        self.space, self.rng, self.keep = space, rng, keep
        self.action = np.zeros(space.shape, np.float32)

    def __call__(self, obs) -> np.ndarray:
        fresh = self.rng.uniform(self.space.low, self.space.high)
        self.action = np.clip(self.keep * self.action + (1 - self.keep) * 2.0 * fresh, -1, 1)
        return self.action.astype(np.float32)


class MixedPolicy:
    """What one episode of the dataset is driven by, drawn per episode.

    ``mixed``: 50% noisy expert (noise std 0.05-0.3), 35% a deliberately failed attempt (the
    expert for a random number of steps, then smooth random actions), 15% smooth random.
    ``flawed`` (Grasp): the expert with flaws drawn per episode
    (``wm_envs.agents.scripted.random_grasp_flaws``), which fail and succeed near contact.
    ``agent``: a trained agent sampling its actions (the Dreamer loop's data).
    ``planner``: the latent planner in a world model, which finds that model's errors; its
    episodes are the data that teaches the model them (the Dreamer loop, for a planner).
    """

    def __init__(self, env: gym.Env, config: CollectConfig, episode_seed: int) -> None:
        self.rng = np.random.default_rng([episode_seed, 7919])
        kind = config.policy
        self.agent = None
        if kind == "agent":
            self.agent = seeded_for_episode(_loaded_agent(config.agent), episode_seed)
        if kind == "planner":
            self.agent = seeded_for_episode(_loaded_planner(config, env), episode_seed)
        if kind == "flawed":
            self.flaws = random_grasp_flaws(self.rng)
            self.agent = ScriptedPolicy(env, self.flaws, seed=int(self.rng.integers(2**31)))
            self.agent.reset()
        if kind == "mixed":
            kind = str(self.rng.choice(["expert", "failed", "random"], p=[0.5, 0.35, 0.15]))
        noise = config.noise if config.policy == "expert" else float(self.rng.uniform(0.05, 0.3))
        self.kind = kind
        self.expert = make_expert(env, noise=noise, seed=int(self.rng.integers(2**31)))
        self.expert.reset()
        self.random = SmoothRandomPolicy(env.action_space, self.rng)
        self.switch_step = int(self.rng.integers(0, 30)) if kind == "failed" else None
        self.steps = 0

    @property
    def description(self) -> dict:
        if self.kind == "flawed":
            return {"kind": "flawed", **asdict(self.flaws)}
        if self.kind == "planner":
            return {"kind": "planner", "settings": asdict(self.agent.config)}
        if self.agent is not None:
            return {"kind": "agent", "agent": self.agent.policy.card["recipe"]["command"]}
        return {"kind": self.kind, "noise": self.expert.noise, "switch_step": self.switch_step}

    def __call__(self, obs) -> np.ndarray:
        if self.agent is not None:
            return self.agent(obs)
        self.steps += 1
        use_expert = self.kind == "expert" or (
            self.kind == "failed" and self.steps <= self.switch_step
        )
        return self.expert(obs) if use_expert else self.random(obs)


@cache
def _loaded_agent(folder: str):
    from wm_envs.agents.dreamer import DreamerOnObservations
    from wm_envs.evaluate import required_agent_folder

    return DreamerOnObservations(required_agent_folder(folder, "--agent"), seed=0, device="cpu")


@cache
def _loaded_planner(config: CollectConfig, env: gym.Env):
    from wm_envs.evaluate import EvaluateConfig, plan_policy

    spec = "planner:" + config.planner if config.planner else "planner"
    return plan_policy(EvaluateConfig(spec, config.env_id, checkpoint=config.checkpoint)).build(env)


def seeded_for_episode(policy, episode_seed: int):
    """``policy`` (an agent or the planner, loaded once per process) reset, with its
    sampling seeded for this episode."""
    policy.generator.manual_seed(episode_seed)
    policy.reset()
    return policy


def run_episode(env: gym.Env, config: CollectConfig, index: int) -> dict:
    """One episode as arrays: observations (T+1), actions/rewards/terminations (T), metadata."""
    seed = config.seed + index
    obs, info = env.reset(seed=seed)
    physics = info["physics"]
    policy = MixedPolicy(env, config, seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    successes = [False]
    done = False
    while not done:
        action = policy(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated)
        successes.append(bool(info["is_success"]))
        done = terminated or truncated
    return {
        "index": index,
        "observations": {k: np.stack([o[k] for o in observations]) for k in observations[0]},
        "actions": np.stack(actions).astype(np.float32),
        "rewards": np.asarray(rewards, np.float64),
        "terminations": np.asarray(terminations),
        "truncations": np.asarray(truncations),
        "is_success": np.asarray(successes),
        "metadata": {
            "seed": seed,
            "policy": policy.description,
            "physics": json.loads(json_text(physics)),
        },
    }


# -- workers -------------------------------------------------------------------------------
_WORKER_ENV: gym.Env | None = None
_WORKER_CONFIG: CollectConfig | None = None


def _init_worker(config: CollectConfig) -> None:
    global _WORKER_ENV, _WORKER_CONFIG
    import wm_envs  # noqa: F401  (registers the ids in a fresh process)

    _WORKER_CONFIG = config
    _WORKER_ENV = gym.make(config.env_id, obs_mode=config.obs_mode)


def _worker_episode(index: int) -> dict:
    return run_episode(_WORKER_ENV, _WORKER_CONFIG, index)


def _local_episodes(config: CollectConfig, indices: list[int], workers: int) -> Iterator[dict]:
    if workers <= 1:
        _init_worker(config)
        try:
            yield from map(_worker_episode, indices)
        finally:
            _WORKER_ENV.close()
        return
    context = multiprocessing.get_context("spawn")  # fresh GL state in every worker
    with context.Pool(workers, _init_worker, (config,)) as pool:
        yield from pool.imap_unordered(_worker_episode, indices)


def _ray_episodes(config: CollectConfig, indices: list[int], workers: int) -> Iterator[dict]:
    try:
        import ray
    except ImportError as error:
        raise RuntimeError("--backend ray needs Ray: pip install 'wm-envs[ray]'") from error
    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)

    @ray.remote
    class Collector:
        def __init__(self, config: CollectConfig) -> None:
            _init_worker(config)

        def episode(self, index: int) -> dict:
            return _worker_episode(index)

    actors = [Collector.remote(config) for _ in range(max(workers, 1))]
    pending = {
        actors[i % len(actors)].episode.remote(index): i % len(actors)
        for i, index in enumerate(indices[: len(actors)])
    }
    queue = list(indices[len(actors) :])
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        actor = pending.pop(done[0])
        if queue:
            pending[actors[actor].episode.remote(queue.pop(0))] = actor
        yield ray.get(done[0])


# -- the writer ----------------------------------------------------------------------------
def staging_dir(out: Path, dataset_id: str) -> Path:
    return Path(out) / ".staging" / dataset_id


def _stage(folder: Path, episode: dict) -> None:
    arrays = {f"obs_{k}": v for k, v in episode["observations"].items()}
    for key in ("actions", "rewards", "terminations", "truncations", "is_success"):
        arrays[key] = episode[key]
    arrays["metadata"] = np.array(json.dumps(episode["metadata"]))
    with atomic_path(folder / f"episode-{episode['index']:07d}.npz") as tmp:
        np.savez(tmp, **arrays)


def load_staged(path: Path) -> dict:
    """Read one staged episode back; a corrupt file raises ``ValueError`` naming it."""
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as error:
        raise ValueError(f"staged episode {path} is corrupt: {error}") from error
    observations = {k[4:]: arrays.pop(k) for k in list(arrays) if k.startswith("obs_")}
    metadata = json.loads(str(arrays.pop("metadata")))
    return {"observations": observations, "metadata": metadata, **arrays}


def collect(
    config: CollectConfig,
    out: str | Path,
    dataset_id: str | None = None,
    workers: int = 1,
    backend: str = "local",
    previews: int = 3,
) -> Path:
    """Collect ``config.episodes`` episodes into the Minari dataset ``out/dataset_id``."""
    from wm_envs.data.minari_io import build_minari_dataset, dataset_path

    out = Path(out).resolve()  # Minari mangles relative roots
    dataset_id = dataset_id or config.default_dataset_id
    final = dataset_path(out, dataset_id)
    stage = staging_dir(out, dataset_id)
    _check_matching_config(final, stage, config, dataset_id)
    if (final / "data").exists():
        print(f"{dataset_id}: complete in {final}, nothing to do")
        return final
    stage.mkdir(parents=True, exist_ok=True)
    write_json(stage / "collect.json", asdict(config))
    done = {int(p.stem.split("-")[1]) for p in stage.glob("episode-*.npz")}
    todo = [i for i in range(config.episodes) if i not in done]
    print(f"collect {dataset_id}: {asdict(config)}; {len(done)} staged, {len(todo)} to go")
    episodes = {"local": _local_episodes, "ray": _ray_episodes}[backend]
    with tqdm(total=config.episodes, initial=len(done), unit="ep", desc="collect") as bar:
        steps = 0
        for episode in episodes(config, todo, workers):
            _stage(stage, episode)
            steps += len(episode["actions"])
            bar.update(1)
            bar.set_postfix(steps_per_s=f"{steps / max(bar.format_dict['elapsed'], 1e-9):.0f}")
    build_minari_dataset(config, out, dataset_id, sorted(stage.glob("episode-*.npz")))
    _write_previews(final, sorted(stage.glob("episode-*.npz"))[:previews])
    shutil.rmtree(stage)
    for parent in stage.relative_to(out).parents:  # drop the now empty staging folders
        if parent != Path(".") and not any((out / parent).iterdir()):
            (out / parent).rmdir()
    return final


def _check_matching_config(final: Path, stage: Path, config: CollectConfig, dataset_id: str):
    """Refuse to mix two different collections in one folder."""
    for path in (final / "collect.json", stage / "collect.json"):
        if path.exists():
            existing = json.loads(path.read_text())
            if existing != asdict(config):
                raise ValueError(
                    f"{path.parent} already holds dataset {dataset_id!r} collected with "
                    f"{existing}, not {asdict(config)}; choose another --dataset-id or --out"
                )


def _write_previews(final: Path, staged: list[Path]) -> None:
    for path in staged:
        frames = load_staged(path)["observations"]["image"]
        write_video(
            final / "previews" / f"{path.stem}.mp4",
            np.kron(frames, np.ones((1, 4, 4, 1), np.uint8)),
            fps=25,
        )
