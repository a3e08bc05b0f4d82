"""Argument parsing shared by the CLIs: typed flag values and `--set KEY=VALUE` pairs."""
from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Dict, Sequence

from his_common.config import parse_overrides  # noqa: F401 - the CLIs' --set parser lives with the config mechanism


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
    """A finite number of seconds > 0 (inf and nan are refused: a budget must end)."""
    return _number_flag(name, float, lambda v: math.isfinite(v) and v > 0, "a finite positive number of seconds")


def add_set_argument(parser: argparse.ArgumentParser, accepted: Sequence[str], example: str, note: str = "") -> None:
    """`--set KEY=VALUE` (repeatable), with the namespaces this command takes (agents.config.NAMESPACES: the
    same meaning in every command; `agents.config.route_overrides` splits and checks the pairs)."""
    from agents.config import NAMESPACES_SHOWN

    shown = ", ".join(NAMESPACES_SHOWN[part] for part in accepted)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help=f"override one setting, repeatable: {shown} (e.g. {example}){note}")

