"""Mistakes that used to surface after Ray had started (30-90-line tracebacks) are refused by
`run_training` with a message before the run folder exists or Ray starts; so are run records
that disagree with the weights of their checkpoint."""
import json
import os
import shutil

import pytest

from agents.checkpoints import CheckpointError
from agents.config import ConfigError
from agents.training import PreflightError, StopRules, TrainingRequest, WandbSetupError, run_training
from agents.training import ray_session
from tests.agents.conftest import small_run_config


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started although a check should have refused the run")

    monkeypatch.setattr(ray_session, "init_ray", refuse)


def request(tmp_path, env_over=None, experiment=None, **kwargs):
    run = small_run_config(experiment=experiment).with_overrides(env_over or {})
    kwargs.setdefault("wandb_mode", "disabled")
    return TrainingRequest(run_config=run, output_dir=tmp_path / "run", stop=StopRules(iterations=1), **kwargs)


@pytest.mark.parametrize("env_over, needle", [
    ({"workload.pool_size": 3}, "pool_size"),
    ({"workload.subjects": ["unicorn"]}, "unicorn"),
    ({"oracle.hiqm_csv": "/x"}, "'/x'"),
    ({"semantics.model": "/x"}, "'/x'"),
])
def test_env_that_cannot_be_built_is_refused_before_anything_starts(tmp_path, env_over, needle):
    try:
        req = request(tmp_path, env_over)
    except ConfigError as exc:  # refused by the config itself: fine, and earlier still
        assert needle in str(exc)
        return
    with pytest.raises(PreflightError, match="environment cannot be built") as exc:
        run_training(req, log=lambda line: None)
    assert needle in str(exc.value)
    assert not (tmp_path / "run").exists()


def test_bad_env_factory_is_refused(tmp_path):
    with pytest.raises(PreflightError, match="'experiment.env_factory' has value 'foo:bar': cannot import module 'foo'"):
        run_training(request(tmp_path, experiment={"env_factory": "foo:bar"}), log=lambda line: None)
    with pytest.raises(PreflightError, match="no callable 'nope'"):
        run_training(request(tmp_path, experiment={"env_factory": "his_env:nope"}), log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_bad_baseline_argument_is_refused(tmp_path):
    with pytest.raises(PreflightError, match="--eval-baselines: policy 'search:abc'"):
        run_training(request(tmp_path, eval_baselines=["random", "search:abc"]), log=lambda line: None)
    assert not (tmp_path / "run").exists()
    # one that parses but cannot act on the run's env (no request queues without dynamics)
    with pytest.raises(PreflightError, match="--eval-baselines: policy 'backlog-search' weighs the request queues"):
        run_training(request(tmp_path, eval_baselines=["random", "backlog-search"]), log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_online_wandb_without_credentials_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(WandbSetupError, match="wandb login"):
        run_training(request(tmp_path, wandb_mode="online"), log=lambda line: None)
    assert not (tmp_path / "run").exists()
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "a" * 40 + "\n")
    os.chmod(tmp_path / "netrc", 0o600)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    from agents.training.wandb_logger import has_credentials

    assert has_credentials()


def test_cache_folder_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "cache-file").write_text("not a folder")
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cache-file"))
    with pytest.raises(PreflightError, match="HIS_MARL_CACHE.* is a file, not a folder"):
        run_training(request(tmp_path), log=lambda line: None)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- run records against weights
@pytest.mark.slow
def test_run_record_that_disagrees_with_the_weights_is_refused(tmp_path, trained_run):
    """num_ues 3 or 12 against N = 4 weights, ppo-shared against ippo weights: refused after
    comparing the modules the checkpoint holds (ids, sizes) with what the record builds."""
    for label, edit, needle in [
        ("fewer", lambda r: r["env_config"].update(num_ues=3), "ue_0, ue_1, ue_2"),
        ("more", lambda r: r["env_config"].update(num_ues=12), "ue_0..ue_11"),
        ("shared", lambda r: (r.update(algo="ppo-shared"), r["algorithm_config"].update(algo="ppo-shared")), "shared"),
        ("mappo", lambda r: (r.update(algo="mappo"), r["algorithm_config"].update(algo="mappo")), "observation size"),
    ]:
        run = tmp_path / label
        shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("wandb"))
        record_file = run / "checkpoints" / "iter_000003" / "his_run.json"
        record = json.loads(record_file.read_text())
        edit(record)
        record_file.write_text(json.dumps(record))
        before = (run / "metrics.jsonl").read_text()
        with pytest.raises(CheckpointError, match="does not match its run record") as exc:
            run_training(TrainingRequest(resume=run, stop=StopRules(iterations=5), wandb_mode="disabled"),
                         log=lambda line: None)
        assert needle in str(exc.value), (label, str(exc.value))
        assert (run / "metrics.jsonl").read_text() == before  # nothing touched


def test_eval_baselines_split_on_commas_except_inside_a_fixed_split():
    from agents.training.preflight import parse_baselines

    assert parse_baselines("random,iis-fixed") == ["random", "iis-fixed"]
    assert parse_baselines("fixed:3,2,search") == ["fixed:3,2", "search"]  # fixed:X,Y keeps its comma
    assert parse_baselines("random, backlog-search:4.5,open-loop") == ["random", "backlog-search:4.5", "open-loop"]
    assert parse_baselines("none") == [] and parse_baselines("") == []
