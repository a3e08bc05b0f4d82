"""Scenarios: the registry is the folder configs/scenarios; `paper` is the default config; the ladder
is 3 sizes x 3 loads with every dynamics process on; held-out scenarios are drawn reproducibly from
their documented ranges and differ from every ladder scenario."""
import pytest

from his_env.config import ConfigError, HISConfig
from his_env.scenarios import (HELD_OUT_COUNT, HELD_OUT_RANGES, SCENARIOS, held_out_overlay, scenario_config,
                               scenario_names, scenario_overlay)

LADDER = [f"seq-{size}-{load}" for size in ("small", "medium", "large") for load in ("light", "moderate", "heavy")]


def test_paper_is_the_default_config():
    assert scenario_config("paper").to_dict() == HISConfig().to_dict()
    assert scenario_config("paper").dynamics.enabled_processes == ()


def test_the_ladder_is_three_sizes_by_three_loads_with_every_process_on():
    assert sorted(LADDER) == sorted(n for n in SCENARIOS.names if n.startswith("seq-"))
    sizes = {}
    for name in LADDER:
        cfg = scenario_config(name)
        assert set(cfg.dynamics.enabled_processes) == {"channel", "mobility", "background_load", "requests", "work",
                                                       "intent", "battery"}
        size, load = name.split("-")[1:]
        assert cfg.dynamics.requests.rate_per_slot == {"light": 0.05, "moderate": 0.1, "heavy": 0.2}[load]
        sizes[size] = (cfg.num_ues, cfg.num_clusters, list(cfg.es.sm_range))
        assert SCENARIOS[name].summary.startswith(f'Scenario "{name}"')
    # N = 10 / 50 / 200, M growing, the ES's SMs per UE those of Table II at N = 50 (1026-1674 SMs / 50 UEs)
    assert sizes == {"small": (10, 2, [205, 335]), "medium": (50, 3, [1026, 1674]), "large": (200, 6, [4104, 6696])}


def test_the_loads_of_a_size_differ_in_the_arrival_rate_alone():
    for size in ("small", "medium", "large"):
        heavy = scenario_config(f"seq-{size}-heavy").to_dict()
        for load in ("light", "moderate"):
            other = scenario_config(f"seq-{size}-{load}").to_dict()
            assert other["dynamics"]["requests"].pop("rate_per_slot") != heavy["dynamics"]["requests"]["rate_per_slot"]
            other["dynamics"]["requests"]["rate_per_slot"] = heavy["dynamics"]["requests"]["rate_per_slot"]
            assert other == heavy, (size, load)


def test_held_out_scenarios_are_reproducible_inside_their_ranges_and_new():
    ladder = [scenario_config(name).to_dict() for name in LADDER]
    seen = []
    for k in range(HELD_OUT_COUNT):
        overlay = held_out_overlay(k)
        assert overlay == held_out_overlay(k)  # the same draw for every caller
        cfg = scenario_config(f"heldout-{k}")
        lo, hi = HELD_OUT_RANGES["num_ues"]
        assert lo <= cfg.num_ues <= hi
        lo, hi = HELD_OUT_RANGES["num_clusters"]
        assert lo <= cfg.num_clusters <= hi and cfg.workload.num_intent_groups == cfg.num_clusters
        lo, hi = HELD_OUT_RANGES["rate_per_slot"]
        assert lo <= cfg.dynamics.requests.rate_per_slot <= hi
        lo, hi = HELD_OUT_RANGES["mean_speed_mps"]
        assert lo <= cfg.dynamics.mobility.mean_speed_mps <= hi
        per_ue = (cfg.es.sm_range[0] + cfg.es.sm_range[1]) / 2 / cfg.num_ues  # the range's middle per UE
        lo, hi = HELD_OUT_RANGES["es_sms_per_ue"]
        assert lo - 0.01 <= per_ue <= hi + 0.01
        # Table II's relative spread: (1674 - 1026) / (1674 + 1026) = 0.24 of the middle, each side
        spread = (cfg.es.sm_range[1] - cfg.es.sm_range[0]) / (cfg.es.sm_range[1] + cfg.es.sm_range[0])
        assert spread == pytest.approx(648 / 2700, abs=2 / cfg.es.sm_range[0])
        assert cfg.to_dict() not in ladder and cfg.to_dict() not in seen
        seen.append(cfg.to_dict())


@pytest.mark.parametrize("name", ["nope", "heldout-99", "heldout-", "seq-medium"])
def test_unknown_scenarios_are_refused_with_the_allowed_names(name):
    with pytest.raises(ConfigError) as info:
        scenario_overlay(name)
    assert f"scenario {name!r}; allowed: paper, seq-large-heavy" in str(info.value) and "heldout-7" in str(info.value)


def test_overrides_go_over_the_scenario():
    cfg = scenario_config("seq-small-light", num_ues=12, **{"dynamics.requests.rate_per_slot": 0.1})
    assert cfg.num_ues == 12 and cfg.dynamics.requests.rate_per_slot == 0.1 and cfg.num_clusters == 2
    assert len(scenario_names()) == len(SCENARIOS) + HELD_OUT_COUNT


def test_a_run_config_lays_the_scenario_under_its_files_and_overrides(tmp_path):
    from agents.config import load_run_config

    run = load_run_config([], ["num_ues=12"], scenario="seq-small-heavy", algo="mappo")
    assert run.env.num_ues == 12 and run.env.num_clusters == 2  # --set over the scenario, the rest the scenario's
    assert run.env.dynamics.requests.rate_per_slot == 0.2 and run.algorithm.algo == "mappo"
    assert load_run_config([], scenario="heldout-2").env.to_dict() == scenario_config("heldout-2").to_dict()
    with pytest.raises(ConfigError, match="scenario 'seq'; allowed: paper"):
        load_run_config([], scenario="seq")


def test_train_py_refuses_an_unknown_scenario_before_anything_starts(tmp_path, capsys):
    from his_cli import train

    code = train.main(["--scenario", "seq-huge-heavy", "--iterations", "1", "--output-dir", str(tmp_path / "run")])
    assert code == 2 and "scenario 'seq-huge-heavy'; allowed: paper" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_both_envs_take_a_scenario_by_name():
    import his_env

    pz = his_env.parallel_env({"num_ues": 12}, scenario="seq-small-light", scheme__name="iis", max_cycles=3)
    assert (pz.num_ues, pz.config.scheme.name, pz.config.episode_length) == (12, "iis", 3)
    assert pz.config.dynamics.enabled_processes == scenario_config("seq-small-light").dynamics.enabled_processes
    observations, _ = pz.reset(seed=0)
    assert observations["ue_0"].shape == (10,)  # Eq. (31)'s 3 values and the 7 dynamics features
    assert pz.state().shape == (12 * 10 + 12 + 1,)
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    from his_env.vector import HISVecEnv

    torch.set_num_threads(1)
    vec = HISVecEnv(num_envs=2, scenario="seq-small-light", bank_size=32)
    assert vec.config == scenario_config("seq-small-light")
    td = vec.reset()
    assert tuple(td["agents", "observation"].shape) == (2, 10, 10)
    with pytest.raises(ValueError, match="ready HISConfig"):
        his_env.parallel_env(scenario_config("paper"), scenario="paper")
