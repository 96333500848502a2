"""Plain dataclass configs with command-line overrides."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields


def parse_overrides(pairs: list[str]) -> dict:
    """``["deter=256", "unimix=0.02"]`` -> ``{"deter": 256, "unimix": 0.02}`` (JSON values)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One ``--flag`` per dataclass field, typed like its default."""
    for field in fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
            continue
        kind = str if field.default is None else type(field.default)
        parser.add_argument(flag, type=kind, default=field.default)
