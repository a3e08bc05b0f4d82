"""The configuration mechanism on a small schema: types read from annotations, ranges, names,
partial sections, dotted overrides, YAML files and names, and the `--set` value parser."""
from dataclasses import dataclass, field
from typing import Optional

import pytest

from his_common import config as cfgmod
from his_common.config import Config, ConfigError, check, load_yaml, parse_assignment, parse_value, setting
from his_common.registry import Registry

COLOURS = Registry("colour")
COLOURS.register("red", 1)
COLOURS.register("blue", 2)


@dataclass
class Inner(Config):
    width: float = setting(1.0, gt=0)
    size: tuple[int, int] = setting((2, 3), ge=1)

    def validate(self, prefix=""):
        check(self.size[0] <= self.size[1], prefix + "size", self.size, "[low, high] with low <= high")


@dataclass
class Outer(Config):
    count: int = setting(3, ge=0, le=10)
    names: list[str] = field(default_factory=list)
    stringy: list[str] | None = None  # an annotation whose text contains "str", "int" and "list"
    colour: Optional[str] = setting(None, choices=lambda: COLOURS.names)
    rate: float = 0.5
    flag: bool = False
    a: Inner = field(default_factory=Inner)
    b: Inner = field(default_factory=lambda: Inner(width=7.0, size=(5, 6)))


def test_types_are_read_from_annotations():
    c = Outer.from_dict({"count": 2.0, "names": ["x"], "rate": 1, "a": {"size": [4, 4]}})
    assert (c.count, c.rate, c.a.size) == (2, 1.0, (4, 4))
    assert isinstance(c.count, int) and isinstance(c.rate, float) and isinstance(c.a.size, tuple)
    cases = [({"count": "3"}, "'count' has value '3'; allowed: an integer"),
             ({"count": True}, "'count' has value True; allowed: an integer"),
             ({"count": 2.5}, "'count' has value 2.5; allowed: an integer"),
             ({"names": "abc"}, "'names' has value 'abc'; allowed: a list of strings"),
             ({"names": [1]}, "'names' has value 1 in its list; allowed: a list of strings"),
             ({"stringy": [3]}, "'stringy' has value [3]; allowed: null or a list of strings"),
             ({"flag": "yes"}, "'flag' has value 'yes'; allowed: true or false"),
             ({"rate": "fast"}, "'rate' has value 'fast'; allowed: a finite number"),
             ({"rate": None}, "'rate' has value None; allowed: a finite number"),
             ({"a": {"size": [1, 2, 3]}}, "'a.size' has value [1, 2, 3]; allowed: a list of 2 integers"),
             ({"a": 5}, "config key 'a' must be a mapping of ['size', 'width'], got 5")]
    for data, message in cases:
        with pytest.raises(ConfigError) as err:
            Outer.from_dict(data)
        assert message in str(err.value), (data, str(err.value))


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "inf", "nan", "-Infinity"])
def test_floats_must_be_finite(value):
    with pytest.raises(ConfigError, match=r"'rate' has value .*; allowed: a finite number"):
        Outer.from_dict({"rate": value})
    with pytest.raises(ConfigError, match=r"'b\.width' has value"):
        Outer.from_dict({"b": {"width": value}})


def test_ranges_names_and_cross_field_rules():
    for data, message in [({"count": 11}, "'count' has value 11; allowed: an integer in [0, 10]"),
                          ({"a": {"width": 0}}, "'a.width' has value 0.0; allowed: a number > 0"),
                          ({"a": {"size": [0, 3]}}, "'a.size' has value [0, 3]; allowed: a list of 2 integers, "
                                                    "each >= 1"),
                          ({"b": {"size": [9, 3]}}, "'b.size' has value [9, 3]; allowed: [low, high]"),
                          ({"colour": "green"}, "'colour' has value 'green'; allowed: null or one of 'red', 'blue'")]:
        with pytest.raises(ConfigError) as err:
            Outer.from_dict(data)
        assert message in str(err.value), (data, str(err.value))
    COLOURS.register("green", 3)  # names are read from the registry when a config is checked
    try:
        assert Outer.from_dict({"colour": "green"}).colour == "green"
    finally:
        COLOURS._entries.pop("green")


def test_unknown_keys_name_the_dotted_key_and_the_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'b\.depth'; allowed keys here: \['size', 'width'\]"):
        Outer.from_dict({"b": {"depth": 1}})
    with pytest.raises(ConfigError, match=r"unknown config key 'b\.depth'"):
        Outer().with_overrides({"b.depth": 1})
    with pytest.raises(ConfigError, match=r"config key 'count' is a value, not a section"):
        Outer().with_overrides({"count.x": 1})


def test_partial_sections_keep_the_fields_own_defaults():
    c = Outer.from_dict({"b": {"width": 2.0}})
    assert (c.b.width, c.b.size) == (2.0, (5, 6))  # b's own default size, not Inner's (2, 3)
    c = Outer().with_overrides({"b.size": [7, 8]}, a__width=3.0, b={"width": 4.0})
    assert (c.a.width, c.a.size, c.b.width, c.b.size) == (3.0, (2, 3), 4.0, (7, 8))
    assert Outer.from_dict(c.to_dict()) == c


def test_set_values_parse_as_yaml_and_the_field_decides():
    assert parse_assignment("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_assignment("x=1e-3") == ("x", "1e-3")  # YAML 1.1 text; a float field converts it
    assert Outer.from_dict({"rate": parse_value("1e-3")}).rate == 0.001
    assert parse_value("null") is None and parse_value("true") is True and parse_value("[unclosed") == "[unclosed"
    assert parse_assignment("k=a=b") == ("k", "a=b")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignment("novalue")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignment("=3")


def test_yaml_files(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("count: 4\nb:\n  width: 2\n")
    assert Outer.from_dict(load_yaml(good)).b.width == 2.0
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load_yaml(empty) == {}
    for name, content, message in [("bad.yaml", b"count: [1\n", "is not valid YAML"),
                                   ("list.yaml", b"- 1\n", "must hold a mapping of keys, got list"),
                                   ("keys.yaml", b"1: 2\n", "key 1 is not a string"),
                                   ("bin.yaml", b"\xff\xfe\x00garbage", "is not UTF-8 text")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=message):
            load_yaml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_shipped_names_resolve_outside_a_checkout(tmp_path, monkeypatch):
    """An installed wheel has no repository: the configs come from the package data folder."""
    packaged = tmp_path / "his_common" / "configs"
    (packaged / "ablations").mkdir(parents=True)
    (packaged / "default.yaml").write_text("count: 1\n")
    (packaged / "ablations" / "vanilla.yaml").write_text("count: 2\n")
    monkeypatch.setattr(cfgmod, "_PACKAGED_CONFIGS", packaged)
    monkeypatch.setattr(cfgmod, "_CHECKOUT_CONFIGS", tmp_path / "no_checkout")
    monkeypatch.chdir(tmp_path)
    assert load_yaml("default") == {"count": 1}
    assert load_yaml("ablations/vanilla.yaml") == {"count": 2}
    assert cfgmod.shipped_config_names() == ["ablations/vanilla", "default"]
    with pytest.raises(ConfigError, match=r"'fancy' does not exist and is not the name of a shipped config "
                                          r"\(shipped: ablations/vanilla, default\)"):
        load_yaml("fancy")
