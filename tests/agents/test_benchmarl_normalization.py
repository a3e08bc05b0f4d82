"""agents.benchmarl.normalization: the RLlib learner's switches on BenchMARL, against numpy by hand."""
import pickle

import numpy as np
import pytest

pytest.importorskip("torchrl")
pytest.importorskip("benchmarl")
import torch  # noqa: E402
from tensordict import TensorDict  # noqa: E402

from agents.benchmarl.experiment import BenchmarlSettingsError, RunSpec, build_experiment, validate_spec  # noqa: E402
from agents.benchmarl.normalization import LearnerSwitches  # noqa: E402


def batch_of(rewards: np.ndarray) -> TensorDict:
    """A collected batch as BenchMARL hands it to callbacks: (B, T) frames, rewards (B, T, N, 1)."""
    b, t, n = rewards.shape
    agents = TensorDict({"reward": torch.as_tensor(rewards[..., None], dtype=torch.float32)}, batch_size=(b, t, n))
    return TensorDict({"next": TensorDict({"agents": agents}, batch_size=(b, t))}, batch_size=(b, t))


def test_rewards_are_normalised_per_agent_with_the_running_statistics():
    rng = np.random.default_rng(0)
    first = rng.normal([[-3.0, 10.0, 0.5]], [[1.0, 5.0, 0.1]], size=(4, 5, 3))  # 3 agents of different scales
    second = rng.normal([[-1.0, 20.0, 0.5]], [[2.0, 5.0, 0.3]], size=(2, 5, 3))
    switches = LearnerSwitches(reward_normalization=True)
    batch = batch_of(first)
    switches.on_batch_collected(batch)
    got = batch.get(("next", "agents", "reward"))[..., 0].numpy()
    for n in range(3):  # each agent by its own mean and (population) std of what it has seen
        values = first[..., n]
        np.testing.assert_allclose(got[..., n], (values - values.mean()) / np.sqrt(values.var() + 1e-8), rtol=1e-5)
    batch = batch_of(second)
    switches.on_batch_collected(batch)  # the statistics now cover both batches
    got = batch.get(("next", "agents", "reward"))[..., 0].numpy()
    for n in range(3):
        stream = np.concatenate([first[..., n].ravel(), second[..., n].ravel()])
        np.testing.assert_allclose(got[..., n], (second[..., n] - stream.mean()) / np.sqrt(stream.var() + 1e-8),
                                   rtol=1e-5)
    assert [s.count for s in switches.stats] == [30, 30, 30]


def test_normalised_rewards_are_clipped_and_off_leaves_them_alone():
    rewards = np.array([0.0, 0.0, 0.0, 100.0]).reshape(4, 1, 1)  # one agent, 4 frames: the outlier is +1.73 std
    clipped = batch_of(rewards)
    LearnerSwitches(reward_normalization=True, reward_norm_clip=1.0).on_batch_collected(clipped)
    got = clipped.get(("next", "agents", "reward")).flatten().numpy()
    np.testing.assert_allclose(got, [-1 / np.sqrt(3), -1 / np.sqrt(3), -1 / np.sqrt(3), 1.0], rtol=1e-5)
    untouched = batch_of(rewards)
    LearnerSwitches(reward_normalization=False, advantage_normalization=True).on_batch_collected(untouched)
    assert untouched.get(("next", "agents", "reward")).flatten().tolist() == [0.0, 0.0, 0.0, 100.0]


def test_switches_pickle_with_their_statistics():
    switches = LearnerSwitches(reward_normalization=True, reward_norm_clip=5.0, advantage_normalization=True,
                               value_clip=0.1)
    switches.on_batch_collected(batch_of(np.arange(12.0).reshape(2, 3, 2)))
    switches.experiment = object()  # what BenchMARL attaches; not part of the pickle
    copy = pickle.loads(pickle.dumps(switches))
    assert copy.settings == switches.settings
    assert [s.get_state() for s in copy.stats] == [s.get_state() for s in switches.stats]
    assert not hasattr(copy, "experiment") or copy.experiment is None


def spec(algorithm, **switches):
    return RunSpec(algorithm=algorithm, task={"num_ues": 3, "env": {"episode_length": 2}}, hidden=[8], frame_budget=4,
                   experiment={"on_policy_collected_frames_per_batch": 4, "on_policy_n_envs_per_worker": 2,
                               "off_policy_collected_frames_per_batch": 4, "off_policy_n_envs_per_worker": 2,
                               "on_policy_minibatch_size": 2, "off_policy_train_batch_size": 2, "loggers": [],
                               "evaluation": False},
                   learner_switches=switches)


@pytest.mark.parametrize("shared", [False, True])
def test_ppo_losses_get_advantage_normalisation_and_the_value_clip(tmp_path, shared):
    s = spec("ippo", advantage_normalization=True, value_clip=0.3)
    s.experiment["share_policy_params"] = shared
    s.algorithm_settings = {"share_param_critic": shared}
    validate_spec(s)
    experiment = build_experiment(s, tmp_path)
    try:
        loss = experiment.losses["agents"]
        assert loss.normalize_advantage is True
        assert loss.normalize_advantage_exclude_dims == (() if shared else (-2,))  # per network
        assert float(loss.clip_value) == pytest.approx(0.3)
    finally:
        experiment.close()
    plain = build_experiment(spec("ippo"), tmp_path / "plain")
    try:  # without switches, BenchMARL's own loss
        assert plain.losses["agents"].normalize_advantage is False and plain.losses["agents"].clip_value is None
        assert not any(isinstance(cb, LearnerSwitches) for cb in plain.callbacks)
    finally:
        plain.close()


def test_switches_are_checked_before_anything_is_built():
    with pytest.raises(BenchmarlSettingsError, match="advantage_normalization for qmix.*allowed with ippo, mappo"):
        validate_spec(spec("qmix", advantage_normalization=True))
    with pytest.raises(BenchmarlSettingsError, match="learner switch 'reward_scale'; allowed: reward_normalization"):
        validate_spec(spec("ippo", reward_scale=2.0))
    with pytest.raises(BenchmarlSettingsError, match="value_clip = -1"):
        validate_spec(spec("mappo", value_clip=-1))
    validate_spec(spec("qmix", reward_normalization=True, reward_norm_clip=5))  # any algorithm may normalise rewards


def test_the_experiments_discount_follows_the_task_unless_set(tmp_path):
    # benchmark.py's runs: 0.5 on a task with independent decision points, 0 with dynamics on,
    # and an explicit benchmarl.experiment.gamma wins
    markov = spec("ippo")
    markov.task["env"]["dynamics"] = {"requests": {"enabled": True}}
    cases = [(spec("ippo"), 0.5), (markov, 0.0)]
    explicit = spec("ippo")
    explicit.task["env"]["dynamics"] = {"requests": {"enabled": True}}
    explicit.experiment["gamma"] = 0.9
    cases.append((explicit, 0.9))
    for k, (s, gamma) in enumerate(cases):
        experiment = build_experiment(s, tmp_path / str(k))
        try:
            assert experiment.config.gamma == gamma
        finally:
            experiment.close()
