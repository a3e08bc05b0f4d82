"""The one configuration mechanism: typed dataclasses with defaults, read from YAML or dicts.

A config class is a dataclass that derives from `Config`. Its fields carry their type
annotation and a default; `setting(...)` adds a range (`ge`, `gt`, `le`, `lt`) or a set of
allowed names (`choices`, a tuple or a function returning the names, such as a registry's).
`Config.from_dict` then

- rejects unknown keys, naming the dotted key and the keys allowed there;
- checks every value against its annotation (bool, int, float, str, Optional, tuples, lists,
  dicts and nested config sections), read with `typing`, never by matching annotation text;
  every float must be finite (`inf` and `nan` are refused everywhere);
- checks ranges and names field by field, then the class's own `validate()` for rules that
  tie several fields together;
- fills a partial section from that field's own default (so `ue: {mu1: 5}` keeps the other
  UE values, not the class defaults).

Every error is a `ConfigError` naming the dotted key, the value and what is allowed.

Also here: `load_yaml` (a config file as a mapping, with clear errors for a missing, unreadable,
non-UTF-8, invalid or non-mapping file), `config_file` (a path, or the name of a shipped config
such as "default"), `deep_merge` (layering files), and `parse_assignment` (the one parser of
`--set KEY=VALUE`).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar, Union

import yaml

C = TypeVar("C", bound="Config")
Choices = Union[Sequence[str], Callable[[], Iterable[str]]]

# Shipped config files: package data of his_common in an installed wheel (setup.cfg maps the
# repository's configs/ folder there), the repository's configs/ folder in a checkout.
_PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
_CHECKOUT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A configuration key is unknown, or its value is of the wrong type or out of range."""


# ---------------------------------------------------------------------- declaring fields
def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
            choices: Choices | None = None) -> Any:
    """A dataclass field with a range (applied to each element of a tuple or list) or allowed names."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"config": {k: v for k, v in meta.items() if v is not None}})


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise `ConfigError` naming `key`, `value` and `allowed` unless `ok`."""
    if not ok:
        raise ConfigError(f"config key {key!r} has value {_show(value)}; allowed: {allowed}")


def _show(value: Any) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)


class Config:
    """Base of every config dataclass: construction, checks, plain-dict round trip, overrides."""

    def validate(self, prefix: str = "") -> None:
        """Checks that tie several fields together (`prefix` is this section's dotted path)."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any] | None = None, *, prefix: str = "") -> C:
        """A checked instance from a (possibly partial) nested mapping; missing keys keep their defaults."""
        return build(cls, {} if data is None else data, prefix)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def with_overrides(self: C, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> C:
        """A new config with `overrides` merged in.

        Keys may be dotted (`"es.sm_range"`), double-underscored (`es__sm_range`, for keyword
        arguments) or section names mapped to dicts (`es={"sm_range": ...}`, merged into the section).
        """
        tree = self.to_dict()
        for key, value in {**dict(overrides or {}), **kwargs}.items():
            set_dotted(type(self), tree, key.replace("__", "."), value)
        return type(self).from_dict(tree)


# ---------------------------------------------------------------------- building
def build(cls: type[C], data: Any, prefix: str = "") -> C:
    """`cls` from the mapping `data`: unknown keys, types, ranges and names checked; then `validate`."""
    obj = _build(cls, data, prefix)
    _validate_tree(obj, prefix)
    return obj


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        where = f"config key {prefix[:-1]!r}" if prefix else "a config"
        raise ConfigError(f"{where} must be a mapping of {sorted(f.name for f in dataclasses.fields(cls))}, "
                          f"got {_show(data)}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key {prefix + str(unknown[0])!r}; allowed keys here: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = prefix + f.name
        tp = hints[f.name]
        value = data[f.name]
        section = _section_type(tp)
        if section is not None and isinstance(value, Mapping):
            # a partial section: the field's own default fills the rest
            value = deep_merge(to_plain(_field_default(f)) or {}, value)
        kwargs[f.name] = _coerce(value, tp, key)
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        _check_field(f, getattr(obj, f.name), prefix + f.name, hints[f.name])
    return obj


def _validate_tree(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _validate_tree(value, prefix + f.name + ".")
    if isinstance(obj, Config):
        obj.validate(prefix)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _section_type(tp: Any) -> type | None:
    """The dataclass a field holds (also through Optional), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_text(a) for a in args if a is not type(None)]
        return ("null or " if type(None) in args else "") + " or ".join(parts)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0]) if len(set(args)) == 1 else 'values'}"
    if origin is list:
        return f"a list of {_plural(args[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {sorted(f.name for f in dataclasses.fields(tp))}"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(tp, str(tp))


def _plural(tp: Any) -> str:
    return {bool: "booleans", int: "integers", float: "finite numbers", str: "strings"}.get(tp, _type_text(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` checked against the annotation `tp`; YAML lists become tuples; ints become floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        check(False, key, value, _type_text(tp))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin is tuple:
        variable = len(args) == 2 and args[1] is Ellipsis
        ok = isinstance(value, (list, tuple)) and (variable or len(value) == len(args))
        check(ok, key, value, _type_text(tp))
        kinds = [args[0]] * len(value) if variable else args
        return tuple(_coerce_item(v, a, key, tp) for v, a in zip(value, kinds))
    if origin is list:
        check(isinstance(value, (list, tuple)), key, value, _type_text(tp))
        return [_coerce_item(v, args[0], key, tp) for v in value]
    if origin is dict:
        check(isinstance(value, Mapping), key, value, _type_text(tp))
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        check(isinstance(value, bool), key, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        check(isinstance(value, int) and not isinstance(value, bool), key, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        check(ok and math.isfinite(value), key, value, "a finite number")
        return float(value)
    if tp is str:
        check(isinstance(value, str), key, value, "a string")
        return value
    raise TypeError(f"config key {key!r}: unsupported annotation {tp!r}")  # a programming error


def _coerce_item(value: Any, tp: Any, key: str, whole: Any) -> Any:
    try:
        return _coerce(value, tp, key)
    except ConfigError:
        raise ConfigError(f"config key {key!r} has value {_show(value)} in its list; "
                          f"allowed: {_type_text(whole)}") from None


def _check_field(f: dataclasses.Field, value: Any, key: str, tp: Any) -> None:
    rules = f.metadata.get("config", {})
    if not rules or value is None:
        return
    nullable = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    if "choices" in rules:
        names = allowed_names(rules["choices"])
        check(value in names, key, value, ("null or " if nullable else "") + "one of " + ", ".join(map(repr, names)))
    bounds = {op: rules[op] for op in ("ge", "gt", "le", "lt") if op in rules}
    if not bounds:
        return
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    ok = all(_within(v, bounds) for v in items)
    condition = _range_text(bounds)
    if isinstance(value, (list, tuple)):
        what = f"{_type_text(tp)}, each {condition}"
    else:
        what = f"{'an integer' if isinstance(value, int) else 'a number'} {condition}"
    check(ok, key, value, ("null or " if nullable else "") + what)


def _within(v: float, bounds: Mapping[str, float]) -> bool:
    return all({"ge": v >= b, "gt": v > b, "le": v <= b, "lt": v < b}[op] for op, b in bounds.items())


def _range_text(bounds: Mapping[str, float]) -> str:
    """">= 1", "> 0", "in [0, 1]", "in (0, 1]", ..."""
    lo = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    hi = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]:g}, {hi[0]:g}{hi[1]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]:g}"
    return f"{'<=' if hi[1] == ']' else '<'} {hi[0]:g}"


def allowed_names(choices: Choices) -> tuple[str, ...]:
    """The names a `choices` rule allows (a registry's keys are read when asked for)."""
    return tuple(choices() if callable(choices) else choices)


# ---------------------------------------------------------------------- plain data
def to_plain(obj: Any) -> Any:
    """Dataclasses as dicts, tuples as lists: what YAML and JSON hold."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update` laid over it; mappings merge key by key, anything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(cls: type, tree: dict[str, Any], dotted: str, value: Any, prefix: str = "") -> None:
    """Set `dotted` (e.g. "es.sm_range") in the plain tree of a `cls` config; the path is checked
    against `cls`'s fields. A mapping given for a section is merged into it."""
    parts = dotted.split(".")
    node, schema = tree, cls
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(schema)]
        if part not in names:
            raise ConfigError(f"unknown config key {prefix + '.'.join(parts[:i + 1])!r}; "
                              f"allowed keys here: {sorted(names)}")
        section = _section_type(typing.get_type_hints(schema)[part])
        if i == len(parts) - 1:
            if section is not None and isinstance(value, Mapping) and isinstance(node.get(part), Mapping):
                node[part] = deep_merge(node[part], value)
            else:
                node[part] = copy.deepcopy(value)
            return
        if section is None:
            raise ConfigError(f"config key {prefix + '.'.join(parts[:i + 1])!r} is a value, not a section "
                              f"(in {prefix + dotted!r})")
        if not isinstance(node.get(part), dict):
            node[part] = to_plain(_field_default(next(f for f in dataclasses.fields(schema) if f.name == part)))
        node, schema = node[part], section


# ---------------------------------------------------------------------- files and --set
def config_file(name_or_path: str | Path) -> Path:
    """The file `name_or_path` names: an existing path, or a shipped config's name such as
    "default", "train_small" or "ablations/vanilla" (".yaml" may be left out)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.exists():
        raise ConfigError(f"config file {str(path)!r} is not a regular file")
    folder = shipped_configs_dir()
    if folder is not None and not path.is_absolute():
        for candidate in (folder / path, folder / f"{path}.yaml"):
            if candidate.is_file():
                return candidate
    names = ", ".join(shipped_config_names()) or "none found"
    raise ConfigError(f"config file {str(path)!r} does not exist and is not the name of a shipped config "
                      f"(shipped: {names})")


def shipped_configs_dir() -> Path | None:
    for folder in (_PACKAGED_CONFIGS, _CHECKOUT_CONFIGS):
        if (folder / "default.yaml").is_file():
            return folder
    return None


def shipped_config_names() -> list[str]:
    folder = shipped_configs_dir()
    if folder is None:
        return []
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


def load_yaml(name_or_path: str | Path) -> dict[str, Any]:
    """A config file (see `config_file`) as a mapping; an empty file is an empty mapping."""
    path = config_file(name_or_path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte offset {exc.start}: "
                          f"{exc.object[exc.start:exc.start + 1]!r})") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"config file {str(path)!r}: key {bad[0]!r} is not a string")
    return data


def parse_value(text: str) -> Any:
    """A `--set` value as YAML reads it: numbers, true/false, null, [lists], {mappings}, else text.
    The field's type decides what is accepted (a float field also takes "1e-3")."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_assignment(text: str, example: str = "--set num_ues=10") -> tuple[str, Any]:
    """`"KEY=VALUE"` as (KEY, parsed VALUE)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. {example}")
    return key, parse_value(value)


def parse_overrides(pairs: Sequence[str], example: str = "--set num_ues=10") -> dict[str, Any]:
    """`--set KEY=VALUE` pairs as {key: value}, in order (a later pair wins), each read by
    `parse_assignment`, the one parser of config values (every CLI and benchmark uses this)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, value = parse_assignment(pair, example)
        out[key] = value
    return out


__all__ = ["Config", "ConfigError", "build", "check", "config_file", "deep_merge", "load_yaml", "parse_assignment",
           "parse_overrides", "parse_value", "set_dotted", "setting", "shipped_config_names", "shipped_configs_dir", "to_plain"]
