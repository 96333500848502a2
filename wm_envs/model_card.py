"""MODEL_CARD.md: a checkpoint's card.json rendered for people.

The Markdown is a pure function of the card and the size of the weights file, so it can be
rebuilt whenever the card changes (after a save, after ``compare --record``) and never drifts
from it. Narrative (design choices, shortfalls and why) lives in the card's ``notes``: a list
of paragraphs.
"""

from __future__ import annotations

import json

from wm_envs.models import MODELS


def render_model_card(card: dict, weights_bytes: int | None = None) -> str:
    """The Markdown model card of a checkpoint ``card`` (the dict of its card.json)."""
    for key in ("model", "task"):  # a card without a recipe renders it as not recorded
        if key not in card:
            raise ValueError(
                f"a checkpoint card needs {key!r} to render a model card; got {list(card)}"
            )
    notes = card.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ValueError("a card's 'notes' must be a list of paragraphs (strings)")
    sections = [
        _summary(card, weights_bytes),
        _usage(card),
        _dataset(card.get("dataset", {})),
        _training_metrics(card.get("metrics", {}), card.get("recipe", {}).get("train_config", {})),
        _compare(card.get("compare")),
        _section("Notes", "\n\n".join(notes)) if notes else "",
        _equations(card.get("equations")),
        _recipe(card),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


# -- sections -------------------------------------------------------------------------------
def _summary(card: dict, weights_bytes: int | None) -> str:
    recipe = card.get("recipe", {})
    runs = _runs(card)
    rows = [
        ("model", f"`{card['model']}` (preset `{recipe.get('preset', '?')}`)"),
        (
            "task",
            f"`{card['task']}`, trained on `{card.get('env_id', '?')}` "
            f"{_inline_json(card.get('env_kwargs', {}))}",
        ),
        ("spec", ", ".join(f"{k} {v}" for k, v in card.get("spec", {}).items())),
        ("parameters", _count(recipe.get("parameters"))),
        ("stage updates", _stage_updates(recipe)),
        ("weights", f"{weights_bytes / 1e6:.1f} MB (`model.safetensors`)" if weights_bytes else ""),
        (
            "training",
            f"{_count(recipe.get('total_updates', recipe.get('updates')))} updates, "
            f"{_duration(recipe.get('total_wall_time_s', recipe.get('wall_time_s')))} "
            f"on {recipe.get('device', '?')} ({recipe.get('processes', 1)} process), "
            f"{len(runs)} run{'s' if len(runs) != 1 else ''}",
        ),
    ]
    table = _table(["", ""], [(name, value) for name, value in rows if value])
    title = f"# {card['model']}-{card['task']}: model card"
    note = "Generated from `card.json` by `wm_envs.model_card`; edit the card, not this file."
    return f"{title}\n\n{note}\n\n{table}"


def _stage_updates(recipe: dict) -> str:
    """A multi-stage model's updates per stage in its last run, as the trainer counted them
    (a stage the run did not reach, or skipped, is not listed)."""
    by_stage = recipe.get("updates_by_stage")
    if not by_stage or not recipe.get("train_config", {}).get("stage_steps"):
        return ""
    return ", ".join(f"{stage} {count}" for stage, count in by_stage.items())


def _usage(card: dict) -> str:
    env_id = "WM-" + card.get("env_id", f"Phys-{card['task'].capitalize()}-v0").removeprefix(
        "Phys-"
    )
    model = MODELS.get(card["model"])
    mode = (
        "" if model is None or "dict" in model.obs_modes else f', obs_mode="{model.obs_modes[-1]}"'
    )
    code = (
        "```python\nimport gymnasium as gym\nimport wm_envs\n\n"
        "# FOLDER: this folder\n"
        f'env = gym.make("{env_id}", model="{card["model"]}", checkpoint="FOLDER"{mode})\n```'
    )
    return _section("Use", code)


def _training_metrics(metrics: dict, train_config: dict) -> str:
    """Validation metrics at save time; a metric with a ``copy_`` twin gets it beside."""
    if not metrics:
        return ""
    rows = []
    for key, value in metrics.items():
        name = key.removeprefix("val/")
        if name.startswith("copy_") or key == "updates":
            continue
        copy = metrics.get(key.removesuffix(name) + f"copy_{name}")
        rows.append((f"`{name}`", _number(value), _number(copy) if copy is not None else ""))
    windows = train_config.get("eval_windows", "")
    context = train_config.get("eval_context")
    intro = f"The trainer's validation on {windows} windows of the dataset's validation episodes"
    intro += f", {context} real frames of context" if context else ""
    intro += f", after update {metrics['updates']} of the last run" if "updates" in metrics else ""
    intro += '. "copy" repeats the last real frame: the baseline a model must beat.'
    return _section(
        "Training metrics at save time", intro + "\n\n" + _table(["metric", "model", "copy"], rows)
    )


def _compare(compare: dict | None) -> str:
    """The ``wm-envs compare --record`` headline: one column per kind of start."""
    if not compare or "headline" not in compare:
        return ""
    config = compare.get("config", {})
    where = []
    if "seed" in config and "episodes" in config:
        where.append(f"seeds {config['seed']}-{config['seed'] + config['episodes'] - 1}")
    where += [f"{k} {config[k]}" for k in ("split", "horizon", "context") if k in config]
    intro = "Physics against this model on the same seeds and actions (`wm-envs compare`)"
    intro += f": {', '.join(where)}." if where else "."
    parts = [intro, _grid(compare["headline"])]
    if compare.get("model_metrics"):
        parts += ["Model-specific metrics on the same episodes:", _grid(compare["model_metrics"])]
    return _section("Against physics", "\n\n".join(parts))


def _equations(equations: dict | None) -> str:
    """A symbolic model's update equations (``{phase: {"d<var>": formula}}``), per phase."""
    if not equations:
        return ""
    intro = "The change of each variable over one control step, in SI units, per phase:"
    blocks = [
        f"### {phase}\n\n```\n"
        + "\n".join(f"{name} = {formula}" for name, formula in laws.items())
        + "\n```"
        for phase, laws in equations.items()
    ]
    return _section("Equations", "\n\n".join([intro, *blocks]))


def _dataset(dataset: dict) -> str:
    if not dataset:
        return ""
    rows = [
        (f"`{k}`", _inline_json(v) if isinstance(v, dict | list) else str(v))
        for k, v in dataset.items()
    ]
    return _section("Dataset", _table(["", ""], rows))


def _recipe(card: dict) -> str:
    """Every run this checkpoint continues, then the last: command, size, config changes."""
    runs = _runs(card)
    parts = []
    for number, (run, previous) in enumerate(zip(runs, [None, *runs[:-1]], strict=True), start=1):
        title = (
            f"### Run {number} of {len(runs)}: {_count(run.get('updates'))} updates, "
            f"{_duration(run.get('wall_time_s'))}, stage `{run.get('stage', '?')}`"
        )
        lines = [title, f"```bash\n{run.get('command') or '(command not recorded)'}\n```"]
        if previous is not None:
            changes = _changes(previous.get("config", {}), run.get("config", {}))
            lines.append(f"Model config changes from run {number - 1}: {changes or 'none'}.")
        if run.get("fresh_parts"):
            lines.append(
                f"Started fresh (not from the run before): {', '.join(run['fresh_parts'])}."
            )
        parts.append("\n\n".join(lines))
    return _section("Recipe", "\n\n".join(parts))


def _runs(card: dict) -> list[dict]:
    """The recorded earlier runs plus the last one (whose config is the card's own)."""
    recipe = card.get("recipe", {})
    last = {key: recipe.get(key) for key in ("command", "stage", "updates", "wall_time_s")}
    last |= {"config": card.get("config", {}), "fresh_parts": recipe.get("fresh_parts", [])}
    return [*recipe.get("history", []), last]


def _changes(before: dict, after: dict) -> str:
    """``key a -> b`` for every model-config value that differs."""
    missing = "(unset)"
    changed = [
        f"`{key}` {before.get(key, missing)} -> {after.get(key, missing)}"
        for key in [*before, *(k for k in after if k not in before)]
        if before.get(key, missing) != after.get(key, missing)
    ]
    return ", ".join(changed)


# -- formatting -----------------------------------------------------------------------------
def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}"


def _table(header: list[str], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _grid(by_column: dict[str, dict]) -> str:
    """A table of ``{column: {row: value}}``, rows in first-seen order."""
    columns = list(by_column)
    rows = list(dict.fromkeys(key for column in columns for key in by_column[column]))
    body = [(f"`{row}`", *(_number(by_column[c].get(row, "")) for c in columns)) for row in rows]
    return _table(["metric", *(c.replace("_", " ") for c in columns)], body)


def _number(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    return str(value)


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else ""


def _duration(seconds) -> str:
    if not isinstance(seconds, int | float):
        return "wall time not recorded"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def _inline_json(value) -> str:
    return f"`{json.dumps(value)}`"
