"""Typed, validated configuration of the HIS environment.

`HISConfig` is a tree of config dataclasses (`his_common.config`) whose defaults are the
paper's Table II (and, for the parameters the paper leaves out, the values argued for in
`configs/default.yaml`). It loads from YAML (a path or a shipped config's name such as
"default") or dicts, merges overrides given as nested dicts or dotted keys (`"es.sm_range"`),
and rejects unknown keys, wrong types, non-finite numbers and out-of-range values with a
`ConfigError` that names the key and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from his_common.config import Config, ConfigError, check, load_yaml, setting
from his_env.dynamics.config import DynamicsConfig
from his_env.schemes import SCHEMES
from his_env.text.public import PUBLIC_PROMPT_SOURCES

NEGATIVE_PROMPTS = ("wordnet", "none")
WORKLOAD_SOURCES = ("templates", "reference", "file")
ORACLES = ("fitted", "live")
LIVE_DTYPES = ("bfloat16", "float16", "float32")

__all__ = ["ConfigError", "HISConfig"]


# Named choices whose allowed values are the keys of a registry, read when a config is checked
# (so that a variant registered after import is allowed too). The registries know no config module;
# clustering and allocation are imported on first use only because they load scipy (0.3 s).
def _scheme_names() -> tuple[str, ...]:
    return SCHEMES.names


def _clustering_names() -> tuple[str, ...]:
    from his_env.clustering import CLUSTERING_METHODS

    return CLUSTERING_METHODS.names


def _public_prompt_names() -> tuple[str, ...]:
    return PUBLIC_PROMPT_SOURCES.names


def _allocation_names() -> tuple[str, ...]:
    from his_env.allocation import ALLOCATION_RULES

    return ALLOCATION_RULES.names


@dataclass
class StepsConfig(Config):
    total: int = setting(28, ge=1)  # T_max, Eq. (28f)
    max_common: int = setting(16, ge=0)  # x_max, Eq. (28b)
    min_es_personal: int = setting(0, ge=0)  # y_min, Eq. (28c)
    max_es_personal: int = setting(11, ge=0)  # y_max, Eq. (28c)
    min_ue: int = setting(1, ge=0)  # z_min, Eq. (28d)

    def validate(self, prefix: str = "") -> None:
        check(self.max_es_personal >= self.min_es_personal, prefix + "max_es_personal", self.max_es_personal,
              f"an integer >= {prefix}min_es_personal={self.min_es_personal}")
        check(self.max_common + self.min_es_personal < self.total, prefix + "max_common", self.max_common,
              f"an integer with max_common + min_es_personal < total={self.total} "
              f"(min_es_personal={self.min_es_personal})")
        check(self.min_es_personal + self.min_ue <= self.total, prefix + "min_ue", self.min_ue,
              f"an integer with min_es_personal + min_ue <= total={self.total}")
        check(self.max_es_personal <= self.total - self.min_ue, prefix + "max_es_personal", self.max_es_personal,
              f"an integer <= total - min_ue = {self.total - self.min_ue}")


@dataclass
class DeviceConfig(Config):
    """Compute and power model of one GPU class (Eqs. 9-10, 16-18)."""

    flops_per_step: float = setting(12e12, gt=0)  # xi: FLOPs of one denoising step
    sm_range: tuple[int, int] = setting((1026, 1674), ge=1)  # SMs drawn uniformly each decision point
    frequency_hz: float = setting(1.41e9, gt=0)  # F
    flops_per_cycle_per_sm: float = setting(2048.0, gt=0)  # D
    efficiency: float = setting(0.25, gt=0, le=1)  # rho: discount for non-computational bottlenecks
    kappa: float = setting(1e-27, gt=0)  # chip power coefficient
    mu1: float = setting(4.0, ge=0)  # power per active SM
    mu2: float = setting(135.0, ge=0)  # baseline power

    def validate(self, prefix: str = "") -> None:
        lo, hi = self.sm_range
        check(lo <= hi, prefix + "sm_range", self.sm_range, "[low, high] with 1 <= low <= high")


def _ue_defaults() -> DeviceConfig:
    return DeviceConfig(sm_range=(64, 84), frequency_hz=1.86e9, flops_per_cycle_per_sm=1024.0)


@dataclass
class ChannelConfig(Config):
    """Downlink of the personalised intermediate result (Eqs. 14-15)."""

    distance_range_m: tuple[float, float] = setting((50.0, 300.0), gt=0)
    bandwidth_hz: float = setting(10e6, gt=0)  # b_n
    transmit_power_w: float = setting(1.0, gt=0)  # p_n
    noise_psd_dbm_per_hz: float = -174.0  # sigma_0^2 (any finite dBm/Hz)
    path_loss_db_at_1km: float = 128.1  # PL(d) = a + b log10(d / 1 km) (any finite dB)
    path_loss_slope_db: float = setting(37.6, ge=0)
    rayleigh_fading: bool = True
    latent_shape: tuple[int, int, int] = setting((128, 128, 16), ge=1)  # n_h, n_w, n_c
    bits_per_value: int = setting(16, ge=1)  # varrho
    compression_ratio: float = setting(2.0, gt=0)  # tau

    def validate(self, prefix: str = "") -> None:
        lo, hi = self.distance_range_m
        check(lo <= hi, prefix + "distance_range_m", self.distance_range_m, "[low, high] metres with 0 < low <= high")


@dataclass
class RewardConfig(Config):
    """Weights of the network utility U = w_q Q - w_t T - w_e E (Eq. 23)."""

    quality_weight: float = setting(4.8, ge=0)
    delay_weight: float = setting(0.1, ge=0)
    energy_weight: float = setting(1.5e-5, ge=0)


@dataclass
class WorkloadConfig(Config):
    source: str = setting("templates", choices=WORKLOAD_SOURCES)
    path: str | None = None  # prompts file for source=file (txt, csv or jsonl)
    pool_size: int = setting(1200, ge=1)  # distinct prompts generated for source=templates
    num_intent_groups: int = setting(3, ge=1)  # subjects active in one decision point
    subjects: list[str] | None = None  # restrict the subjects (None: all)

    def validate(self, prefix: str = "") -> None:
        check(self.source != "file" or self.path is not None, prefix + "path", self.path,
              f"a prompts file path when {prefix}source is 'file'")


@dataclass
class SemanticsConfig(Config):
    model: str = "all-MiniLM-L6-v2"
    cache_dir: str | None = None  # None: $HIS_MARL_CACHE or ~/.cache/his_marl


@dataclass
class PromptsConfig(Config):
    llm_model: str | None = None  # local causal LM path for public_prompt=llm (None: SmolLM2)
    negative: str = setting("wordnet", choices=NEGATIVE_PROMPTS)


@dataclass
class SchemeConfig(Config):
    name: str = setting("his", choices=_scheme_names)  # his | ppgfis | cfis | iis
    # None means "the scheme's own choice" (schemes.py); set one to build a variant.
    clustering: str | None = setting(None, choices=_clustering_names)  # semantic | entity | random | single
    public_prompt: str | None = setting(None, choices=_public_prompt_names)  # generated | llm | random_member | none
    sim_npi: bool | None = None
    common_phase: bool | None = None
    allocation: str = setting("kkt", choices=_allocation_names)  # kkt | user_equal | cluster_equal


@dataclass
class ObservationConfig(Config):
    """Fixed reference ranges for min-max normalising SM counts (Eq. 31)."""

    es_sm_reference: tuple[float, float] = (1026.0, 1674.0)
    ue_sm_reference: tuple[float, float] = (64.0, 84.0)

    def validate(self, prefix: str = "") -> None:
        for name in ("es_sm_reference", "ue_sm_reference"):
            low, high = getattr(self, name)
            check(high > low, prefix + name, getattr(self, name), "[low, high] with high > low")


@dataclass
class LiveOracleConfig(Config):
    """`oracle.live`: the fields of `quality_oracle.live.LiveOracleOptions` (which imports torch;
    this mirror does not), checked when the config loads, before any model is touched."""

    es_model: str = ""  # ES diffusion pipeline: diffusers folder or hub id (required for oracle.kind=live)
    clip_model: str = ""  # CLIP scorer folder or hub id (required for oracle.kind=live)
    ue_model: str | None = None  # UE pipeline of the same latent space (None: es_model)
    dtype: str = setting("bfloat16", choices=LIVE_DTYPES)
    device: str = "cuda"  # cuda | cuda:N | cpu
    batch_size: int = setting(8, ge=1)
    height: int = setting(1024, ge=1)
    width: int = setting(1024, ge=1)
    guidance_common: float = setting(2.0, ge=0)  # w1 with SIM on
    guidance_personal: float = setting(8.0, ge=0)  # w2
    cache: bool = True  # disk cache of CLIP scores
    cache_dir: str | None = None  # None: $HIS_MARL_CACHE/live_oracle, else ~/.cache/his_marl/live_oracle
    seed_offset: int = 0
    max_sequence_length: int = setting(256, ge=1)

    def validate(self, prefix: str = "") -> None:
        head, _, index = self.device.partition(":")
        check(head in ("cuda", "cpu") and (not index or (head == "cuda" and index.isdigit())), prefix + "device",
              self.device, "'cuda', 'cuda:N' or 'cpu'")
        check(self.ue_model is None or self.ue_model != "", prefix + "ue_model", self.ue_model,
              "a pipeline folder or hub id, or null for es_model")


@dataclass
class OracleConfig(Config):
    kind: str = setting("fitted", choices=ORACLES)
    hiqm_csv: str | None = None  # None: the shipped SD3-medium measurements
    live: LiveOracleConfig = field(default_factory=LiveOracleConfig)  # options of the live oracle

    def validate(self, prefix: str = "") -> None:
        if self.kind == "live":
            for name in ("es_model", "clip_model"):
                check(bool(getattr(self.live, name)), f"{prefix}live.{name}", getattr(self.live, name),
                      f"a model folder or hub id (required when {prefix}kind is 'live')")


@dataclass
class ECDiffConfig(Config):
    """K-step noise approximation on the ES (EC-Diff Alg. 1)."""

    enabled: bool = False
    pre_inference_calls: int = 7  # p: real calls before the first approximation
    approx_steps: int = setting(2, ge=1)  # k: approximated steps between two real calls
    smoothing: float = setting(0.3, gt=0, le=1)  # alpha, Eq. (6) of EC-Diff
    reinit_calls: int = 2  # real calls after the public->personal prompt switch
    quality_loss_per_approx_step: float = setting(3.1e-4, ge=0, lt=1)  # relative quality loss per approximated step (EC-Diff Table 1)

    def validate(self, prefix: str = "") -> None:
        check(self.pre_inference_calls >= 2, prefix + "pre_inference_calls", self.pre_inference_calls,
              "an integer >= 2 (the first noise gradient needs two real calls)")
        check(self.reinit_calls >= 2, prefix + "reinit_calls", self.reinit_calls,
              "an integer >= 2 (a noise gradient needs two real calls under the new prompt)")


@dataclass
class HISConfig(Config):
    num_ues: int = setting(50, ge=1)  # N
    num_clusters: int = setting(3, ge=1)  # M
    episode_length: int = setting(20, ge=1)  # I decision points per episode
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
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)  # Markov-game processes, all off by default

    @classmethod
    def from_yaml(cls, path: str | Path) -> "HISConfig":
        """The env config in a YAML file: a path, or a shipped config's name ("default", "small")."""
        return cls.from_dict(load_yaml(path))

    def validate(self, prefix: str = "") -> None:
        check(self.num_clusters <= self.num_ues, prefix + "num_clusters", self.num_clusters,
              f"an integer in [1, num_ues={self.num_ues}]")
        check(self.es.sm_range[0] >= self.num_clusters, prefix + "es.sm_range", self.es.sm_range,
              f"a low bound >= num_clusters={self.num_clusters} (every cluster needs one SM)")
        d = self.dynamics
        d.check_cell(self.channel.distance_range_m, prefix + "channel.distance_range_m")
        check(not d.channel.enabled or self.channel.rayleigh_fading, prefix + "dynamics.channel.enabled",
              d.channel.enabled, "false when channel.rayleigh_fading is false (the process correlates the "
              "Rayleigh fading between slots; without fading there is nothing to correlate)")
        check(not d.work.enabled or d.work.max_es_jobs >= self.num_clusters, prefix + "dynamics.work.max_es_jobs",
              d.work.max_es_jobs, f"an integer >= num_clusters={self.num_clusters} (a slot starts up to one ES job "
              "per cluster; a table with fewer free rows starts none)")
