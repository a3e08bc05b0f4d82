"""A small trained run shared by the training tests (trained in process through the library)."""
import pytest

SMALL_ENV = {"num_ues": 4, "num_clusters": 2, "episode_length": 10}
SMALL_TRAIN = {"hidden": [16], "episodes_per_iteration": 4, "evaluation_episodes": 1}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """3 iterations, a checkpoint after each (keep 10), offline W&B in the run folder."""
    from agents.ippo import TrainConfig
    from agents.training import StopRules, TrainingRequest, run_training
    from his_env.config import HISConfig

    run = tmp_path_factory.mktemp("training") / "run"
    result = run_training(TrainingRequest(
        env_config=HISConfig.from_dict(SMALL_ENV).to_dict(), train_config=TrainConfig.from_dict(SMALL_TRAIN),
        output_dir=run, stop=StopRules(iterations=3), checkpoint_every=1, keep_checkpoints=10,
        eval_baselines=["random"], wandb_mode="offline"), log=lambda line: None)
    assert result.exit_code == 0
    return run
