"""Configuration: Table II defaults, the shipped YAML, and clear errors for bad values."""
from pathlib import Path

import pytest

from his_env.config import ConfigError, HISConfig
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
