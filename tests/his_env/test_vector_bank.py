"""The decision-point bank: cached by what the contexts depend on, and faithful to the env's distribution."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")
from scipy.stats import ks_2samp  # noqa: E402

import his_env  # noqa: E402
from his_env.config import HISConfig  # noqa: E402
from his_env.vector import DecisionBank, HISVecEnv, decision_context  # noqa: E402
from his_env.vector.bank import bank_key  # noqa: E402

torch.set_num_threads(1)
SMALL = {"num_ues": 8, "num_clusters": 2, "episode_length": 10}


def test_bank_is_cached_and_keyed_by_what_it_depends_on(tmp_path, monkeypatch):
    monkeypatch.setattr("his_env.vector.bank.cache_root", lambda: tmp_path)
    cfg = HISConfig.from_dict(SMALL)
    env = his_env.parallel_env(cfg)
    built = DecisionBank.build(cfg, size=12, seed=3, env=env)
    assert built.build_seconds > 0 and len(built) == 12
    again = DecisionBank.build(cfg, size=12, seed=3, env=env)
    assert again.build_seconds == 0.0 and len(list(tmp_path.glob("vec_bank/*.npz"))) == 1  # from disk
    for field in ("prompt_index", "cluster", "num_clusters", "similarity"):
        np.testing.assert_array_equal(getattr(again, field), getattr(built, field))
    # the bank's first context is the env's first decision point after reset(seed)
    env.reset(seed=3)
    first = decision_context(env)
    np.testing.assert_array_equal(built.cluster[0], first["cluster"])
    np.testing.assert_array_equal(built.prompt_index[0], first["prompt_index"])
    np.testing.assert_allclose(built.similarity[0], first["similarity"])
    texts = list(env.pool.texts)
    key = bank_key(cfg, texts, 12, 3)
    assert key == built.key
    assert bank_key(cfg.with_overrides({"num_ues": 9}), texts, 12, 3) != key
    assert bank_key(cfg.with_overrides({"scheme.name": "ppgfis"}), texts, 12, 3) != key
    assert bank_key(cfg, texts[:-1], 12, 3) != key
    assert bank_key(cfg, texts, 13, 3) != key
    # what the bank does not hold leaves the key alone
    assert bank_key(cfg.with_overrides({"scheme.allocation": "user_equal", "ecdiff.enabled": True,
                                        "reward.delay_weight": 0.3}), texts, 12, 3) == key
    with pytest.raises(ValueError, match="bank_size=0"):
        DecisionBank.build(cfg, size=0, env=env)


def _pettingzoo_utilities(policy, steps, seed):
    """U and the mean phi of `steps` fresh decision points of the PettingZoo env."""
    env = his_env.parallel_env(**SMALL)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    utility, phi = [], []
    for _ in range(steps):
        actions = policy(rng, env.num_ues)
        _, _, _, _, infos = env.step({a: actions[n] for n, a in enumerate(env.possible_agents)})
        utility.append(infos["ue_0"]["network_utility"])
        phi.append(np.mean([infos[a]["similarity"] for a in env.possible_agents]))
        if not env.agents:
            env.reset()
    return np.array(utility), np.array(phi)


def _vector_utilities(policy, steps, seed, bank_size):
    """U and the mean phi of 64 x `steps` decision points of HISVecEnv."""
    env = HISVecEnv(num_envs=64, seed=seed, reward_mode="individual", bank_size=bank_size, **SMALL)
    rng = np.random.default_rng(seed)
    td = env.reset()
    utility, phi = [], []
    for _ in range(steps):
        phi.append(td["agents", "observation"][..., 0].double().mean(-1).numpy().copy())
        td["agents", "action"] = torch.as_tensor(np.stack([policy(rng, env.num_ues) for _ in range(64)]))
        td = env.step(td)
        utility.append(td["next", "info", "utility"].numpy().copy())
        td = td["next"]
    return np.concatenate(utility), np.concatenate(phi)


@pytest.mark.parametrize("name,policy", [
    ("random", lambda rng, n: rng.integers(0, [17, 12], size=(n, 2))),
    ("fixed", lambda rng, n: np.tile([10, 3], (n, 1))),
])
def test_bank_keeps_the_distribution_of_utility(name, policy):
    """U and phi from bank contexts (D = 1024) against fresh PettingZoo decision points: equal means
    within three standard errors, and a two-sample KS test that does not tell them apart."""
    reference = _pettingzoo_utilities(policy, 800, seed=11)
    vector = _vector_utilities(policy, 13, seed=12, bank_size=1024)
    for ours, theirs in zip(vector, reference):
        standard_error = np.sqrt(theirs.var() / len(theirs) + ours.var() / len(ours))
        assert abs(theirs.mean() - ours.mean()) < 3 * standard_error, (name, theirs.mean(), ours.mean())
        assert ks_2samp(theirs, ours).pvalue > 0.01


def test_too_small_a_bank_is_detected():
    """The check above has the power to see a bank of 4 contexts (phi of 4 points is not phi)."""
    policy = lambda rng, n: np.tile([10, 3], (n, 1))  # noqa: E731
    _, reference_phi = _pettingzoo_utilities(policy, 800, seed=11)
    _, phi = _vector_utilities(policy, 13, seed=12, bank_size=4)
    assert ks_2samp(reference_phi, phi).pvalue < 1e-6
