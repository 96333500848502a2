"""What every benchmark shares: timing and writing results as JSON plus a Markdown table."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from wm_envs.io import atomic_path, write_json

RESULTS = Path(__file__).parent / "results"


def rate(step: Callable[[], object], count: int, warmup: int = 20, repeats: int = 1) -> float:
    """Calls per second of ``step`` over ``count`` calls, after ``warmup`` untimed calls; the
    best of ``repeats`` timings (as ``timeit`` advises: the slower ones measure interference
    from other processes, not the code)."""
    for _ in range(warmup):
        step()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            step()
        best = max(best, count / (time.perf_counter() - start))
    return best


def rate_for(step: Callable[[], object], seconds: float, repeats: int = 3) -> float:
    """Calls per second of ``step``, timed for about ``seconds`` in all: one warm-up call,
    calls for a tenth of ``seconds`` to size the timings, then the best of ``repeats``
    timings of ``seconds / repeats`` each (at least one call each, however slow ``step``)."""
    step()
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < seconds / 10:
        step()
        calls += 1
    estimate = calls / (time.perf_counter() - start)
    return rate(step, max(1, round(seconds / repeats * estimate)), warmup=0, repeats=repeats)


def machine() -> dict:
    """Where the numbers were taken."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def env_label(env_id: str, kwargs: dict) -> str:
    """A table row name: the env id, and the backend when it is not the default one."""
    return f"{env_id} ({kwargs['backend']})" if "backend" in kwargs else env_id


def _cell(value: object) -> str:
    if value is None:  # not measured
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_results(
    name: str, rows: list[dict], notes: str = "", folder: Path = RESULTS, echo: bool = True
) -> Path:
    """Write ``<folder>/<name>.json`` and ``<folder>/<name>.md`` (``folder``: default
    ``benchmarks/results``); print the table unless ``echo`` is off."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(column)) for column in columns) + " |")
    table = "\n".join(lines) + ("\n\n" + notes if notes else "") + "\n"
    folder = Path(folder)
    write_json(folder / f"{name}.json", {"machine": machine(), "rows": rows, "notes": notes})
    with atomic_path(folder / f"{name}.md") as tmp:
        tmp.write_text(table)
    if echo:
        print(table)
    return folder / f"{name}.md"
