"""Configuration: Table II defaults, the shipped YAML, and clear errors for bad values."""
import dataclasses
import typing
from pathlib import Path

import pytest

from his_env.config import ConfigError, HISConfig, LiveOracleConfig
from quality_oracle.hiqm import calibrate_approximation_loss

DEFAULT_YAML = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def test_defaults_are_table_ii():
    c = HISConfig()
    assert (c.num_ues, c.num_clusters) == (50, 3)
    assert (c.steps.total, c.steps.max_common, c.steps.min_es_personal, c.steps.max_es_personal) == (28, 16, 0, 11)
    assert (c.es.flops_per_step, c.es.sm_range, c.es.frequency_hz) == (12e12, (1026, 1674), 1.41e9)
    assert (c.es.flops_per_cycle_per_sm, c.es.kappa, c.es.mu1, c.es.mu2) == (2048, 1e-27, 4, 135)
    assert (c.ue.flops_per_step, c.ue.sm_range, c.ue.frequency_hz) == (12e12, (64, 84), 1.86e9)
    assert (c.ue.flops_per_cycle_per_sm, c.ue.kappa, c.ue.mu1, c.ue.mu2) == (1024, 1e-27, 4, 135)
    assert (c.channel.latent_shape, c.channel.bits_per_value, c.channel.compression_ratio) == ((128, 128, 16), 16, 2)
    assert c.channel.distance_range_m == (50, 300)


def test_shipped_yaml_equals_defaults():
    assert HISConfig.from_yaml(DEFAULT_YAML).to_dict() == HISConfig().to_dict()


def test_ecdiff_quality_default_is_the_calibrated_value():
    assert HISConfig().ecdiff.quality_loss_per_approx_step == pytest.approx(calibrate_approximation_loss(), rel=0.01)


def test_every_yaml_key_has_a_comment():
    for line in DEFAULT_YAML.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in line, f"uncommented key: {line}"


@pytest.mark.parametrize("data, key", [
    ({"es": {"sm_range": [-5, 10]}}, "es.sm_range"),
    ({"ue": {"sm_range": [84, 64]}}, "ue.sm_range"),
    ({"steps": {"max_common": 28}}, "steps.max_common"),  # x_max + y_min >= T_max
    ({"steps": {"max_common": 20, "min_es_personal": 8, "max_es_personal": 9}}, "steps.max_common"),
    ({"num_clusters": 51}, "num_clusters"),  # M > N
    ({"num_clusters": 0}, "num_clusters"),
    ({"num_ues": "fifty"}, "num_ues"),
    ({"num_ues": True}, "num_ues"),
    ({"es": {"efficiency": 1.5}}, "es.efficiency"),
    ({"scheme": {"name": "magic"}}, "scheme.name"),
    ({"scheme": {"allocation": "greedy"}}, "scheme.allocation"),
    ({"reward": {"delay_weight": -1}}, "reward.delay_weight"),
    ({"ecdiff": {"approx_steps": 0}}, "ecdiff.approx_steps"),
    ({"workload": {"source": "file"}}, "workload.path"),
    ({"channel": {"latent_shape": [128, 128]}}, "channel.latent_shape"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        HISConfig.from_dict(data)


def test_unknown_keys_are_rejected_with_their_path():
    with pytest.raises(ConfigError, match=r"unknown config key 'num_user'"):
        HISConfig.from_dict({"num_user": 4})
    with pytest.raises(ConfigError, match=r"unknown config key 'es\.sm_rnge'.*allowed keys here"):
        HISConfig.from_dict({"es": {"sm_rnge": [1, 2]}})
    with pytest.raises(ConfigError, match=r"unknown config key 'es\.nope'"):
        HISConfig().with_overrides({"es.nope": 1})


def test_overrides_and_partial_sections():
    c = HISConfig().with_overrides({"es.sm_range": [500, 600]}, num_ues=4, scheme__name="cfis")
    assert (c.es.sm_range, c.num_ues, c.scheme.name) == ((500, 600), 4, "cfis")
    ue = HISConfig.from_dict({"ue": {"mu1": 5}}).ue
    assert (ue.mu1, ue.sm_range, ue.frequency_hz) == (5, (64, 84), 1.86e9)  # the rest stays the UE's


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        HISConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_ues: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        HISConfig.from_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        HISConfig.from_yaml(listy)


def test_yaml_names_and_file_errors(tmp_path):
    assert HISConfig.from_yaml("default").to_dict() == HISConfig().to_dict()
    assert HISConfig.from_yaml("small").num_ues == 10
    with pytest.raises(ConfigError, match=r"'no_such'.*not the name of a shipped config \(shipped: .*default.*small"):
        HISConfig.from_yaml("no_such")
    with pytest.raises(ConfigError, match="is not a regular file"):
        HISConfig.from_yaml(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("num_ues: 4  # r\xe9seau\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml' is not UTF-8 text \(byte offset 15: b'\\xe9'\)"):
        HISConfig.from_yaml(latin1)
    # a run file's sections belong to the run config (agents.config), not to the env
    with pytest.raises(ConfigError, match=r"unknown config key 'algorithm'; allowed keys here"):
        HISConfig.from_yaml("train_small")
    old = tmp_path / "old.yaml"
    old.write_text("num_ues: 4\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train'"):
        HISConfig.from_yaml(old)


@pytest.mark.parametrize("key, value", [
    ("reward.delay_weight", float("inf")),
    ("reward.quality_weight", float("inf")),
    ("reward.energy_weight", float("nan")),
    ("channel.bandwidth_hz", float("inf")),
    ("channel.noise_psd_dbm_per_hz", float("nan")),
    ("channel.noise_psd_dbm_per_hz", float("-inf")),
    ("channel.path_loss_db_at_1km", float("nan")),
    ("channel.path_loss_db_at_1km", float("inf")),
    ("channel.path_loss_slope_db", float("inf")),
    ("channel.distance_range_m", [50.0, float("inf")]),
    ("es.kappa", float("inf")),
    ("reward.delay_weight", "inf"),  # text, as `--set reward.delay_weight=inf` gives it
    ("reward.quality_weight", ".inf"),
])
def test_non_finite_numbers_are_refused(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + r"' has value .*allowed: .*finite"):
        HISConfig().with_overrides({key: value})


def _float_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _float_keys(tp, prefix + f.name + ".")
        elif tp is float or float in typing.get_args(tp):
            yield prefix + f.name


@pytest.mark.parametrize("key", list(_float_keys(HISConfig)))
def test_every_float_key_is_checked_finite(key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        HISConfig().with_overrides({key: float("inf")})
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        HISConfig().with_overrides({key: float("nan")})


@pytest.mark.parametrize("key, value, allowed", [
    ("channel.bandwidth_hz", 0, "a number > 0"),
    ("channel.transmit_power_w", -1, "a number > 0"),
    ("channel.path_loss_slope_db", -37.6, "a number >= 0"),
    ("channel.compression_ratio", 0, "a number > 0"),
    ("channel.bits_per_value", 0, "an integer >= 1"),
    ("channel.distance_range_m", [0, 300], "each > 0"),
    ("channel.distance_range_m", [300, 50], "[low, high] metres with 0 < low <= high"),
    ("reward.quality_weight", -0.1, "a number >= 0"),
    ("es.mu1", -1, "a number >= 0"),
    ("ecdiff.smoothing", 0, "a number in (0, 1]"),
    ("ecdiff.quality_loss_per_approx_step", 1, "a number in [0, 1)"),
    ("workload.pool_size", 0, "an integer >= 1"),
    ("observation.es_sm_reference", [10, 10], "[low, high] with high > low"),
])
def test_ranges_name_the_key_and_the_allowed_range(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        HISConfig().with_overrides({key: value})
    assert f"config key {key!r} has value" in str(err.value) and allowed in str(err.value)


def test_named_choices_come_from_the_registries():
    from his_env.allocation import ALLOCATION_RULES
    from his_env.clustering import CLUSTERING_METHODS
    from his_env.text.public import PUBLIC_PROMPT_SOURCES
    from his_env.schemes import SCHEMES

    assert SCHEMES.names == ("his", "ppgfis", "cfis", "iis")
    assert CLUSTERING_METHODS.names == ("semantic", "entity", "random", "single")
    assert set(PUBLIC_PROMPT_SOURCES.names) == {"generated", "llm", "random_member", "none"}
    assert ALLOCATION_RULES.names == ("kkt", "user_equal", "cluster_equal")
    for key, registry in (("scheme.name", SCHEMES), ("scheme.clustering", CLUSTERING_METHODS),
                          ("scheme.public_prompt", PUBLIC_PROMPT_SOURCES), ("scheme.allocation", ALLOCATION_RULES)):
        for name in registry.names:
            HISConfig().with_overrides({key: name})
        with pytest.raises(ConfigError) as err:
            HISConfig().with_overrides({key: "nope"})
        assert "one of " + ", ".join(repr(n) for n in registry.names) in str(err.value)


def test_live_oracle_options_are_typed_and_checked_at_load():
    cfg = HISConfig.from_dict({"oracle": {"live": {"es_model": "/m/sd3", "clip_model": "/m/clip", "batch_size": 4}}})
    assert isinstance(cfg.oracle.live, LiveOracleConfig)
    assert (cfg.oracle.live.batch_size, cfg.oracle.live.height, cfg.oracle.live.dtype) == (4, 1024, "bfloat16")
    assert cfg.to_dict()["oracle"]["live"]["clip_model"] == "/m/clip"
    with pytest.raises(ConfigError, match=r"unknown config key 'oracle\.live\.guidance'.*'guidance_common'"):
        HISConfig.from_dict({"oracle": {"live": {"guidance": 3}}})
    with pytest.raises(ConfigError, match=r"'oracle\.live\.es_model' has value ''.*required when oracle\.kind"):
        HISConfig.from_dict({"oracle": {"kind": "live"}})
    with pytest.raises(ConfigError, match=r"'oracle\.live\.dtype' has value 'fp8'"):
        HISConfig().with_overrides({"oracle.live.dtype": "fp8"})
    with pytest.raises(ConfigError, match=r"'oracle\.live\.device' has value 'gpu'"):
        HISConfig().with_overrides({"oracle.live.device": "gpu"})
    with pytest.raises(ConfigError, match=r"'oracle\.live\.guidance_personal' has value inf"):
        HISConfig().with_overrides({"oracle.live.guidance_personal": float("inf")})


def test_live_oracle_config_mirrors_the_oracle_options():
    pytest.importorskip("torch", reason="quality_oracle.live.oracle imports torch")
    from quality_oracle.live.oracle import LiveOracleOptions

    mirror = {f.name: (f.type, f.default) for f in dataclasses.fields(LiveOracleConfig)}
    options = {f.name: (f.type, f.default) for f in dataclasses.fields(LiveOracleOptions)}
    assert mirror == options
    # what the env hands the oracle (quality_oracle.build_oracle) is accepted by the options class
    live = HISConfig.from_dict({"oracle": {"live": {"es_model": "a", "clip_model": "b", "device": "cpu"}}}).oracle.live
    assert LiveOracleOptions.from_mapping(dataclasses.asdict(live)) == LiveOracleOptions(
        es_model="a", clip_model="b", device="cpu")
