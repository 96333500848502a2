"""``wm-envs report``: one self-contained HTML page on every shipped (task, model) pair.

    wm-envs report --out report.html

The report runs nothing; it reads what other commands wrote. Per shipped pair
(``TASKS`` x ``shipped_models``): ``compare.json``, ``compare.png`` (error against the
horizon) and ``compare.mp4`` (physics | learned | difference) from
``<results>/compare-<model>-<task>/`` (``wm-envs compare --out``), or from a ``fresh`` folder,
which wins (the demo passes its own run); the checkpoint's card (recipe) and weights (size).
Then ``<results>/wm_throughput.json`` (learned env against physics, steps/s) and the shipped
agents' cards. A shipped pair without compare results gets a row saying which command makes
them.

Images and videos are embedded as data URIs, so the one file is the whole page (a few hundred
kB per pair). The videos stay H.264 mp4, as ``write_video`` writes them: Debian's Chromium
plays them, as do Chrome, Firefox and Safari.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wm_envs.agents.dreamer import AGENT_FORMAT
from wm_envs.assets import AGENTS
from wm_envs.checkpoint import (
    WEIGHTS,
    read_card,
    read_unit_card,
    shipped_agents,
    shipped_checkpoint,
    shipped_models,
)
from wm_envs.io import atomic_path
from wm_envs.tasks import TASKS

COMPARE = "compare.json"
THROUGHPUT = "wm_throughput*.json"  # Grasp's, then wm_throughput_<task>.json


@dataclass
class Pair:
    """A shipped (task, model) pair and its compare results (None: none yet)."""

    task: str
    model: str
    checkpoint: Path
    compare: Path | None = None  # the folder holding compare.json, .png and .mp4
    report: dict | None = None  # its compare.json

    @property
    def title(self) -> str:
        return f"{self.model} on Phys-{TASKS[self.task].name}-v0"

    @property
    def anchor(self) -> str:
        return f"{self.model}-{self.task}"


def shipped_pairs() -> list[Pair]:
    """Every shipped (task, model) pair, in registry order."""
    return [
        Pair(task, model, shipped_checkpoint(model, task))
        for task in TASKS
        for model in shipped_models(task)
    ]


def read_compare(path: Path) -> dict:
    """A ``compare.json``, refused by name unless it compares a shipped checkpoint."""
    try:
        report = json.loads(path.read_text())
        config = report["config"]
        task, model = config["task"], config["model"]
        report["headline"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not a compare.json written by `wm-envs compare`: {error!r}"
        ) from error
    if config.get("checkpoint"):
        raise ValueError(
            f"{path} compares the checkpoint {config['checkpoint']}, not the shipped {model} for "
            f"{task!r}; the report covers shipped checkpoints only"
        )
    return report


def find_compare_results(
    pairs: list[Pair], results: Path | None, fresh: Sequence[Path] = ()
) -> None:
    """Set each pair's ``compare`` folder: ``<results>/compare-<model>-<task>/``, replaced by
    any ``fresh`` folder holding ``compare.json`` itself or in a sub-folder (a demo's
    ``out/<model>/``), matched to its pair by the task and model it records."""
    by_key = {(pair.task, pair.model): pair for pair in pairs}
    if results is not None:
        if not results.is_dir():
            raise ValueError(f"results folder {results} does not exist")
        for pair in pairs:
            path = results / f"compare-{pair.model}-{pair.task}" / COMPARE
            if path.exists():
                report = read_compare(path)
                config = report["config"]
                if (config["task"], config["model"]) != (pair.task, pair.model):
                    raise ValueError(
                        f"{path} compares {config['model']} on {config['task']!r}, not what its "
                        f"folder's name says ({pair.model} on {pair.task!r})"
                    )
                pair.compare, pair.report = path.parent, report
    for folder in fresh:
        if not folder.is_dir():
            raise ValueError(f"compare folder {folder} does not exist")
        paths = sorted([folder / COMPARE, *folder.glob(f"*/{COMPARE}")])
        paths = [path for path in paths if path.exists()]
        if not paths:
            raise ValueError(f"no {COMPARE} in {folder} or its sub-folders")
        for path in paths:
            report = read_compare(path)
            key = (report["config"]["task"], report["config"]["model"])
            if key not in by_key:
                raise ValueError(
                    f"{path} compares {key[1]} on {key[0]!r}, which ships no checkpoint; "
                    f"shipped: {sorted(by_key)}"
                )
            by_key[key].compare, by_key[key].report = path.parent, report


def write_report(out: str | Path, results: Path | None, fresh: Sequence[Path] = ()) -> Path:
    """Write the page to ``out`` (atomically) and return its path. ``results``: a
    ``benchmarks/results`` folder (None: none, e.g. an installed copy); ``fresh``: compare
    folders that replace its (see ``find_compare_results``)."""
    pairs = shipped_pairs()
    find_compare_results(pairs, results, [Path(folder) for folder in fresh])
    sources = [f"results: {results}" if results else "results: none"]
    sources += [f"fresh compare runs: {folder}" for folder in fresh]
    body = [
        "<h1>wm-envs: learned simulators against physics</h1>",
        f"<p class=meta>{esc(time.strftime('%Y-%m-%d %H:%M'))}; {esc('; '.join(sources))}</p>",
        "<h2>Headline</h2>",
        PREAMBLE,
        headline_table(pairs, results),
        "<h2>Checkpoints</h2>",
        checkpoint_table(pairs),
        *[pair_section(pair, results) for pair in pairs],
        "<h2 id=speed>Learned env against physics: speed</h2>",
        speed_section(results),
        agents_section(),
    ]
    page = PAGE.format(body="\n".join(body))
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    return out


PREAMBLE = (
    "<p>Physics and the learned simulator on the same held-out seeds and the same actions "
    "(<code>wm-envs compare</code>), open loop from the first frame and from a mid-episode "
    "frame. In brackets, the baselines: <i>copy</i> repeats the start frame and its state, "
    "<i>velocity</i> extrapolates the last two real states, and for success the best constant "
    "guess. Red: the model does worse than the copy (or the constant guess).</p>"
)


def headline_table(pairs: list[Pair], results: Path | None) -> str:
    """One row per (task, model, start kind); a pair without results gets one row saying how
    to make them."""
    head = (
        "<tr><th>task</th><th>model</th><th>start</th><th>PSNR 1 step (copy)</th>"
        "<th>PSNR H steps (copy)</th><th>foreground PSNR H (copy)</th>"
        "<th>tracked error at H (copy / velocity)</th><th>reward error</th>"
        "<th>success agreement (constant)</th><th>H</th><th>seeds</th></tr>"
    )
    rows = []
    for pair in pairs:
        report = pair.report
        task_cell = f"<td>{esc(TASKS[pair.task].name)}</td><td><a href='#{pair.anchor}'>"
        task_cell += f"{esc(pair.model)}</a></td>"
        if report is None:
            rows.append(
                f"<tr class=missing data-pair='{pair.anchor}'>{task_cell}<td colspan=9>"
                f"{missing_results(pair, results)}</td></tr>"
            )
            continue
        horizon = report["config"]["horizon"]
        seeds = report["seeds"]
        where = f"{report['config']['split']} {seeds[0]}-{seeds[1]}"
        for start, row in report["headline"].items():
            tracked = "<br>".join(
                beside(
                    row[f"{name}_{horizon}"],
                    row[f"copy_{name}_{horizon}"],
                    row.get(f"velocity_{name}_{horizon}"),
                    higher_is_better=False,
                    fmt="{:.3g}",
                    label=name,
                )
                for name in tracked_names(row, horizon)
            )
            images = [("psnr", 1), ("psnr", horizon), ("fg_psnr", horizon)]
            cells = [
                beside(row[f"{name}_{step}"], row[f"copy_{name}_{step}"])
                if f"{name}_{step}" in row
                else "–"  # a state-only model (no image decoder): no image metrics
                for name, step in images
            ] + [
                tracked or "–",
                f"{row['reward_error_mean']:.3f}",
                beside(
                    100 * row["success_agreement"],
                    100 * row["constant_success_agreement"],
                    fmt="{:.0f}%",
                ),
                str(horizon),
                esc(where),
            ]
            rows.append(
                f"<tr data-pair='{pair.anchor}'>{task_cell}<td>{esc(start.replace('_', ' '))}</td>"
                + "".join(f"<td>{cell}</td>" for cell in cells)
                + "</tr>"
            )
    return f"<table class=headline>{head}{''.join(rows)}</table>"


def missing_results(pair: Pair, results: Path | None) -> str:
    """What a pair without compare results says instead: the command that makes them."""
    out = (results or Path("benchmarks/results")) / f"compare-{pair.model}-{pair.task}"
    command = f"wm-envs compare --task {pair.task} --model {pair.model} --record --out {out}"
    return f"no compare results: run <code>{esc(command)}</code>"


def tracked_names(row: dict, horizon: int) -> list[str]:
    """The task's tracked quantities in a headline row: those with a copy baseline at the
    horizon, besides the image metrics."""
    suffix = f"_{horizon}"
    names = [
        key[5 : -len(suffix)] for key in row if key.startswith("copy_") and key.endswith(suffix)
    ]
    return [name for name in names if name not in ("psnr", "fg_psnr") and f"{name}{suffix}" in row]


def beside(
    value: float,
    baseline: float,
    *others: float | None,
    higher_is_better: bool = True,
    fmt: str = "{:.1f}",
    label: str = "",
) -> str:
    """``value (baseline / others...)``, red when the value loses to the first baseline; an
    other baseline the results lack (None: an older compare.json) shows as a dash."""
    loses = value < baseline if higher_is_better else value > baseline
    baselines = " / ".join("–" if b is None else fmt.format(b) for b in (baseline, *others))
    text = f"{esc(label)} " if label else ""
    text += f"<span class={'loses' if loses else 'wins'}>{fmt.format(value)}</span>"
    return f"{text} ({baselines})"


def checkpoint_table(pairs: list[Pair]) -> str:
    """One row per shipped checkpoint: its size and the recipe its card records."""
    head = (
        "<tr><th>task</th><th>model</th><th>parameters</th><th>size (MB)</th><th>runs</th>"
        "<th>updates</th><th>wall time (h)</th><th>training data</th>"
        "<th>last run's command</th></tr>"
    )
    rows = []
    for pair in pairs:
        card = read_card(pair.checkpoint)
        recipe = card.get("recipe", {})
        dataset = card.get("dataset", {})
        parameters = recipe.get("parameters")
        hours = recipe.get("total_wall_time_s", recipe.get("wall_time_s", 0)) / 3600
        cells = [
            TASKS[pair.task].name,
            pair.model,
            f"{parameters / 1e6:.2f}M" if parameters else "–",
            f"{(pair.checkpoint / WEIGHTS).stat().st_size / 1e6:.1f}",
            str(len(recipe.get("history", [])) + 1),
            f"{recipe.get('total_updates', recipe.get('updates', 0)):,}",
            f"{hours:.1f}",
            f"{dataset.get('id', '?')}: {dataset.get('train_episodes', '?')} episodes",
        ]
        rows.append(
            "<tr>"
            + "".join(f"<td>{esc(cell)}</td>" for cell in cells)
            + f"<td><code>{esc(recipe.get('command', '–'))}</code></td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def pair_section(pair: Pair, results: Path | None) -> str:
    """A pair's error-against-horizon plot, its side-by-side video, and its long-horizon
    and model-specific numbers when the comparison has them."""
    report = pair.report
    parts = [f"<h2 id='{pair.anchor}'>{esc(pair.title)}</h2>"]
    if report is None:
        return parts[0] + f"<p class=missing>{missing_results(pair, results)}</p>"
    config = report["config"]
    parts.append(
        f"<p class=meta>{esc(str(pair.compare / COMPARE))}: {config['episodes']} "
        f"{esc(config['split'])} seeds from {report['seeds'][0]}, horizon {config['horizon']}; "
        f"the comparison took {report.get('wall_time_s', '?')} s</p>"
    )
    plot = pair.compare / "compare.png"
    if plot.exists():
        parts.append(
            f"<figure><img alt='{esc(pair.title)}: error against the horizon' "
            f"src='{data_uri(plot, 'image/png')}'><figcaption>Error against the open-loop "
            "horizon, the model beside repeating the start frame.</figcaption></figure>"
        )
    depth = pair.compare / "depth.png"
    if depth.exists():
        parts.append(
            f"<figure><img alt='{esc(pair.title)}: depth side by side' "
            f"src='{data_uri(depth, 'image/png')}'><figcaption>Depth side by side, physics "
            "and learned, open loop from mid-episode starts (near is bright).</figcaption></figure>"
        )
    video = pair.compare / "compare.mp4"
    videos = min(config.get("videos", config["episodes"]), config["episodes"])
    if video.exists():
        parts.append(
            "<figure><video controls autoplay loop muted playsinline preload=auto "
            f"src='{data_uri(video, 'video/mp4')}'></video><figcaption>physics | learned | "
            f"difference, open loop from mid-episode starts of the first {videos} "
            "episodes.</figcaption></figure>"
        )
    if report.get("long_horizon"):
        parts.append(long_horizon_table(report["long_horizon"]))
    for start, metrics in report.get("model_metrics", {}).items():
        cells = ", ".join(f"{esc(key)} {value:.3g}" for key, value in metrics.items())
        parts.append(f"<p class=meta>{esc(pair.model)} metrics, {esc(start)}: {cells}</p>")
    return "\n".join(parts)


LONG_HORIZON_KINDS = ("open_loop_copy", "open_loop", "reanchored_copy", "reanchored")


def long_horizon_table(long: dict) -> str:
    """Tracked errors at long horizons (``long_horizon`` of compare.json, keys
    ``<kind>_<name>_<step>``): open loop and re-anchored, each beside its copy."""
    table: dict[tuple[str, int], dict[str, float]] = {}
    for key, value in long.items():
        kind = next(kind for kind in LONG_HORIZON_KINDS if key.startswith(kind + "_"))
        name, step = key[len(kind) + 1 :].rsplit("_", 1)
        table.setdefault((name, int(step)), {})[kind] = value
    rows = []
    for (name, step), values in sorted(table.items()):
        cells = [
            beside(values[kind], values[f"{kind}_copy"], higher_is_better=False, fmt="{:.3g}")
            if kind in values and f"{kind}_copy" in values
            else "–"
            for kind in ("open_loop", "reanchored")
        ]
        rows.append(
            f"<tr><td>{esc(name)}</td><td>{step}</td><td>{cells[0]}</td><td>{cells[1]}</td></tr>"
        )
    head = (
        "<tr><th>tracked</th><th>step</th><th>open loop (copy)</th>"
        "<th>re-anchored (copy of the last real state)</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def speed_section(results: Path | None) -> str:
    """One table per ``wm_throughput*.json`` (Grasp's, then each other task's), as the
    benchmark wrote it."""
    paths = sorted(results.glob(THROUGHPUT)) if results else []
    if not paths:
        return (
            f"<p class=missing>no {THROUGHPUT} in {esc(str(results))}: run "
            "<code>wm-envs bench wm_throughput</code></p>"
        )
    tables = []
    for path in paths:
        benchmark = json.loads(path.read_text())
        rows = benchmark["rows"]
        columns = list(rows[0])
        head = "<tr>" + "".join(f"<th>{esc(column)}</th>" for column in columns) + "</tr>"
        body = "".join(
            "<tr>"
            + "".join(f"<td>{esc(number(row.get(column)))}</td>" for column in columns)
            + "</tr>"
            for row in rows
        )
        notes = esc(benchmark.get("notes", ""))
        tables.append(f"<table class=speed>{head}{body}</table><p class=meta>{notes}</p>")
    return "".join(tables)


def agents_section() -> str:
    """The shipped agents, trained only in a learned simulator: success on physics beside
    success in the simulator, and their recipe."""
    rows = []
    for task in TASKS:
        for name in shipped_agents(task):
            card = read_unit_card(AGENTS / name, AGENT_FORMAT)
            test = card.get("evaluation", {}).get("test", {})
            recipe = card.get("recipe", {})
            seeds = test.get("seeds", ["?", "?"])
            cells = [
                name,
                TASKS[task].name,
                f"{test['physics_success']:.0%}" if "physics_success" in test else "–",
                f"{test['wm_success']:.0%}" if "wm_success" in test else "–",
                f"{seeds[0]}-{seeds[1]}",
                f"{recipe.get('updates', '?')} updates, {recipe.get('wall_time_s', '?')} s",
            ]
            rows.append(
                "<tr>"
                + "".join(f"<td>{esc(cell)}</td>" for cell in cells)
                + f"<td><code>{esc(recipe.get('command', '–'))}</code></td></tr>"
            )
    if not rows:
        return ""
    head = (
        "<tr><th>agent</th><th>task</th><th>physics success</th><th>success in its simulator</th>"
        "<th>seeds</th><th>training</th><th>command</th></tr>"
    )
    return f"<h2>Shipped agents</h2><table>{head}{''.join(rows)}</table>"


def number(value) -> str:
    """A table cell: floats to three significant figures, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def data_uri(path: Path, mime: str) -> str:
    """The file as a base64 data URI, so the page carries it."""
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def esc(text) -> str:
    return html.escape(str(text), quote=True)


PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>wm-envs report</title>
<meta name=viewport content="width=device-width, initial-scale=1">
<link rel=icon href="data:,">
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
code {{ font-size: 12px; word-break: break-word; }}
.loses {{ color: #b00; font-weight: 600; }}
.missing {{ color: #8a5a00; }}
.meta {{ color: #555; font-size: 12px; }}
img, video {{ max-width: 100%; }}
figure {{ margin: 0.5em 0 1em; }}
figcaption {{ color: #555; font-size: 12px; }}
</style></head>
<body>
{body}
</body></html>
"""
