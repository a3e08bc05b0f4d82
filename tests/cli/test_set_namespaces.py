"""`--set KEY=VALUE` means the same in every command: `env.<key>` or the bare key for the simulator,
`algorithm.*`, `experiment.*` for the run, `benchmarl.<experiment|algorithm|task>.*` for BenchMARL's own
settings (agents.config.route_key, the one router); a command refuses the namespaces it does not take,
naming the ones it does, before anything starts."""
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agents.config import ConfigError, load_run_config, route_key, route_overrides

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key, routed", [
    ("num_ues", ("env", "num_ues")),
    ("env.num_ues", ("env", "num_ues")),
    ("es.sm_range", ("env", "es.sm_range")),
    ("env.es.sm_range", ("env", "es.sm_range")),
    ("algorithm.lr", ("algorithm", "lr")),
    ("experiment.seed", ("experiment", "seed")),
    ("benchmarl.experiment.lr", ("benchmarl", "experiment.lr")),
    ("benchmarl.algorithm.mix_hidden", ("benchmarl", "algorithm.mix_hidden")),
    ("benchmarl.task.bank_size", ("benchmarl", "task.bank_size")),
])
def test_one_router_for_every_key(key, routed):
    assert route_key(key) == routed


@pytest.mark.parametrize("key, fragment", [
    ("task.bank_size", "the BenchMARL task's settings are benchmarl.task.<key>"),
    ("benchmarl.lr", "BenchMARL's settings are benchmarl.<section>.<key>; allowed sections: experiment, algorithm, task"),
    ("benchmarl.model.num_cells", "allowed sections: experiment, algorithm, task"),
    ("env", "config key 'env' is a section; set one of its keys, e.g. env.num_ues"),
    ("algorithm", "config key 'algorithm' is a section"),
])
def test_keys_outside_every_namespace_are_refused_with_where_they_belong(key, fragment):
    with pytest.raises(ConfigError) as info:
        route_key(key)
    assert fragment in str(info.value)


def test_env_and_bare_keys_build_the_same_run_config():
    bare = load_run_config([], ["num_ues=7", "es.sm_range=[800,1200]"])
    dotted = load_run_config([], ["env.num_ues=7", "env.es.sm_range=[800,1200]"])
    assert bare.to_dict() == dotted.to_dict()
    assert bare.env.num_ues == 7 and list(bare.env.es.sm_range) == [800, 1200]


def test_benchmarl_settings_travel_with_the_run_config_and_its_file_layout(tmp_path):
    run = load_run_config([], ["benchmarl.experiment.lr=0.0003", "benchmarl.task.bank_size=64"])
    assert run.benchmarl == {"experiment": {"lr": 0.0003}, "algorithm": {}, "task": {"bank_size": 64}}
    assert run.benchmarl_keys() == ["benchmarl.experiment.lr", "benchmarl.task.bank_size"]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run.to_file_dict()))
    assert load_run_config([path]).benchmarl == run.benchmarl
    assert "benchmarl" not in load_run_config([]).to_dict()  # nothing set, nothing recorded
    path.write_text("benchmarl:\n  model: {num_cells: [8]}\n")
    with pytest.raises(ConfigError, match="benchmarl.model' in config file .*unknown section; allowed: "
                                          "benchmarl.experiment, benchmarl.algorithm, benchmarl.task"):
        load_run_config([path])


def test_a_command_refuses_the_namespaces_it_does_not_take_naming_those_it_does():
    with pytest.raises(ConfigError) as info:
        route_overrides({"num_ues": 4, "algorithm.lr": 0.1}, ("env",), "evaluate.py", "it scores policies")
    text = str(info.value)
    assert text.startswith("evaluate.py: --set algorithm.lr=... sets what is learned and how")
    assert "it scores policies; allowed namespaces here: env.<key> (or the bare key)" in text


# ---------------------------------------------------------------------- each command
def run_main(module, argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = module.main(argv)
    return code, out.getvalue()


def test_train_py_refuses_benchmarl_settings_on_the_rllib_backend(tmp_path):
    from his_cli import train

    code, out = run_main(train, ["--set", "benchmarl.experiment.lr=0.1", "--iterations", "1",
                                 "--output-dir", str(tmp_path / "run")])
    assert code == 2
    assert "benchmarl.experiment.lr: the benchmarl.* settings are BenchMARL's own, for --backend benchmarl" in out
    assert not (tmp_path / "run").exists()


def test_evaluate_py_takes_env_keys_bare_or_dotted_and_nothing_else(tmp_path):
    from his_cli import evaluate

    assert evaluate.env_overrides(["num_ues=4", "env.es.sm_range=[800,1200]"]) == {
        "num_ues": 4, "es.sm_range": [800, 1200]}
    code, out = run_main(evaluate, ["--policy", "random", "--set", "experiment.seed=3", "--output-dir",
                                    str(tmp_path / "eval")])
    assert code == 2 and "evaluate.py: --set experiment.seed=... sets how the run is executed" in out
    assert "allowed namespaces here: env.<key> (or the bare key)" in out
    assert not (tmp_path / "eval").exists()


def benchmark_spec(*sets):
    from his_cli import benchmark

    args = benchmark.build_parser().parse_args([x for s in sets for x in ("--set", s)])
    return benchmark.spec_from_args(args)


def test_benchmark_py_reads_the_same_namespaces():
    pytest.importorskip("benchmarl")
    spec = benchmark_spec("env.num_ues=6", "es.sm_range=[800,1200]", "algorithm.reward_mode=team",
                          "algorithm.hidden=[32,32]", "benchmarl.experiment.lr=0.0003", "benchmarl.task.bank_size=64",
                          "benchmarl.algorithm.entropy_coef=0.01")
    assert spec.task == {"bank_size": 64, "env": {"es.sm_range": [800, 1200]}, "num_ues": 6, "reward_mode": "team"}
    assert spec.experiment == {"lr": 0.0003} and spec.algorithm_settings == {"entropy_coef": 0.01}
    assert spec.hidden == [32, 32]


@pytest.mark.parametrize("setting, fragment", [
    ("experiment.lr=0.001", "benchmark.py: --set experiment.lr=... sets how the run is executed"),
    ("algorithm.lr=0.001", "--set algorithm.lr: benchmark.py runs BenchMARL's algorithms with their own settings"),
    ("task.bank_size=64", "the BenchMARL task's settings are benchmarl.task.<key>"),
    ("benchmarl.task.num_ues=4", "--set benchmarl.task.num_ues: it comes from num_ues (the env's)"),
])
def test_benchmark_py_refuses_keys_it_does_not_take(setting, fragment, tmp_path):
    pytest.importorskip("benchmarl")
    from his_cli import benchmark

    code, out = run_main(benchmark, ["--set", setting, "--output-dir", str(tmp_path / "b"), "--no-progress-bar"])
    assert code == 2 and fragment in out, out
    assert not (tmp_path / "b").exists()


def test_benchmarl_settings_reach_the_benchmarl_run_and_its_resume(tmp_path):
    """`train.py --backend benchmarl --set benchmarl.algorithm.entropy_coef=...`: in the BenchMARL algorithm that
    ran (config.yaml's `benchmarl:`), recorded apart (`benchmarl_overrides`), and applied again on --resume."""
    pytest.importorskip("benchmarl")
    from his_cli import train

    run = tmp_path / "run"
    tiny = ["--set", "num_ues=4", "--set", "num_clusters=2", "--set", "episode_length=10", "--set",
            "algorithm.hidden=[16]", "--set", "algorithm.episodes_per_iteration=4", "--set",
            "experiment.evaluation_episodes=1", "--eval-baselines", "random", "--wandb-mode", "disabled"]
    code, out = run_main(train, ["--backend", "benchmarl", *tiny, "--set", "benchmarl.algorithm.entropy_coef=0.0123",
                                 "--set", "benchmarl.experiment.lr=0.0007", "--iterations", "1",
                                 "--output-dir", str(run)])
    assert code == 0, out[-3000:]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["benchmarl"]["algorithm_settings"]["entropy_coef"] == 0.0123
    assert config["benchmarl"]["experiment"]["lr"] == 0.0007
    assert config["benchmarl_overrides"] == {"algorithm": {"entropy_coef": 0.0123}, "experiment": {"lr": 0.0007}}
    code, out = run_main(train, ["--resume", str(run), "--iterations", "2", "--eval-baselines", "random",
                                 "--wandb-mode", "disabled"])
    assert code == 0, out[-3000:]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["benchmarl"]["algorithm_settings"]["entropy_coef"] == 0.0123
    assert config["benchmarl"]["experiment"]["lr"] == 0.0007
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]


def test_train_py_refuses_benchmarl_keys_that_its_flags_own(tmp_path):
    pytest.importorskip("benchmarl")
    from his_cli import train

    code, out = run_main(train, ["--backend", "benchmarl", "--set", "benchmarl.experiment.max_n_frames=10",
                                 "--iterations", "1", "--output-dir", str(tmp_path / "run")])
    assert code == 2 and "benchmarl.experiment.max_n_frames cannot be set: it comes from the frame or time budget" in out
    code, out = run_main(train, ["--backend", "benchmarl", "--set", "benchmarl.experiment.lrate=0.1",
                                 "--iterations", "1", "--output-dir", str(tmp_path / "run")])
    assert code == 2 and "benchmarl.experiment.lrate (experiment overrides) is not a BenchMARL experiment setting" in out
    assert not (tmp_path / "run").exists()


def test_bench_train_sends_benchmarl_settings_to_the_benchmarl_side_only():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--set",
                           "benchmarl.experiment.lr=0.1", "--time-limit", "1"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode != 0
    assert "benchmarl.experiment.lr: BenchMARL's own settings are for --backend benchmarl or both" in proc.stderr
