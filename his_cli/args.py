"""Argument parsing shared by train.py and evaluate.py: typed flag values and `--set KEY=VALUE`."""
from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, Sequence

import yaml


class UsageError(ValueError):
    """A bad flag or value on the command line."""


def _number_flag(name: str, convert: Callable[[str], Any], ok: Callable[[Any], bool], allowed: str):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {text!r}")
        return value
    return parse


def positive_int(name: str):
    return _number_flag(name, int, lambda v: v >= 1, "a positive integer")


def nonneg_int(name: str):
    return _number_flag(name, int, lambda v: v >= 0, "an integer >= 0")


def positive_seconds(name: str):
    return _number_flag(name, float, lambda v: v > 0, "a positive number of seconds")


def parse_value(text: str) -> Any:
    """A `--set` value: YAML scalars and lists, with numbers like 1e-3 read as numbers."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        for conv in (int, float):
            try:
                return conv(value)
            except ValueError:
                pass
    return value


def parse_overrides(pairs: Sequence[str], example: str = "--set num_ues=10") -> Dict[str, Any]:
    """`--set KEY=VALUE` pairs as {key: value}, in order (a later pair wins)."""
    out: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE, e.g. {example}")
        out[key] = parse_value(text)
    return out
