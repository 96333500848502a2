"""Atomic file writes: write beside the target, fsync, then rename, so a crash never leaves
half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import imageio.v2 as imageio
import numpy as np


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success fsync it and rename it onto
    ``path``, with the usual permissions (``mkstemp`` makes files owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        usual_permissions(tmp)
        fsync(tmp)
        os.replace(tmp, path)
        fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def usual_permissions(path: str | Path) -> None:
    """Give a file the permissions a plain ``open`` would (some writers make files
    owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def fsync(path: str | Path) -> None:
    """Flush a file's or a folder's contents to disk (a folder: the names in it), so that a
    rename that follows cannot reach the disk before what it names."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_text(payload: Mapping) -> str:
    """``payload`` as indented JSON; numpy arrays and scalars become lists and numbers, other
    mappings (a reset's ``WorldDraw``) dicts."""
    return json.dumps(payload, indent=2, default=_to_builtin) + "\n"


def write_json(path: str | Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(payload))


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int = 25) -> None:
    """Write uint8 (H, W, 3) frames as an H.264 mp4, atomically."""
    with atomic_path(path) as tmp:
        imageio.mimwrite(tmp, list(frames), fps=fps, codec="libx264", macro_block_size=1)


def _to_builtin(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):  # e.g. a reset's WorldDraw
        return dict(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
