"""The Dreamer loop: how an agent trained in a learned simulator stops exploiting it.

    python -m wm_envs.agents.loop --agent runs/dreamer-loop2 \
        --dataset-id 'grasp/mixed-600-v0+grasp/dreamer-loop1-v0+grasp/dreamer-loop2-v0' \
        --out runs/loop --iterations 2
    python -m wm_envs.agents.loop --agent planner --world-model assets/checkpoints/rssm-grasp \
        --dataset-id grasp/mixed-600-v0 --out runs/planner --iterations 2

Each iteration alternates three steps, each one of the project's own commands:

1. **collect** ``episodes`` physics episodes with the current agent (its actions sampled) into
   the dataset ``<task>/<out name>-<i>-v0`` (``wm-envs collect --policy agent``);
2. **fine-tune** the agent's world model on everything so far (``wm-envs train --init-from``,
   keeping the training and loss settings its card records);
3. **train** a fresh agent in the fine-tuned model (``python -m wm_envs.agents.dreamer``, with
   the settings of the agent before it).

Then the agent is scored on validation seeds of the physics (never the test seeds) and the
next iteration collects with it. The latent planner (``--agent planner[:settings]``, planning
in ``--world-model``) runs the same loop without step 3: it collects with MPPI in the current
model (``wm-envs collect --policy planner``), so the fine-tuned model learns the errors the
planner found in it, and it is scored planning in the fine-tuned model. Every step resumes
where it stopped, so re-running the same command after a cut-off continues the loop.
``loop.json`` in ``out`` counts every physics step used (the world model's data before the
loop, and each iteration's episodes) beside each iteration's validation success.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from wm_envs.agents.dreamer import AGENT_FORMAT, DreamerConfig, DreamerRun, world_model_folder
from wm_envs.checkpoint import read_card, read_unit_card
from wm_envs.config import add_config_arguments
from wm_envs.data.collect import CollectConfig, collect
from wm_envs.data.windows import open_datasets
from wm_envs.evaluate import EvaluateConfig, evaluate, required_agent_folder
from wm_envs.io import write_json
from wm_envs.train import TrainConfig, Trainer


@dataclass
class LoopConfig:
    agent: str = ""  # the agent that collects first: a folder or shipped name, or planner[:...]
    world_model: str = ""  # the planner's first world model (a checkpoint folder)
    dataset_id: str = ""  # the data its world model was last trained on ("+"-joined ids)
    data: str = "data"  # Minari datasets root
    out: str = "runs/loop"
    iterations: int = 1
    episodes: int = 300  # physics episodes the agent collects per iteration
    seed: int = 20_600  # first reset seed of the first collection; each one follows the last
    finetune_steps: int = 1000
    finetune_lr: float = 2e-4
    agent_updates: int = 500
    val_seed: int = 8000  # validation seeds, for choosing; agents report on 7000-7049
    val_episodes: int = 20
    workers: int = 2
    threads: int = 2
    device: str = "auto"


def dataset_steps(root: str, dataset_id: str) -> int:
    """Physics steps in the datasets of a "+"-joined id, train and validation episodes."""
    return sum(dataset.total_steps for dataset in open_datasets(root, dataset_id))


def steps_before_the_loop(agent: Path | None, world_card: dict) -> int:
    """Physics steps behind the first policy before this loop: what ``agent``'s card counts
    (an agent of an earlier loop), else its world model's (``world_card``) training data;
    the planner (``agent`` None) has only the latter."""
    card = read_unit_card(agent, AGENT_FORMAT) if agent is not None else {}
    if "physics_steps" in card:
        return int(sum(card["physics_steps"].values()))
    return int(world_card["dataset"].get("train_steps", 0))


def run_loop(config: LoopConfig) -> dict:
    """Run (or resume) the loop; returns and writes ``out/loop.json``."""
    torch.set_num_threads(config.threads)  # collection's per-step filter too, not only training
    kind, _, planner_settings = config.agent.partition(":")
    planner = kind == "planner"
    if planner != bool(config.world_model):
        raise ValueError("--world-model names the planner's first world model, and only that")
    out = Path(config.out)
    agent, dataset_id = None, config.dataset_id
    if planner:
        world_model = Path(config.world_model)
    else:
        agent = required_agent_folder(config.agent, "--agent")
        world_model = world_model_folder(read_unit_card(agent, AGENT_FORMAT), agent)
    world_card = read_card(world_model)
    task, env_id = world_card["task"], world_card["env_id"]  # every iteration's, too
    before = steps_before_the_loop(agent, world_card)
    log = {"config": asdict(config), "physics_steps": {"before_the_loop": before}, "iterations": []}
    seed = config.seed
    for i in range(1, config.iterations + 1):
        folder = out / f"iteration-{i}"
        collected = f"{task}/{out.name}-{i}-v0"
        collect(
            CollectConfig(
                env_id=env_id,
                episodes=config.episodes,
                policy="planner" if planner else "agent",
                agent="" if planner else str(agent),
                planner=planner_settings,
                checkpoint=str(world_model) if planner else "",
                seed=seed,
            ),
            config.data,
            collected,
            workers=config.workers,
            previews=0,
        )
        seed += config.episodes
        dataset_id = f"{dataset_id}+{collected}"
        fine_tuned = folder / "world_model"
        recipe = world_card["recipe"]
        train = TrainConfig(
            **{
                **recipe["train_config"],
                "data": config.data,
                "dataset_id": dataset_id,
                "out": str(fine_tuned),
                "init_from": str(world_model),
                "fresh": "",
                "steps": config.finetune_steps,
                "stage_steps": "",
                "lr": config.finetune_lr,
                "lr_schedule": "cosine",
                "eval_every": max(config.finetune_steps // 2, 1),
                "threads": config.threads,
                "device": config.device,
                "max_minutes": 0.0,
            }
        )
        overrides = recipe.get("model_overrides", {})
        command = command_line("wm-envs train", train, overrides)
        Trainer(train, dict(overrides), command=command).run()
        world_model = fine_tuned
        world_card = read_card(world_model)
        if planner:
            policy = config.agent
        else:
            agent = train_agent(config, agent, fine_tuned, dataset_id, folder / "agent")
            policy = str(agent)
        validation = evaluate(
            EvaluateConfig(
                policy=policy,
                env=env_id,
                episodes=config.val_episodes,
                seed=config.val_seed,
                out=str(folder / "val.json"),
                checkpoint=str(fine_tuned) if planner else "",
                device=config.device,
            )
        )
        log["physics_steps"][f"iteration_{i}"] = dataset_steps(config.data, collected)
        log["iterations"].append(
            {
                "iteration": i,
                "dataset": collected,
                "world_model": str(fine_tuned),
                "agent": policy,
                "val_success": validation["success_rate"],
                "val_seeds": [config.val_seed, config.val_seed + config.val_episodes - 1],
            }
        )
        log["physics_steps_total"] = sum(log["physics_steps"].values())
        write_json(out / "loop.json", log)
        print(f"loop iteration {i}: validation success {validation['success_rate']:.0%}")
    return log


def train_agent(
    config: LoopConfig, previous: Path, world_model: Path, dataset_id: str, out: Path
) -> Path:
    """A fresh agent in ``world_model``, with the settings of the ``previous`` agent."""
    dreamer = DreamerConfig(
        **{
            **read_unit_card(previous, AGENT_FORMAT)["config"],
            "world_model": str(world_model),
            "data": config.data,
            "dataset_id": dataset_id,
            "out": str(out),
            "updates": config.agent_updates,
            "threads": config.threads,
            "device": config.device,
            "max_minutes": 0.0,
        }
    )
    DreamerRun(dreamer, command_line("python -m wm_envs.agents.dreamer", dreamer)).run()
    return out


def command_line(program: str, config, overrides: dict | None = None) -> str:
    """The command that runs ``config`` (and model ``overrides``) on its own, for the
    cards' recipes."""
    defaults = type(config)()
    changed = {k: v for k, v in asdict(config).items() if getattr(defaults, k) != v}
    flags = [f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in changed.items()]
    flags += [f"--set {k}={v}" for k, v in (overrides or {}).items()]
    return " ".join([program, *flags])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser, LoopConfig)
    config = LoopConfig(**vars(parser.parse_args(sys.argv[1:] if argv is None else argv)))
    if not config.agent or not config.dataset_id:
        parser.error("--agent and --dataset-id are required")
    print(json.dumps(asdict(config), indent=1))
    run_loop(config)


if __name__ == "__main__":
    main()
