"""A small trained run shared by the training tests (trained in process through the library)."""
import pytest

SMALL_ENV = {"num_ues": 4, "num_clusters": 2, "episode_length": 10}
SMALL_ALGORITHM = {"hidden": [16], "episodes_per_iteration": 4}
SMALL_EXPERIMENT = {"evaluation_episodes": 1}


def small_run_config(algorithm=None, experiment=None, env=None):
    from agents.config import RunConfig

    return RunConfig.from_dict({"env": {**SMALL_ENV, **(env or {})},
                                "algorithm": {**SMALL_ALGORITHM, **(algorithm or {})},
                                "experiment": {**SMALL_EXPERIMENT, **(experiment or {})}})


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """3 iterations, a checkpoint after each (keep 10), offline W&B in the run folder."""
    from agents.training import StopRules, TrainingRequest, run_training

    run = tmp_path_factory.mktemp("training") / "run"
    result = run_training(TrainingRequest(
        run_config=small_run_config(), output_dir=run, stop=StopRules(iterations=3), checkpoint_every=1, keep_checkpoints=10,
        eval_baselines=["random"], wandb_mode="offline"), log=lambda line: None)
    assert result.exit_code == 0
    return run
