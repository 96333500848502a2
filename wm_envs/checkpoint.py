"""Checkpoints: safetensors weights plus a JSON card that says what the model is for.

A checkpoint is a folder with ``model.safetensors`` and ``card.json`` (and, from a training
run, ``trainer.pt``: optimizer, counters, RNG states). The card carries the model name and
config, the task and spaces it was trained for, the dataset, the recipe (command, seeds,
wall time) and the metrics at save time; the learned env refuses a card whose task or spaces
do not match.

A checkpoint is written as one unit. Its parts go into ``.checkpoint-staging/``, are fsynced
and the folder is renamed to ``.checkpoint-ready/``: that rename is the commit. The parts
then move up into the checkpoint folder one by one, and a reader takes a part from
``.checkpoint-ready/`` while it is still there, so a kill at any moment leaves one whole
checkpoint, the old one or the new one. The card lists the sha256 of the other parts
(``parts``) and loading checks them: a part from another save (a file replaced by hand, a
partial copy) or a corrupt one is refused by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from wm_envs.assets import AGENTS, CHECKPOINTS
from wm_envs.io import atomic_path, fsync, json_text, usual_permissions
from wm_envs.model_card import render_model_card
from wm_envs.models import MODELS, ModelSpec, WorldModel

FORMAT = "wm-envs-checkpoint/1"
SHIPPED = CHECKPOINTS
WEIGHTS, CARD, TRAINER = "model.safetensors", "card.json", "trainer.pt"
MODEL_CARD = "MODEL_CARD.md"  # the card rendered for people, beside it
STAGING, READY = ".checkpoint-staging", ".checkpoint-ready"


def part_path(folder: str | Path, name: str) -> Path:
    """Where part ``name`` of the checkpoint in ``folder`` is: in ``.checkpoint-ready/``
    while a save is being installed, else in the folder itself."""
    ready = Path(folder) / READY / name
    return ready if ready.exists() else Path(folder) / name


def save_checkpoint(
    folder: str | Path,
    model: WorldModel,
    card: dict,
    extra: dict[str, torch.Tensor] | None = None,
    trainer_state: dict | None = None,
) -> None:
    """Write weights (plus ``extra`` tensors, e.g. the start bank), the card and, from a
    training run, ``trainer_state`` as one unit (see the module docstring)."""
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"extra/{k}": v.cpu().contiguous() for k, v in (extra or {}).items()})
    full_card = {
        "format": FORMAT,
        "model": model.name,
        "config": asdict(model.config),
        "spec": asdict(model.spec),
        **card,
    }
    writers = {
        WEIGHTS: lambda path: save_file(tensors, str(path)),
        MODEL_CARD: lambda path: path.write_text(
            render_model_card(full_card, (path.parent / WEIGHTS).stat().st_size)
        ),
    }
    if trainer_state is not None:
        writers[TRAINER] = lambda path: torch.save(trainer_state, path)
    write_unit(folder, writers, full_card)


def write_model_card(folder: str | Path) -> Path:
    """Render ``folder``/card.json into ``folder``/MODEL_CARD.md, atomically (after the card
    was edited: ``compare --record``); its path."""
    folder = Path(folder)
    weights = part_path(folder, WEIGHTS)
    text = render_model_card(
        read_card(folder), weights.stat().st_size if weights.exists() else None
    )
    with atomic_path(folder / MODEL_CARD) as tmp:
        tmp.write_text(text)
    return folder / MODEL_CARD


def write_unit(folder: str | Path, writers: dict[str, Callable[[Path], None]], card: dict) -> None:
    """Write the parts ``writers`` name (each writes the file at the path it is given) and
    ``card.json``, which lists their sha256 under ``parts``, as one unit: the scheme of the
    module docstring, for any checkpoint (world models, agents)."""
    folder = Path(folder)
    _install(folder)  # a save killed after its commit: finish it first
    staging = folder / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # a save killed before its commit
    staging.mkdir(parents=True)
    for name, write in writers.items():
        write(staging / name)
    parts = {name: _sha256(staging / name) for name in sorted(os.listdir(staging))}
    (staging / CARD).write_text(json_text({**card, "parts": parts}))
    for name in os.listdir(staging):
        usual_permissions(staging / name)
        fsync(staging / name)
    fsync(staging)
    os.replace(staging, folder / READY)
    fsync(folder)
    _install(folder)


def _install(folder: Path) -> None:
    """Move the parts of a committed save up into ``folder``, then drop the empty
    ``.checkpoint-ready/``."""
    ready = folder / READY
    if not ready.exists():
        return
    for name in os.listdir(ready):
        os.replace(ready / name, folder / name)
    fsync(folder)
    ready.rmdir()
    fsync(folder)


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def check_part(folder: str | Path, card: dict, name: str) -> Path:
    """The path of part ``name``, refused unless it is the file the card lists (cards
    written before they listed their parts, as the shipped ones, are taken as they are)."""
    path = part_path(folder, name)
    if "parts" not in card:
        return path
    expected = card["parts"].get(name)
    if expected is None:
        problem = "not a part of the checkpoint its card describes"
    elif not path.exists():
        problem = "missing"
    elif _sha256(path) != expected:
        problem = "from another save than its card, or corrupt"
    else:
        return path
    raise ValueError(
        f"{path} is {problem} (the card {part_path(folder, CARD)} lists "
        f"{sorted(card['parts'])} by sha256): the checkpoint's parts do not agree; restore "
        f"the folder, or train again into a new --out"
    )


def read_unit_card(folder: str | Path, card_format: str) -> dict:
    """The card of a checkpoint folder written in ``card_format``; a missing, corrupt or
    foreign one raises a clear error."""
    path = part_path(folder, CARD)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint card at {path}")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"checkpoint card {path} is corrupt: {error}") from error
    if not isinstance(card, dict) or card.get("format") != card_format:
        found = card.get("format") if isinstance(card, dict) else None
        raise ValueError(f"{path} is not a {card_format} card (format {found!r})")
    return card


def read_unit(folder: str | Path, card_format: str) -> tuple[dict, Callable[[str], Path]]:
    """The card of a checkpoint written by ``write_unit``, and a function from a part's
    name to its path, refused unless it is the file the card lists."""
    card = read_unit_card(folder, card_format)
    return card, lambda name: check_part(folder, card, name)


def read_card(folder: str | Path) -> dict:
    """The card of a world-model checkpoint folder; a missing or corrupt one raises a clear
    error."""
    card = read_unit_card(folder, FORMAT)
    if card.get("model") not in MODELS:
        raise ValueError(
            f"{part_path(folder, CARD)} names model {card.get('model')!r}; known: {sorted(MODELS)}"
        )
    return card


def load_checkpoint(
    folder: str | Path, device: str | torch.device = "cpu"
) -> tuple[WorldModel, dict, dict[str, torch.Tensor]]:
    """Model (eval mode), card and extra tensors of a checkpoint folder."""
    card = read_card(folder)
    model_class = MODELS[card["model"]]
    model = model_class(ModelSpec(**card["spec"]), model_class.config_class(**card["config"]))
    state, extra = read_weights(folder, device)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"{part_path(folder, WEIGHTS)} does not fit its card's {card['model']} config: {error}"
        ) from error
    return model.to(device).eval(), card, extra


def read_weights(
    folder: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's state dict and the extra tensors of a checkpoint folder."""
    weights = check_part(folder, read_card(folder), WEIGHTS)
    try:
        tensors = load_file(str(weights), device=str(device))
    except Exception as error:
        raise ValueError(f"checkpoint weights {weights} are missing or corrupt: {error}") from error
    state = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    extra = {k.removeprefix("extra/"): v for k, v in tensors.items() if k.startswith("extra/")}
    return state, extra


def read_trainer_state(folder: str | Path) -> dict | None:
    """The trainer state saved with a run folder's checkpoint (None: the folder holds no
    run to resume), refused unless it belongs to the same save as the card."""
    if not part_path(folder, TRAINER).exists():
        return None
    path = check_part(folder, read_card(folder), TRAINER)
    return torch.load(path, weights_only=False)


def shipped_models(task: str) -> list[str]:
    """Names of the models that ship a checkpoint for ``task``."""
    return [model for model in MODELS if (SHIPPED / f"{model}-{task}" / CARD).exists()]


def shipped_agents(task: str) -> list[str]:
    """Names of the agents that ship for ``task`` (``assets/agents/<agent>-<task>/``)."""
    return sorted(p.name for p in AGENTS.glob(f"*-{task}") if (p / CARD).exists())


def shipped_checkpoint(model: str, task: str) -> Path:
    """The checkpoint folder that ships with the package for ``model`` on ``task``."""
    folder = SHIPPED / f"{model}-{task}"
    if not (folder / CARD).exists():
        available = sorted(p.name for p in SHIPPED.glob("*")) if SHIPPED.exists() else []
        raise FileNotFoundError(
            f"no shipped {model} checkpoint for {task!r}; shipped: "
            f"{available}. Train one with `wm-envs train` and pass "
            f"checkpoint=PATH"
        )
    return folder
