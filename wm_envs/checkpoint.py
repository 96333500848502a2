"""Checkpoints: safetensors weights plus a JSON card that says what the model is for.

A checkpoint is a folder with ``model.safetensors`` and ``card.json``. The card carries the
model name and config, the task and spaces it was trained for, the dataset, the recipe
(command, seeds, wall time) and the metrics at save time; the learned env refuses a card
whose task or spaces do not match. Writes are atomic.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from wm_envs.assets import CHECKPOINTS
from wm_envs.io import atomic_path, write_json
from wm_envs.models import MODELS, ModelSpec, WorldModel

FORMAT = "wm-envs-checkpoint/1"
SHIPPED = CHECKPOINTS


def save_checkpoint(
    folder: str | Path, model: WorldModel, card: dict, extra: dict[str, torch.Tensor] | None = None
) -> None:
    """Write weights (plus ``extra`` tensors, e.g. the start bank) and the card."""
    folder = Path(folder)
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"extra/{k}": v.cpu().contiguous() for k, v in (extra or {}).items()})
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))
    full_card = {
        "format": FORMAT,
        "model": model.name,
        "config": asdict(model.config),
        "spec": asdict(model.spec),
        **card,
    }
    write_json(folder / "card.json", full_card)


def read_card(folder: str | Path) -> dict:
    """The card of a checkpoint folder; a missing or corrupt one raises a clear error."""
    path = Path(folder) / "card.json"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint card at {path}")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"checkpoint card {path} is corrupt: {error}") from error
    if card.get("format") != FORMAT or card.get("model") not in MODELS:
        raise ValueError(
            f"{path} is not a wm-envs checkpoint card (format "
            f"{card.get('format')!r}, model {card.get('model')!r})"
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
            f"{Path(folder) / 'model.safetensors'} does not fit its card's {card['model']} "
            f"config: {error}"
        ) from error
    return model.to(device).eval(), card, extra


def read_weights(
    folder: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's state dict and the extra tensors of a checkpoint folder."""
    weights = Path(folder) / "model.safetensors"
    try:
        tensors = load_file(str(weights), device=str(device))
    except Exception as error:
        raise ValueError(f"checkpoint weights {weights} are missing or corrupt: {error}") from error
    state = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    extra = {k.removeprefix("extra/"): v for k, v in tensors.items() if k.startswith("extra/")}
    return state, extra


def shipped_models(task: str) -> list[str]:
    """Names of the models that ship a checkpoint for ``task``."""
    return [model for model in MODELS if (SHIPPED / f"{model}-{task}" / "card.json").exists()]


def shipped_checkpoint(model: str, task: str) -> Path:
    """The checkpoint folder that ships with the package for ``model`` on ``task``."""
    folder = SHIPPED / f"{model}-{task}"
    if not (folder / "card.json").exists():
        available = sorted(p.name for p in SHIPPED.glob("*")) if SHIPPED.exists() else []
        raise FileNotFoundError(
            f"no shipped {model} checkpoint for {task!r}; shipped: "
            f"{available}. Train one with `wm-envs train` and pass "
            f"checkpoint=PATH"
        )
    return folder
