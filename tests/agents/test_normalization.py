"""Running reward normalisation against hand and numpy computations of a known reward stream."""
import numpy as np
import pytest

from agents.rllib.normalization import RewardNormalizer, RunningMeanStd


def test_running_mean_std_by_hand():
    s = RunningMeanStd()
    s.update([1.0, 2.0, 3.0])  # mean 2, population var 2/3
    assert s.count == 3
    assert s.mean == pytest.approx(2.0)
    assert s.var == pytest.approx(2.0 / 3.0)
    s.update([4.0])  # stream 1..4: mean 2.5, var ((1.5^2 + 0.5^2) * 2) / 4 = 1.25
    assert s.count == 4
    assert s.mean == pytest.approx(2.5)
    assert s.var == pytest.approx(1.25)
    assert s.std == pytest.approx(np.sqrt(1.25))


def test_running_mean_std_matches_numpy_over_uneven_chunks():
    rng = np.random.default_rng(3)
    stream = rng.normal(loc=-40.0, scale=7.0, size=1000)  # large offset: catches naive sum-of-squares
    s = RunningMeanStd()
    for a, b in [(0, 1), (1, 2), (2, 50), (50, 51), (51, 500), (500, 1000)]:
        s.update(stream[a:b])
        assert s.count == b
        assert s.mean == pytest.approx(np.mean(stream[:b]), rel=1e-12, abs=1e-12)
        assert s.var == pytest.approx(np.var(stream[:b]), rel=1e-10, abs=1e-12)
    # A first batch of one sample has variance 0, not a prior: the statistics are the stream's own.
    one = RunningMeanStd()
    one.update([5.0])
    assert (one.mean, one.m2) == (5.0, 0.0)


def test_merge_is_order_independent():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=37), rng.normal(3.0, 2.0, size=11)
    s1, s2 = RunningMeanStd(), RunningMeanStd()
    s1.update(a)
    s1.update(b)
    s2.update(b)
    s2.update(a)
    assert s1.mean == pytest.approx(s2.mean)
    assert s1.var == pytest.approx(s2.var)
    assert s1.var == pytest.approx(np.var(np.concatenate([a, b])))


def _episode(agent_id, rewards):
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    n = len(rewards)
    return SingleAgentEpisode(observations=[np.zeros(3, np.float32)] * (n + 1), actions=[np.zeros(2, np.int64)] * n,
                              rewards=list(rewards), agent_id=agent_id, module_id=agent_id, len_lookback_buffer=0)


def test_reward_normalizer_connector_per_agent_running_stats():
    norm = RewardNormalizer(eps=0.0)
    a1, b1 = [1.0, 2.0, 3.0], [10.0, 10.0, 40.0]
    eps1 = [_episode("ue_0", a1), _episode("ue_1", b1)]
    norm(rl_module=None, batch={}, episodes=eps1)
    # First update: each agent's own batch moments.
    np.testing.assert_allclose(eps1[0].get_rewards(), (np.array(a1) - 2.0) / np.sqrt(2.0 / 3.0), rtol=1e-6)
    np.testing.assert_allclose(eps1[1].get_rewards(), (np.array(b1) - 20.0) / np.sqrt(200.0), rtol=1e-6)
    # Second update: statistics over everything seen so far, per agent.
    a2 = [4.0, 6.0]
    eps2 = [_episode("ue_0", a2)]
    norm(rl_module=None, batch={}, episodes=eps2)
    stream = np.array(a1 + a2)
    np.testing.assert_allclose(eps2[0].get_rewards(), (np.array(a2) - stream.mean()) / stream.std(), rtol=1e-6)
    assert norm.stats["ue_1"].count == 3  # untouched

    # The state round-trips (it is what checkpoints carry).
    restored = RewardNormalizer()
    restored.set_state(norm.get_state())
    assert restored.stats["ue_0"].count == 5
    assert restored.stats["ue_0"].mean == pytest.approx(stream.mean())
    assert restored.stats["ue_0"].var == pytest.approx(stream.var())
