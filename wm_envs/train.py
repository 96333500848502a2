"""The one training loop, for every model: resume, checkpoints, validation, logs, DDP.

    wm-envs train --model rssm --data data --dataset-id grasp/mixed-v0 --out runs/rssm-grasp

Re-running the same command resumes from ``--out`` (weights, optimizer, step, RNG states and
the wall time spent so far). ``--max-minutes`` ends a run cleanly, with a checkpoint, so a
long training can be spread over several working sessions; Ctrl-C (or SIGTERM) does the same
at the end of the current update. A kill at any moment leaves the last whole checkpoint
(``wm_envs.checkpoint`` writes one as a unit). Multi-GPU / multi-node:
``torchrun --nproc_per_node N -m wm_envs.train ...`` (DDP; gloo on CPU, NCCL on GPU). Under
DDP every rank keeps its own RNG states, and the decision to stop (time limit or signal, on
any rank) is shared, so all ranks leave the loop at the same update.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from wm_envs.checkpoint import (
    load_checkpoint,
    read_card,
    read_trainer_state,
    read_weights,
    save_checkpoint,
)
from wm_envs.config import add_config_arguments, parse_overrides
from wm_envs.data.windows import WindowDataset, open_datasets
from wm_envs.device import resolve_device
from wm_envs.eval.metrics import open_loop, psnr
from wm_envs.models import ModelSpec, build_model
from wm_envs.tasks import TASKS, task_of


@dataclass
class TrainConfig:
    model: str = "rssm"
    preset: str = "small"
    data: str = "data"  # Minari datasets root
    dataset_id: str = "grasp/mixed-v0"
    out: str = "runs/rssm-grasp"
    steps: int = 10_000  # updates per stage, in total over all resumed runs
    stage_steps: str = ""  # per-stage counts, e.g. "tokenizer=1500,dynamics=3000"; else steps
    batch_size: int = 16
    window: int = 24
    lr: float = 3e-4
    lr_schedule: str = "constant"  # or "cosine": decays to lr / 10 over each stage's steps
    weight_decay: float = 1e-4
    grad_clip: float = 100.0
    save_every: int = 200
    eval_every: int = 1000
    eval_context: int = 5
    eval_horizon: int = 15
    eval_windows: int = 64
    bank_size: int = 64  # start observations stored with the checkpoint
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    max_minutes: float = 0.0  # end this run (with a checkpoint) after this long; 0 = never
    init_from: str = ""  # continue from a checkpoint folder's weights (e.g. a shipped one)
    fresh: str = ""  # parts that start fresh rather than from init_from, e.g. "motion_head"
    #: The only parts that train, e.g. "decoder" (a new decoder on a trained latent, whose
    #: dynamics and heads then stay init_from's exactly); empty: all.
    train_parts: str = ""


def _part(name: str) -> str:
    """The model part a state-dict entry belongs to: "motion_head.0.weight" -> "motion_head"."""
    return name.split(".")[0]


def named_parts(spec: str, names, option: str, lacks: str) -> set[str]:
    """The model parts a comma-separated ``spec`` names (``--fresh``, ``--train-parts``),
    each of which must be the part of one of ``names`` (state-dict or parameter names); a
    ValueError says which the model ``lacks``."""
    parts = set(filter(None, spec.split(",")))
    unknown = parts - {_part(name) for name in names}
    if unknown:
        raise ValueError(f"{option} names parts the {lacks}: {sorted(unknown)}")
    return parts


def named_stage_steps(config: TrainConfig) -> dict[str, int]:
    """The per-stage update counts ``stage_steps`` names, e.g. {"dynamics": 0, "heads": 400}."""
    counts = {}
    for pair in filter(None, config.stage_steps.split(",")):
        name, sep, value = pair.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--stage-steps expects stage=count pairs, got {pair!r}")
        counts[name.strip()] = int(value)
    return counts


def stage_updates(config: TrainConfig, stage: str) -> int:
    """Updates for ``stage``: its entry in ``stage_steps`` if it has one, else ``steps``."""
    return named_stage_steps(config).get(stage, config.steps)


def learning_rate(config: TrainConfig, step: int, steps: int) -> float:
    """The rate for update ``step`` of a stage of ``steps`` updates; a function of the step
    alone, so resume keeps it."""
    if config.lr_schedule == "constant":
        return config.lr
    progress = min(step / steps, 1.0)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def seed_ranges(seeds: list[int]) -> list[list[int]]:
    """Seeds as sorted inclusive [first, last] runs: [5, 0, 1, 2] -> [[0, 2], [5, 5]]."""
    ranges: list[list[int]] = []
    for seed in sorted(set(seeds)):
        if ranges and seed == ranges[-1][1] + 1:
            ranges[-1][1] = seed
        else:
            ranges.append([seed, seed])
    return ranges


def episode_seeds(root: str | Path, dataset_id: str) -> list[int]:
    """The reset seed of every episode of a collected dataset (train and validation; of
    each dataset of a "+"-joined id)."""
    seeds = [
        episode.get("seed")
        for dataset in open_datasets(root, dataset_id)
        for episode in dataset.storage.get_episode_metadata(range(dataset.total_episodes))
    ]
    if None in seeds:
        raise ValueError(
            f"dataset {dataset_id!r} under {root} has episodes without a reset seed; "
            f"collect it again with `wm-envs collect`"
        )
    return [int(seed) for seed in seeds]


def task_model_settings(env_id: str, model: str) -> dict:
    """The config defaults the task of ``env_id`` (a dataset's env) declares for ``model``
    (``TaskSpec.model_settings``)."""
    return dict(TASKS[task_of(env_id)].model_settings.get(model, {}))


def _spec_from(dataset: WindowDataset) -> ModelSpec:
    data = dataset.data
    return ModelSpec(
        image_size=data["image"].shape[1],
        state_dim=data["state"].shape[1],
        action_dim=data["action"].shape[1],
        depth="depth" in data,
    )


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class Trainer:
    """State of one training run; ``run()`` trains until done or out of time."""

    def __init__(
        self, config: TrainConfig, overrides: dict | None = None, command: str = ""
    ) -> None:
        if config.lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"unknown lr_schedule {config.lr_schedule!r}; use 'constant' or 'cosine'"
            )
        self.config = config
        self.command = command  # how this run was started, for the card's recipe
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        self.device = resolve_device(config.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)  # before NCCL starts: one GPU per process
        if config.threads:
            torch.set_num_threads(config.threads)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.out = Path(config.out)
        self.train_data = WindowDataset(config.data, config.dataset_id, config.window, "train")
        self.val_data = WindowDataset(
            config.data,
            config.dataset_id,
            config.eval_context + config.eval_horizon,
            "val",
            within_episodes=True,
        )
        self.spec = _spec_from(self.train_data)
        self.seed_ranges = seed_ranges(episode_seeds(config.data, config.dataset_id))
        torch.manual_seed(config.seed)
        saved = read_trainer_state(self.out)
        settings = task_model_settings(self.train_data.env_spec.id, config.model)
        self.inherited_overrides = self._inherited_overrides(saved)
        overrides = {**settings, **self.inherited_overrides, **(overrides or {})}
        self.model = build_model(
            config.model, self.spec, config.preset, overrides, task_of(self.train_data.env_spec.id)
        )
        unknown = set(named_stage_steps(config)) - set(self.model.stages)
        if unknown:
            raise ValueError(
                f"--stage-steps names {sorted(unknown)}; "
                f"{config.model} trains the stages {self.model.stages}"
            )
        self.overrides = overrides
        self.stage, self.step, self.elapsed = 0, 0, 0.0
        self.rng = np.random.default_rng([config.seed, self.rank])
        self.metrics: dict[str, float] = {}
        self.history: list[dict] = []  # earlier runs this model continues (``init_from``)
        self.completed: dict[str, int] = {}  # updates of the stages this run finished
        # reset seeds the runs it continues trained on (None: a card that did not say)
        self.inherited_seed_ranges: list[list[int]] | None = []
        self.fresh_parts: list[str] = []  # what ``init_from`` found no weights for
        if config.fresh and not config.init_from:
            raise ValueError("--fresh names parts to start fresh from --init-from; no --init-from")
        if config.train_parts and not config.init_from:
            raise ValueError(
                "--train-parts trains some parts of a model from --init-from; no --init-from"
            )
        self.train_parts = named_parts(
            config.train_parts,
            (name for name, _ in self.model.named_parameters()),
            "--train-parts",
            f"{config.model} has no parameters in",
        )
        if saved is not None:
            self._resume(saved)
        else:
            self.model.prepare(self.train_data.sample(64, np.random.default_rng(config.seed)))
            if config.init_from:
                self._init_from(Path(config.init_from))
        self.model.to(self.device)
        self.optimizer = self._optimizer()
        if saved is not None:
            self.optimizer.load_state_dict(saved["optimizer"])

    def _optimizer(self) -> torch.optim.Optimizer:
        self.model.set_stage(self.model.stages[self.stage])
        for name, param in self.model.named_parameters():
            if self.train_parts and _part(name) not in self.train_parts:
                param.requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, self.config.lr, weight_decay=self.config.weight_decay)

    # -- resume -----------------------------------------------------------------------------
    def _inherited_overrides(self, saved: dict | None) -> dict:
        """The model overrides a continuation keeps from the checkpoint it continues, below
        its own ``--set``: read from ``init_from``'s card, or on resume from the trainer
        state, so that a resumed run does not need that folder any more."""
        if not self.config.init_from:
            return {}
        if saved is not None:
            return saved.get("inherited_overrides", {})  # absent: saved before they carried
        card = read_card(self.config.init_from)
        if card["model"] != self.config.model:
            raise ValueError(
                f"{self.config.init_from} holds a {card['model']} for {card['spec']}, not a "
                f"{self.config.model} for {asdict(self.spec)}"
            )
        return card["recipe"].get("model_overrides", {})

    def _init_from(self, folder: Path) -> None:
        """Start from a checkpoint's weights with a fresh optimizer: how training continues
        across working sessions once the run folder is gone (the shipped checkpoint keeps no
        optimizer state, to stay small). The checkpoint's model overrides carry over, and
        ``--set`` may change loss weights and other settings; the architecture must fit,
        except that parts the checkpoint lacks (a head added since) and parts named in
        ``fresh`` (a head whose inputs changed) start fresh and are listed. The card's
        history adds up updates and wall time."""
        card = read_card(folder)
        weights, _ = read_weights(folder)
        try:
            weights = self.model.adapt_weights(weights, ModelSpec(**card["spec"]), card["config"])
        except ValueError as error:
            raise ValueError(f"{folder}: {error}") from error
        fresh = named_parts(
            self.config.fresh, self.model.state_dict(), "--fresh", f"{self.config.model} lacks"
        )
        weights = {name: value for name, value in weights.items() if _part(name) not in fresh}
        try:
            missing, unexpected = self.model.load_state_dict(weights, strict=False)
        except RuntimeError as error:  # a tensor of another shape
            raise ValueError(
                f"{folder} does not fit this run's {self.config.model} architecture: {error}"
            ) from error
        if unexpected:
            raise ValueError(
                f"{folder} has parts this run's {self.config.model} lacks: {unexpected}"
            )
        self.fresh_parts = sorted({_part(name) for name in missing})
        recipe = card["recipe"]
        self.history = recipe.get("history", []) + [
            {key: recipe[key] for key in ("command", "stage", "updates", "wall_time_s")}
            | {"config": card["config"]}
        ]
        # A continuation starts at the checkpoint's stage, or at an earlier one that
        # --stage-steps names with updates (a finished Genie's dynamics trained again).
        named = [stage for stage, count in named_stage_steps(self.config).items() if count]
        stages = self.model.stages
        self.stage = min([stages.index(recipe["stage"]), *map(stages.index, named)])
        self.inherited_seed_ranges = card["dataset"].get("seed_ranges")
        if self.rank == 0:
            print(
                f"continuing {folder}: {self.total('updates')} updates, "
                f"{self.total('wall_time_s') / 60:.1f} min so far; fresh: {self.fresh_parts}"
            )

    def updates(self) -> int:
        """Updates of this run, over all its stages."""
        return sum(self.completed.values()) + self.step

    def total(self, key: str) -> float:
        """Updates or wall time of this run plus the runs it continues."""
        mine = {"updates": self.updates(), "wall_time_s": self.elapsed}[key]
        return sum(h[key] for h in self.history) + mine

    def all_seed_ranges(self) -> list[list[int]] | None:
        """Reset seeds of every episode this model was trained on, in this run and the runs
        it continues; None when a continued checkpoint's card did not record them."""
        if self.inherited_seed_ranges is None:
            return None
        seeds = [s for first, last in self.inherited_seed_ranges for s in range(first, last + 1)]
        own = [s for first, last in self.seed_ranges for s in range(first, last + 1)]
        return seed_ranges(seeds + own)

    def _resume(self, saved: dict) -> None:
        mine = {k: v for k, v in asdict(self.config).items() if k in RUN_IDENTITY}
        theirs = {k: v for k, v in saved["config"].items() if k in RUN_IDENTITY}
        if mine != theirs or saved["overrides"] != self.overrides:
            raise ValueError(
                f"{self.out} holds a different run ({theirs}, {saved['overrides']});"
                f" use another --out to start a new one"
            )
        model, card, _ = load_checkpoint(self.out)
        recipe = card["recipe"]
        weights_at = (recipe["stage"], recipe.get("stage_updates", recipe["updates"]))
        trainer_at = (self.model.stages[saved["stage"]], saved["step"])
        if weights_at != trainer_at:  # possible in run folders saved before cards listed parts
            raise ValueError(
                f"{self.out}: the weights and card are of stage {weights_at[0]} update "
                f"{weights_at[1]}, trainer.pt of stage {trainer_at[0]} update {trainer_at[1]}: "
                f"the checkpoint's parts come from different saves; restore the folder, or "
                f"train again into a new --out"
            )
        self.model.load_state_dict(model.state_dict())
        self.stage, self.step, self.elapsed = saved["stage"], saved["step"], saved["elapsed"]
        self.history = saved.get("history", [])  # absent in runs saved before it existed
        self.fresh_parts = saved.get("fresh_parts", [])
        self.completed = saved.get("completed_stages", {})
        self.inherited_seed_ranges = saved.get("inherited_seed_ranges", [])
        # trainer.pt files from before per-rank states kept rank 0's alone
        states = saved.get("rng_states") or [
            {"numpy": saved["rng"][0], "torch": saved["torch_rng"]}
        ]
        self._restore_rng(states)
        self.metrics = saved["metrics"]
        if self.rank == 0:
            print(
                f"resumed {self.out}: stage {self.model.stages[self.stage]}, update "
                f"{self.step}, {self.elapsed / 60:.1f} min so far"
            )

    def _rng_state(self) -> dict:
        """This rank's numpy (batches) and torch (model sampling) generator states."""
        state = {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore_rng(self, states: list[dict]) -> None:
        """Each rank takes its own saved states; a rank the saved run did not have (resumed
        on more processes) draws from a generator of its own."""
        if self.rank >= len(states):
            self.rng = np.random.default_rng([self.config.seed, self.rank, self.stage, self.step])
            return
        mine = states[self.rank]
        self.rng.bit_generator.state = mine["numpy"]
        torch.set_rng_state(mine["torch"])
        if "cuda" in mine and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], self.device)

    def _any_rank(self, *flags: bool) -> list[bool]:
        """Each flag, true if it is true on any rank: every rank takes the same decision at
        the same update (a rank that left the loop alone would leave the others waiting in
        an all-reduce for ever)."""
        if self.world == 1:
            return list(flags)
        shared = torch.tensor(flags, dtype=torch.int32, device=self.device)
        dist.all_reduce(shared, op=dist.ReduceOp.MAX)
        return [bool(flag) for flag in shared.tolist()]

    def save(self) -> None:
        """Checkpoint: weights, card and trainer state (with every rank's RNG states) as one
        unit, written by rank 0. Every rank calls it and leaves once the checkpoint is whole."""
        rng_states = [self._rng_state()]
        if self.world > 1:
            rng_states = [None] * self.world
            dist.all_gather_object(rng_states, self._rng_state())
        if self.rank == 0:
            trainer_state = {
                "config": asdict(self.config),
                "overrides": self.overrides,
                "inherited_overrides": self.inherited_overrides,
                "stage": self.stage,
                "step": self.step,
                "elapsed": self.elapsed,
                "history": self.history,
                "fresh_parts": self.fresh_parts,
                "completed_stages": self.completed,
                "inherited_seed_ranges": self.inherited_seed_ranges,
                "rng_states": rng_states,  # one per rank
                "optimizer": self.optimizer.state_dict(),
                "metrics": self.metrics,
            }
            save_checkpoint(self.out, self.model, self.card(), self.bank(), trainer_state)
        if self.world > 1:
            dist.barrier()

    def card(self) -> dict:
        env_spec = self.train_data.env_spec
        task = task_of(env_spec.id)
        return {
            "task": task,
            "env_id": env_spec.id,
            "env_kwargs": env_spec.kwargs,
            "dataset": {
                "root": str(self.config.data),
                "id": self.config.dataset_id,
                "train_episodes": len(self.train_data.episode_ids),
                "val_episodes": len(self.val_data.episode_ids),
                "train_steps": len(self.train_data.data["reward"]),
                **self._seed_record(),
            },
            "recipe": {
                "command": self.command,
                "train_config": asdict(self.config),
                "model_overrides": self.overrides,
                "preset": self.config.preset,
                "stage": self.model.stages[self.stage],
                "updates": self.updates(),
                "updates_by_stage": {**self.completed, self.model.stages[self.stage]: self.step},
                "stage_updates": self.step,
                "wall_time_s": round(self.elapsed, 1),
                "history": self.history,
                "fresh_parts": self.fresh_parts,
                "total_updates": self.total("updates"),
                "total_wall_time_s": round(self.total("wall_time_s"), 1),
                "processes": self.world,
                "device": self.device.type,
                "parameters": sum(p.numel() for p in self.model.parameters()),
            },
            "metrics": self.metrics,
        }

    def _seed_record(self) -> dict:
        """The card's ``seed_ranges``: reset seeds of every episode the model trained on
        (inclusive ranges), which ``compare`` keeps its held-out seeds clear of; left out when
        a continued checkpoint did not record its own, so that compare cannot trust it."""
        ranges = self.all_seed_ranges()
        return {} if ranges is None else {"seed_ranges": ranges}

    def bank(self) -> dict[str, torch.Tensor]:
        """First observations of training episodes: where the learned env resets to."""
        data = self.train_data.data
        firsts = np.flatnonzero(data["is_first"])[: self.config.bank_size]
        bank = {
            "bank/image": torch.from_numpy(data["image"][firsts]),
            "bank/state": torch.from_numpy(data["state"][firsts]),
        }
        if "depth" in data:
            bank["bank/depth"] = torch.from_numpy(data["depth"][firsts])
        return bank

    # -- validation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """1-step and open-loop PSNR (models with an image decoder) and state error (in units
        of the data's std, RMS over the vector) on held-out episodes, beside the copy-frame
        baseline."""
        c = self.config
        self.model.eval()
        picks = np.random.default_rng(0).integers(len(self.val_data), size=c.eval_windows)
        batch = _to(
            torch.utils.data.default_collate([self.val_data[int(i)] for i in picks]), self.device
        )
        predicted = open_loop(self.model, batch, c.eval_context)
        metrics = {}
        truths = {key: batch[key][:, c.eval_context :] for key in predicted}
        copies = {
            key: batch[key][:, c.eval_context - 1 : c.eval_context].expand_as(truth)
            for key, truth in truths.items()
        }
        scores = {"state_error": self._state_error}
        if "image" in predicted:
            scores["psnr"] = psnr
        for name, measure in scores.items():
            key = "image" if name == "psnr" else "state"
            model_score = measure(predicted[key], truths[key]).mean(0)  # [H]
            copy_score = measure(copies[key], truths[key]).mean(0)
            for step, at in ((1, 0), (c.eval_horizon, -1)):
                metrics[f"val/{name}_{step}step"] = model_score[at].item()
                metrics[f"val/copy_{name}_{step}step"] = copy_score[at].item()
        extra = self.model.validation_metrics(batch, c.eval_context)
        self.model.train()
        return metrics | {f"val/{key}": value for key, value in extra.items()}

    def _state_error(self, predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """RMS state error in units of the data's std: [B, H, S] pairs -> [B, H]."""
        model = self.model
        error = (predicted - truth) / model.state_std
        return error.square().mean(-1).sqrt()

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        c = self.config
        if self.rank == 0:
            size = sum(p.numel() for p in self.model.parameters())
            print(
                f"train {c.model} ({c.preset}, {size:,} parameters) on {c.dataset_id}: "
                f"{asdict(c)} overrides={self.overrides}"
            )
        logger = Logger(self.out) if self.rank == 0 else None
        autocast = torch.autocast("cuda", torch.bfloat16, enabled=self.device.type == "cuda")
        with StopRequest() as stop:
            return self._loop(logger, autocast, stop)

    def _network(self) -> torch.nn.Module:
        """What the loop calls: the model, or under DDP a wrapper built for the current
        stage (DDP reduces the gradients of the parameters that trained when it was built)."""
        if self.world == 1:
            return self.model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

    def _loop(self, logger, autocast, stop: StopRequest) -> dict[str, float]:
        """Every stage from the current one, until done, out of time or asked to stop."""
        c = self.config
        run_start, last_time = time.time(), time.time()
        for stage in range(self.stage, len(self.model.stages)):
            steps = stage_updates(c, self.model.stages[stage])
            if stage != self.stage:
                if not steps:  # never entered: the card records the last stage that trained
                    continue
                self.completed[self.model.stages[self.stage]] = self.step
                self.stage, self.step = stage, 0
                self.optimizer = self._optimizer()
            network = self._network()
            bar = tqdm(
                total=steps,
                initial=self.step,
                disable=self.rank != 0,
                desc=f"train[{self.model.stages[stage]}]",
                unit="upd",
            )
            while self.step < steps:
                batch = _to(self.train_data.sample(c.batch_size, self.rng), self.device)
                with autocast:
                    loss, metrics = network(batch)
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate(c, self.step, steps)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), c.grad_clip
                ).item()
                self.optimizer.step()
                self.step += 1
                now = time.time()
                self.elapsed += now - last_time
                last_time = now
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3g}")
                if logger:
                    logger.log(self.step, {f"train/{k}": v for k, v in metrics.items()})
                if self.step % c.eval_every == 0 or self.step == steps:
                    if self.rank == 0:
                        self.metrics = {**self.evaluate(), "updates": self.step}
                        logger.log(self.step, self.metrics)
                        bar.write(json.dumps(self.metrics))
                out_of_time, asked = self._any_rank(
                    bool(c.max_minutes) and now - run_start > 60 * c.max_minutes, stop.requested
                )
                if self.step % c.save_every == 0 or self.step == steps or out_of_time or asked:
                    self.save()
                if out_of_time or asked:
                    bar.close()
                    reason = "asked to stop" if asked else f"after {c.max_minutes} min"
                    if self.rank == 0:
                        print(f"stopping {reason} at update {self.step}; re-run to resume")
                    return self.metrics
            bar.close()
        self.save()
        return self.metrics


class StopRequest:
    """Turns Ctrl-C or SIGTERM into a request to stop after the current update; the loop
    shares it between DDP ranks, so a signal to any rank stops them all at one update."""

    def __init__(self) -> None:
        self.requested = False
        self.enabled = threading.current_thread() is threading.main_thread()
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum: int, frame) -> None:
        if self.requested:  # a second signal: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: checkpointing after this update, then stopping")

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Logger:
    """Metrics as JSON lines, and as TensorBoard events when tensorboard is installed."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.file = open(folder / "log.jsonl", "a")  # noqa: SIM115  (closed at exit)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tb"))
        except ImportError:
            self.writer = None

    def log(self, step: int, values: dict[str, float]) -> None:
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.writer:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)


#: Config fields that identify a run; the others may change between resumed runs.
RUN_IDENTITY = {"model", "preset", "data", "dataset_id", "batch_size", "window", "seed"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser, TrainConfig)
    parser.add_argument(
        "--set",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="model config overrides on top of the preset (repeatable)",
    )
    argv = sys.argv[1:] if argv is None else argv
    args = vars(parser.parse_args(argv))
    overrides = parse_overrides(args.pop("set"))
    import wm_envs  # noqa: F401  (the dataset's env spec names a registered id)

    command = "wm-envs train " + " ".join(shlex.quote(a) for a in argv)
    Trainer(TrainConfig(**args), overrides, command).run()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
