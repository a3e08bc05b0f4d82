"""CLI flag helpers: `--set KEY=VALUE` pairs go through the config mechanism's one value parser."""
import argparse

import pytest

from his_cli.args import nonneg_int, parse_overrides, positive_int, positive_seconds
from his_common.config import ConfigError


def test_set_pairs_are_parsed_in_order_with_the_config_parser():
    assert parse_overrides(["a=1", "b=[x, y]", "a=2", "c=1e-3", "d=null", "e=x=y"]) == {
        "a": 2, "b": ["x", "y"], "c": "1e-3", "d": None, "e": "x=y"}
    for bad in (["a"], ["=1"]):
        with pytest.raises(ConfigError, match="expected KEY=VALUE, e.g. --set num_ues=10"):
            parse_overrides(bad)


@pytest.mark.parametrize("make, text, ok", [
    (positive_int, "3", 3), (positive_int, "0", None), (positive_int, "x", None),
    (nonneg_int, "0", 0), (nonneg_int, "-1", None),
    (positive_seconds, "2.5", 2.5), (positive_seconds, "0", None),
    (positive_seconds, "inf", None), (positive_seconds, "-inf", None), (positive_seconds, "nan", None),
    (positive_seconds, "1e400", None),
])
def test_number_flags(make, text, ok):
    parse = make("--flag")
    if ok is None:
        with pytest.raises(argparse.ArgumentTypeError, match=f"--flag must be .*, got {text!r}"):
            parse(text)
    else:
        assert parse(text) == ok
