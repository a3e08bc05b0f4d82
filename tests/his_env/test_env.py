"""The environment as a PettingZoo citizen, and the rules it applies to actions."""
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

import his_env

SMALL = dict(num_ues=6, num_clusters=2, episode_length=4)


@pytest.fixture(scope="module")
def env():
    return his_env.parallel_env()


@pytest.fixture(scope="module")
def small():
    return his_env.parallel_env(**SMALL)


def test_pettingzoo_parallel_api_default(env):
    parallel_api_test(env, num_cycles=25)


def test_pettingzoo_parallel_api_small(small):
    parallel_api_test(small, num_cycles=10)


@pytest.mark.parametrize("overrides", [{}, SMALL, {**SMALL, "scheme__name": "cfis"}])
def test_pettingzoo_seed_test(overrides):
    parallel_seed_test(lambda: his_env.parallel_env(**overrides))


def test_aec_conversion_runs():
    aec = his_env.env(**SMALL)
    aec.reset(seed=1)
    for agent in aec.agent_iter(max_iter=3 * SMALL["num_ues"]):
        _, _, termination, truncation, _ = aec.last()
        aec.step(None if termination or truncation else aec.action_space(agent).sample())


def test_same_seed_same_episode(small):
    other = his_env.parallel_env(**SMALL)
    rng = np.random.default_rng(0)
    obs_a, _ = small.reset(seed=42)
    obs_b, _ = other.reset(seed=42)
    for _ in range(SMALL["episode_length"]):
        actions = {a: rng.integers(0, small.action_space(a).nvec) for a in small.agents}
        step_a, step_b = small.step(actions), other.step(actions)
        for part_a, part_b in zip(step_a[:4], step_b[:4]):
            assert part_a.keys() == part_b.keys()
            for key in part_a:
                np.testing.assert_array_equal(part_a[key], part_b[key])


def test_spaces_and_observation_ranges(env):
    obs, infos = env.reset(seed=3)
    assert env.agents == [f"ue_{n}" for n in range(50)]
    assert env.action_space("ue_0").nvec.tolist() == [17, 12]
    o = np.stack(list(obs.values()))
    assert o.shape == (50, 3) and o.dtype == np.float32
    raw = np.array([infos[a]["raw_observation"] for a in env.agents])
    assert np.all((raw[:, 1] >= 1026) & (raw[:, 1] <= 1674)) and np.all((raw[:, 2] >= 64) & (raw[:, 2] <= 84))
    np.testing.assert_allclose(o[:, 1], (raw[:, 1] - 1026) / 648, rtol=1e-6)
    np.testing.assert_allclose(o[:, 2], (raw[:, 2] - 64) / 20, rtol=1e-6)
    assert np.all(o[:, 1:] >= 0) and np.all(o[:, 1:] <= 1)


def test_rewards_sum_to_network_utility_and_infos(env):
    env.reset(seed=5)
    actions = {a: env.action_space(a).sample() for a in env.agents}
    _, rewards, terms, truncs, infos = env.step(actions)
    network = infos["ue_0"]["network"]
    assert sum(rewards.values()) == pytest.approx(network["utility"], rel=1e-9)
    assert sum(i["quality"] for i in infos.values()) == pytest.approx(network["quality"])
    assert sum(i["delay"] for i in infos.values()) == pytest.approx(network["delay"])
    w = env.config.reward
    assert network["utility"] == pytest.approx(w.quality_weight * network["quality"] - w.delay_weight * network["delay"]
                                               - w.energy_weight * network["energy"])
    for agent, info in infos.items():
        assert info["common_steps"] + info["es_personal_steps"] + info["ue_steps"] == 28
        assert info["network"] is network
    assert sum(network["cluster_es_sms"]) == network["es_sm_budget"]
    assert not any(terms.values()) and not any(truncs.values())


def test_episode_ends_by_truncation(small):
    small.reset(seed=0)
    for t in range(SMALL["episode_length"]):
        obs, _, terms, truncs, _ = small.step({a: np.array([1, 1]) for a in small.agents})
        assert all(v == (t == SMALL["episode_length"] - 1) for v in truncs.values())
        assert not any(terms.values())
        assert len(obs) == SMALL["num_ues"]  # the final observation is returned for bootstrapping
    assert small.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        small.step({})


@pytest.mark.parametrize("bad, message", [
    ({"ue_0": [1, 1]}, "missing agents"),
    ("not a dict", "must be a dict"),
])
def test_malformed_action_dicts(small, bad, message):
    small.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        small.step(bad)


@pytest.mark.parametrize("value, message", [
    ([1, 2, 3], "shape"),
    ([17, 0], r"a\[0\] \(common steps\) in 0\.\.16"),
    ([-1, 0], "allowed"),
    ([0, 12], r"0\.\.11"),
    ([1.5, 2.0], "allowed: integers"),
])
def test_malformed_actions_name_the_agent(value, message):
    env = his_env.parallel_env(num_ues=3, num_clusters=2)
    env.reset(seed=0)
    actions = {a: [0, 0] for a in env.agents}
    actions["ue_1"] = value
    with pytest.raises(ValueError, match=message) as err:
        env.step(actions)
    assert "ue_1" in str(err.value)
    extra = {**{a: [0, 0] for a in env.agents}, "ue_9": [0, 0]}
    with pytest.raises(ValueError, match=r"unknown agents \['ue_9'\]"):
        env.step(extra)


def test_projection_keeps_ue_steps_above_minimum():
    env = his_env.parallel_env(num_ues=2, num_clusters=1, steps={"total": 20, "max_common": 12,
                                                                  "max_es_personal": 10, "min_ue": 2})
    env.reset(seed=0)
    _, _, _, _, infos = env.step({"ue_0": [12, 10], "ue_1": [3, 4]})
    # 12 + 10 leaves z = -2 < 2: y drops by 4 to 6
    assert (infos["ue_0"]["common_steps"], infos["ue_0"]["es_personal_steps"], infos["ue_0"]["ue_steps"]) == (12, 6, 2)
    assert infos["ue_0"]["projected"] and not infos["ue_1"]["projected"]
    x, y, z = env.decode_actions(np.array([[[12, 10], [3, 4]]]))
    assert (x.tolist(), y.tolist(), z.tolist()) == ([[12, 3]], [[6, 4]], [[2, 13]])


def test_projection_lowers_common_steps_when_y_is_at_minimum():
    env = his_env.parallel_env(num_ues=1, num_clusters=1, steps={"total": 20, "max_common": 15,
                                                                  "min_es_personal": 2, "max_es_personal": 6,
                                                                  "min_ue": 5})
    env.reset(seed=0)
    x, y, z = env.decode_actions(np.array([[[15, 0]]]))  # y = y_min = 2, so x gives way: 13 + 2 + 5
    assert (int(x[0, 0]), int(y[0, 0]), int(z[0, 0])) == (13, 2, 5)


def test_iis_forces_no_common_phase():
    env = his_env.parallel_env(num_ues=4, num_clusters=2, scheme__name="iis")
    env.reset(seed=0)
    _, _, _, _, infos = env.step({a: [9, 3] for a in env.agents})
    assert all(i["common_steps"] == 0 and i["ue_steps"] == 25 for i in infos.values())


def test_cfis_has_one_cluster_and_member_prompt_as_public():
    env = his_env.parallel_env(num_ues=8, scheme__name="cfis")
    env.reset(seed=2)
    prompts = env.current_prompts()
    assert set(prompts["cluster"]) == {0}
    assert prompts["public"][0] in prompts["personal"]
    phi = env._phi  # the member whose prompt is public has similarity 1 with it
    assert phi.max() == pytest.approx(1.0, abs=1e-5)


def test_evaluate_joint_actions_matches_step():
    env = his_env.parallel_env(num_ues=5, num_clusters=2, ecdiff__enabled=True)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    candidates = rng.integers(0, [17, 12], size=(4, 5, 2))
    planned = env.evaluate_joint_actions(candidates)
    assert planned["utility"].shape == (4,)
    _, rewards, _, _, infos = env.step({a: candidates[2, n] for n, a in enumerate(env.possible_agents)})
    assert planned["utility"][2] == pytest.approx(infos["ue_0"]["network"]["utility"])
    np.testing.assert_allclose(planned["rewards"][2], [rewards[a] for a in env.possible_agents])


def test_schemes_and_allocations_build(small):
    for name in ("his", "ppgfis", "cfis", "iis"):
        for rule in ("kkt", "user_equal", "cluster_equal"):
            env = his_env.parallel_env(**SMALL, scheme={"name": name, "allocation": rule})
            env.reset(seed=0)
            _, rewards, _, _, infos = env.step({a: [4, 2] for a in env.agents})
            assert np.isfinite(list(rewards.values())).all()


def test_render_ansi():
    env = his_env.parallel_env(**SMALL, render_mode="ansi")
    env.reset(seed=0)
    env.step({a: [4, 2] for a in env.agents})
    text = env.render()
    assert "cluster 0" in text and "U=" in text


def test_state_is_all_observations(small):
    obs, _ = small.reset(seed=0)
    np.testing.assert_array_equal(small.state(), np.concatenate([obs[a] for a in small.agents]))
    assert small.state_space.contains(small.state())
