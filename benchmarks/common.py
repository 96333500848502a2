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


def write_results(name: str, rows: list[dict], notes: str = "") -> Path:
    """Write ``results/<name>.json`` and ``results/<name>.md``; print the table."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + ("\n\n" + notes if notes else "") + "\n"
    write_json(RESULTS / f"{name}.json", {"machine": machine(), "rows": rows, "notes": notes})
    with atomic_path(RESULTS / f"{name}.md") as tmp:
        tmp.write_text(table)
    print(table)
    return RESULTS / f"{name}.md"
