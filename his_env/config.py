"""Typed, validated configuration of the HIS environment.

`HISConfig` is a tree of dataclasses whose defaults are the paper's Table II (and, for the
parameters the paper leaves out, the values argued for in `configs/default.yaml`). It loads
from YAML or dicts, merges overrides given as nested dicts or dotted keys (`"es.sm_range"`),
and rejects unknown keys, wrong types and out-of-range values with a `ConfigError` that names
the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

SCHEMES = ("his", "ppgfis", "cfis", "iis")
ALLOCATIONS = ("kkt", "user_equal", "cluster_equal")
CLUSTERINGS = ("semantic", "entity", "random", "single")
PUBLIC_PROMPTS = ("generated", "llm", "random_member")
NEGATIVE_PROMPTS = ("wordnet", "none")
WORKLOAD_SOURCES = ("templates", "reference", "file")
ORACLES = ("fitted", "live")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


@dataclass
class StepsConfig:
    total: int = 28  # T_max, Eq. (28f)
    max_common: int = 16  # x_max, Eq. (28b)
    min_es_personal: int = 0  # y_min, Eq. (28c)
    max_es_personal: int = 11  # y_max, Eq. (28c)
    min_ue: int = 1  # z_min, Eq. (28d)


@dataclass
class DeviceConfig:
    """Compute and power model of one GPU class (Eqs. 9-10, 16-18)."""

    flops_per_step: float = 12e12  # xi: FLOPs of one denoising step
    sm_range: tuple[int, int] = (1026, 1674)  # SMs drawn uniformly each decision point
    frequency_hz: float = 1.41e9  # F
    flops_per_cycle_per_sm: float = 2048.0  # D
    efficiency: float = 0.25  # rho: discount for non-computational bottlenecks
    kappa: float = 1e-27  # chip power coefficient
    mu1: float = 4.0  # power per active SM
    mu2: float = 135.0  # baseline power


def _ue_defaults() -> DeviceConfig:
    return DeviceConfig(sm_range=(64, 84), frequency_hz=1.86e9, flops_per_cycle_per_sm=1024.0)


@dataclass
class ChannelConfig:
    """Downlink of the personalised intermediate result (Eqs. 14-15)."""

    distance_range_m: tuple[float, float] = (50.0, 300.0)
    bandwidth_hz: float = 10e6  # b_n
    transmit_power_w: float = 1.0  # p_n
    noise_psd_dbm_per_hz: float = -174.0  # sigma_0^2
    path_loss_db_at_1km: float = 128.1  # PL(d) = a + b log10(d / 1 km)
    path_loss_slope_db: float = 37.6
    rayleigh_fading: bool = True
    latent_shape: tuple[int, int, int] = (128, 128, 16)  # n_h, n_w, n_c
    bits_per_value: int = 16  # varrho
    compression_ratio: float = 2.0  # tau


@dataclass
class RewardConfig:
    """Weights of the network utility U = w_q Q - w_t T - w_e E (Eq. 23)."""

    quality_weight: float = 4.8
    delay_weight: float = 0.1
    energy_weight: float = 1.5e-5


@dataclass
class WorkloadConfig:
    source: str = "templates"  # templates | reference | file
    path: str | None = None  # prompts file for source=file (txt, csv or jsonl)
    pool_size: int = 1200  # distinct prompts generated for source=templates
    num_intent_groups: int = 3  # subjects active in one decision point
    subjects: list[str] | None = None  # restrict the subjects (None: all)


@dataclass
class SemanticsConfig:
    model: str = "all-MiniLM-L6-v2"
    cache_dir: str | None = None  # None: $HIS_MARL_CACHE or ~/.cache/his_marl


@dataclass
class PromptsConfig:
    llm_model: str | None = None  # local causal LM path for public_prompt=llm (None: SmolLM2)
    negative: str = "wordnet"  # wordnet | none


@dataclass
class SchemeConfig:
    name: str = "his"  # his | ppgfis | cfis | iis
    # None means "the scheme's own choice" (schemes.py); set one to build a variant.
    clustering: str | None = None
    public_prompt: str | None = None
    sim_npi: bool | None = None
    common_phase: bool | None = None
    allocation: str = "kkt"  # kkt | user_equal | cluster_equal


@dataclass
class ObservationConfig:
    """Fixed reference ranges for min-max normalising SM counts (Eq. 31)."""

    es_sm_reference: tuple[float, float] = (1026.0, 1674.0)
    ue_sm_reference: tuple[float, float] = (64.0, 84.0)


@dataclass
class OracleConfig:
    kind: str = "fitted"  # fitted | live
    hiqm_csv: str | None = None  # None: the shipped SD3-medium measurements
    live: dict[str, Any] = field(default_factory=dict)  # options of the live oracle


@dataclass
class ECDiffConfig:
    """K-step noise approximation on the ES (EC-Diff Alg. 1)."""

    enabled: bool = False
    pre_inference_calls: int = 7  # p: real calls before the first approximation
    approx_steps: int = 2  # k: approximated steps between two real calls
    smoothing: float = 0.3  # alpha, Eq. (6) of EC-Diff
    reinit_calls: int = 2  # real calls after the public->personal prompt switch
    quality_loss_per_approx_step: float = 3.1e-4  # relative quality loss per approximated step (EC-Diff Table 1)


@dataclass
class HISConfig:
    num_ues: int = 50  # N
    num_clusters: int = 3  # M
    episode_length: int = 20  # I decision points per episode
    steps: StepsConfig = field(default_factory=StepsConfig)
    es: DeviceConfig = field(default_factory=DeviceConfig)
    ue: DeviceConfig = field(default_factory=_ue_defaults)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    semantics: SemanticsConfig = field(default_factory=SemanticsConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    scheme: SchemeConfig = field(default_factory=SchemeConfig)
    observation: ObservationConfig = field(default_factory=ObservationConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    ecdiff: ECDiffConfig = field(default_factory=ECDiffConfig)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "HISConfig":
        cfg = _build(cls, dict(data or {}), "")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "HISConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        with path.open() as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
        data.pop("train", None)  # the trainer's own section (train.py), not the env's
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def with_overrides(self, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> "HISConfig":
        """A new config with `overrides` merged in.

        Keys may be dotted (`"es.sm_range"`), double-underscored (`es__sm_range`, for keyword
        arguments) or top-level section names mapped to dicts (`es={"sm_range": ...}`).
        """
        merged = self.to_dict()
        for key, value in {**dict(overrides or {}), **kwargs}.items():
            _set_dotted(merged, key.replace("__", "."), value)
        return HISConfig.from_dict(merged)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        s = self.steps
        _check(self.num_ues >= 1, "num_ues", self.num_ues, "an integer >= 1")
        _check(1 <= self.num_clusters <= self.num_ues, "num_clusters", self.num_clusters,
               f"an integer in [1, num_ues={self.num_ues}]")
        _check(self.episode_length >= 1, "episode_length", self.episode_length, "an integer >= 1")
        _check(s.total >= 1, "steps.total", s.total, "an integer >= 1")
        _check(s.max_common >= 0, "steps.max_common", s.max_common, "an integer >= 0")
        _check(s.min_es_personal >= 0, "steps.min_es_personal", s.min_es_personal, "an integer >= 0")
        _check(s.min_ue >= 0, "steps.min_ue", s.min_ue, "an integer >= 0")
        _check(s.max_es_personal >= s.min_es_personal, "steps.max_es_personal", s.max_es_personal,
               f"an integer >= steps.min_es_personal={s.min_es_personal}")
        _check(s.max_common + s.min_es_personal < s.total, "steps.max_common", s.max_common,
               f"an integer with max_common + min_es_personal < total={s.total} "
               f"(min_es_personal={s.min_es_personal})")
        _check(s.min_es_personal + s.min_ue <= s.total, "steps.min_ue", s.min_ue,
               f"an integer with min_es_personal + min_ue <= total={s.total}")
        _check(s.max_es_personal <= s.total - s.min_ue, "steps.max_es_personal", s.max_es_personal,
               f"an integer <= total - min_ue = {s.total - s.min_ue}")
        for name, dev in (("es", self.es), ("ue", self.ue)):
            lo, hi = dev.sm_range
            _check(1 <= lo <= hi, f"{name}.sm_range", list(dev.sm_range), "[low, high] with 1 <= low <= high")
            for attr in ("flops_per_step", "frequency_hz", "flops_per_cycle_per_sm", "kappa"):
                _check(getattr(dev, attr) > 0, f"{name}.{attr}", getattr(dev, attr), "a number > 0")
            _check(0 < dev.efficiency <= 1, f"{name}.efficiency", dev.efficiency, "a number in (0, 1]")
            _check(dev.mu1 >= 0, f"{name}.mu1", dev.mu1, "a number >= 0")
            _check(dev.mu2 >= 0, f"{name}.mu2", dev.mu2, "a number >= 0")
        _check(self.es.sm_range[0] >= self.num_clusters, "es.sm_range", list(self.es.sm_range),
               f"a low bound >= num_clusters={self.num_clusters} (every cluster needs one SM)")
        c = self.channel
        dlo, dhi = c.distance_range_m
        _check(0 < dlo <= dhi, "channel.distance_range_m", list(c.distance_range_m),
               "[low, high] metres with 0 < low <= high")
        for attr in ("bandwidth_hz", "transmit_power_w", "bits_per_value", "compression_ratio"):
            _check(getattr(c, attr) > 0, f"channel.{attr}", getattr(c, attr), "a number > 0")
        _check(all(v >= 1 for v in c.latent_shape), "channel.latent_shape", list(c.latent_shape),
               "three integers >= 1 (height, width, channels)")
        for attr in ("quality_weight", "delay_weight", "energy_weight"):
            _check(getattr(self.reward, attr) >= 0, f"reward.{attr}", getattr(self.reward, attr), "a number >= 0")
        w = self.workload
        _check(w.source in WORKLOAD_SOURCES, "workload.source", w.source, f"one of {WORKLOAD_SOURCES}")
        _check(w.source != "file" or w.path is not None, "workload.path", w.path,
               "a prompts file path when workload.source is 'file'")
        _check(w.pool_size >= 1, "workload.pool_size", w.pool_size, "an integer >= 1")
        _check(w.num_intent_groups >= 1, "workload.num_intent_groups", w.num_intent_groups, "an integer >= 1")
        _check(self.prompts.negative in NEGATIVE_PROMPTS, "prompts.negative", self.prompts.negative,
               f"one of {NEGATIVE_PROMPTS}")
        sc = self.scheme
        _check(sc.name in SCHEMES, "scheme.name", sc.name, f"one of {SCHEMES}")
        _check(sc.clustering is None or sc.clustering in CLUSTERINGS, "scheme.clustering", sc.clustering,
               f"null or one of {CLUSTERINGS}")
        _check(sc.public_prompt is None or sc.public_prompt in PUBLIC_PROMPTS, "scheme.public_prompt",
               sc.public_prompt, f"null or one of {PUBLIC_PROMPTS}")
        _check(sc.allocation in ALLOCATIONS, "scheme.allocation", sc.allocation, f"one of {ALLOCATIONS}")
        for name, ref in (("es_sm_reference", self.observation.es_sm_reference),
                          ("ue_sm_reference", self.observation.ue_sm_reference)):
            _check(ref[1] > ref[0], f"observation.{name}", list(ref), "[low, high] with high > low")
        _check(self.oracle.kind in ORACLES, "oracle.kind", self.oracle.kind, f"one of {ORACLES}")
        e = self.ecdiff
        _check(e.pre_inference_calls >= 2, "ecdiff.pre_inference_calls", e.pre_inference_calls,
               "an integer >= 2 (the first noise gradient needs two real calls)")
        _check(e.approx_steps >= 1, "ecdiff.approx_steps", e.approx_steps, "an integer >= 1")
        _check(0 < e.smoothing <= 1, "ecdiff.smoothing", e.smoothing, "a number in (0, 1]")
        _check(e.reinit_calls >= 2, "ecdiff.reinit_calls", e.reinit_calls,
               "an integer >= 2 (a noise gradient needs two real calls under the new prompt)")
        _check(0 <= e.quality_loss_per_approx_step < 1, "ecdiff.quality_loss_per_approx_step",
               e.quality_loss_per_approx_step, "a number in [0, 1)")


# ---------------------------------------------------------------------- helpers
def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r} has value {value!r}; allowed: {allowed}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; convert YAML lists to tuples; ints to floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"config key {key!r} has value {value!r}; allowed: {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, dict(value), key + ".")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key {key!r} has value {value!r}; allowed: a list of {len(args)} "
                              f"values of type {', '.join(_type_name(a) for a in args)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} has value {value!r}; allowed: a list of {_type_name(arg)}")
        return [_coerce(v, arg, key) for v in value]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} has value {value!r}; allowed: a mapping")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} has value {value!r}; allowed: true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key {key!r} has value {value!r}; allowed: an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):  # YAML reads 1e-5 as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"config key {key!r} has value {value!r}; allowed: a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} has value {value!r}; allowed: a string")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # programming error


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; allowed keys here: {sorted(names)}")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    if cls is HISConfig and "ue" in kwargs and isinstance(data.get("ue"), Mapping):
        # a partial `ue:` section keeps the UE defaults, not the ES ones
        kwargs["ue"] = dataclasses.replace(_ue_defaults(), **{k: getattr(kwargs["ue"], k) for k in data["ue"]})
    return cls(**kwargs)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            if part not in node:
                raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r}; "
                                  f"allowed keys here: {sorted(node)}")
            raise ConfigError(f"config key {'.'.join(parts[: i + 1])!r} is not a section")
        node = child
    last = parts[-1]
    if isinstance(node.get(last), dict) and isinstance(value, Mapping) and last != "live":
        for k, v in value.items():
            _set_dotted(node[last], k, v)
    else:
        if last not in node and node is not tree.get("oracle", {}).get("live"):
            raise ConfigError(f"unknown config key {dotted!r}; allowed keys here: {sorted(node)}")
        node[last] = value
