"""Plain dataclass configs with command-line overrides."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import fields
from typing import get_args, get_type_hints


def parse_overrides(pairs: list[str], option: str = "--set") -> dict:
    """``["deter=256", "unimix=0.02"]`` -> ``{"deter": 256, "unimix": 0.02}`` (JSON values);
    ``option`` is named in errors."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{option} expects key=value, got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def parse_settings(config_class: type, text: str, spec: str):
    """``"noise=0.3,every=2,never_close"`` -> ``config_class(noise=0.3, every=2,
    never_close=True)``: comma-separated fields typed like their defaults, a bare name for a
    bool. ``spec`` (the whole string the user gave) is named in errors."""
    known = {field.name: type(field.default) for field in fields(config_class)}
    values = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if name not in known:
            raise ValueError(f"unknown setting {name!r} in {spec!r}; known: {sorted(known)}")
        if known[name] is bool:
            if sep:
                raise ValueError(f"{name!r} is a flag and takes no value, got {item!r} in {spec!r}")
            values[name] = True
            continue
        try:
            values[name] = known[name](value)
        except ValueError:
            raise ValueError(
                f"{name!r} needs a {known[name].__name__}, got {item!r} in {spec!r}"
            ) from None
    return config_class(**values)


def comma_separated(kind: type) -> Callable[[str], tuple]:
    """A parser of ``"1,2,3"`` into a tuple of ``kind``: the type of a tuple option."""

    def parse(text: str) -> tuple:
        return tuple(kind(item) for item in text.split(",") if item.strip())

    parse.__name__ = f"comma-separated {kind.__name__}"  # argparse names it in its errors
    return parse


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One ``--flag`` per dataclass field, typed like its default (a tuple field: comma-
    separated values of its annotated element type)."""
    hints = get_type_hints(config_class)
    for field in fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
            continue
        kind = str if field.default is None else type(field.default)
        if isinstance(field.default, tuple):
            kind = comma_separated(get_args(hints[field.name])[0])
        parser.add_argument(flag, type=kind, default=field.default)
