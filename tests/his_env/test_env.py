"""The environment as a PettingZoo citizen, its infos, and the rules it applies to actions."""
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test, seed_test

import his_env
from his_env.environment import INFO_KEYS, OUTCOME_INFO_KEYS

SMALL = dict(num_ues=6, num_clusters=2, episode_length=4)


@pytest.fixture(scope="module")
def env():
    return his_env.parallel_env()


@pytest.fixture(scope="module")
def small():
    return his_env.parallel_env(**SMALL)


# parallel_api_test sets env.max_cycles (the episode length): it gets envs of its own.
def test_pettingzoo_parallel_api_default():
    parallel_api_test(his_env.parallel_env(), num_cycles=25)


def test_pettingzoo_parallel_api_small():
    parallel_api_test(his_env.parallel_env(**SMALL), num_cycles=10)


@pytest.mark.parametrize("overrides", [{}, SMALL, {**SMALL, "scheme__name": "cfis"}])
def test_pettingzoo_seed_test(overrides):
    parallel_seed_test(lambda: his_env.parallel_env(**overrides))


def test_pettingzoo_aec_seed_test():  # compares the infos of reset too
    seed_test(lambda: his_env.env(**SMALL), num_cycles=10)


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
    raw = np.array([[infos[a][f"raw_obs_{k}"] for k in ("similarity", "es_sm_budget", "ue_sms")] for a in env.agents])
    assert np.all((raw[:, 1] >= 1026) & (raw[:, 1] <= 1674)) and np.all((raw[:, 2] >= 64) & (raw[:, 2] <= 84))
    np.testing.assert_allclose(o[:, 1], (raw[:, 1] - 1026) / 648, rtol=1e-6)
    np.testing.assert_allclose(o[:, 2], (raw[:, 2] - 64) / 20, rtol=1e-6)
    assert np.all(o[:, 1:] >= 0) and np.all(o[:, 1:] <= 1)


def test_rewards_sum_to_network_utility_and_infos(env):
    env.reset(seed=5)
    actions = {a: env.action_space(a).sample() for a in env.agents}
    _, rewards, terms, truncs, infos = env.step(actions)
    network = env.network_summary()
    first = infos["ue_0"]
    assert sum(rewards.values()) == pytest.approx(network["utility"], rel=1e-9)
    assert first["network_utility"] == network["utility"]
    assert sum(i["quality"] for i in infos.values()) == pytest.approx(network["quality"])
    assert sum(i["delay"] for i in infos.values()) == pytest.approx(network["delay"])
    w = env.config.reward
    assert network["utility"] == pytest.approx(w.quality_weight * network["quality"] - w.delay_weight * network["delay"]
                                               - w.energy_weight * network["energy"])
    for agent, info in infos.items():
        assert info["common_steps"] + info["es_personal_steps"] + info["ue_steps"] == 28
        assert all(info[k] == first[k] for k in ("network_utility", "network_quality", "network_delay",
                                                 "network_energy", "num_clusters", "es_sm_budget"))
    assert sum(network["cluster_es_sms"]) == network["es_sm_budget"]
    assert not any(terms.values()) and not any(truncs.values())


def _is_plain_number(value):
    return type(value) in (int, float, bool)


def test_infos_have_the_same_flat_numeric_keys_at_reset_and_step(small):
    _, reset_infos = small.reset(seed=4)
    _, _, _, _, step_infos = small.step({a: [3, 2] for a in small.agents})
    for infos in (reset_infos, step_infos):
        assert list(infos) == small.possible_agents
        for info in infos.values():
            assert list(info) == list(INFO_KEYS)
            assert all(_is_plain_number(v) for v in info.values()), info
    for key in INFO_KEYS:  # one type per key, so that wrappers can preallocate from reset
        assert type(reset_infos["ue_0"][key]) is type(step_infos["ue_0"][key]), key
    # at reset nothing has been executed yet
    assert all(reset_infos["ue_1"][k] == 0 for k in OUTCOME_INFO_KEYS)
    assert reset_infos["ue_1"]["projected"] is False


def test_step_infos_against_hand_computation(small):
    cfg = small.config
    small.reset(seed=8)
    before = small.decision_context()
    actions = {a: [n % 17, (3 * n) % 12] for n, a in enumerate(small.agents)}
    obs, rewards, _, _, infos = small.step(actions)
    after = small.decision_context()
    summary = small.network_summary()
    agents = small.possible_agents

    # decision-point keys describe the point the step executed; raw_obs_* the returned observation
    for n, agent in enumerate(agents):
        info = infos[agent]
        assert info["cluster"] == before["cluster"][n] and info["similarity"] == before["similarity"][n]
        assert info["ue_sms"] == before["ue_sms"][n] and info["es_sm_budget"] == before["es_sm_budget"]
        assert info["distance_m"] == before["distance_m"][n]
        assert info["downlink_rate_bps"] == before["downlink_rate_bps"][n]
        assert info["raw_obs_similarity"] == pytest.approx(np.clip(after["similarity"][n], -1, 1))
        assert (info["raw_obs_es_sm_budget"], info["raw_obs_ue_sms"]) == (after["es_sm_budget"], after["ue_sms"][n])
        assert obs[agent][2] == pytest.approx((after["ue_sms"][n] - 64) / 20)
        assert info["num_clusters"] == before["num_clusters"] == summary["num_clusters"]

    # Eq. (20) by hand: E_n = p L / r_n + z_n kappa xi F^2 / (D rho) (mu1 + mu2 / v_n)
    ch, ue = cfg.channel, cfg.ue
    bits = 128 * 128 * 16 * 16 / 2.0
    for agent in agents:
        i = infos[agent]
        per_step = ue.kappa * ue.flops_per_step * ue.frequency_hz ** 2 / (ue.flops_per_cycle_per_sm * ue.efficiency)
        expected = ch.transmit_power_w * bits / i["downlink_rate_bps"] + i["ue_steps"] * per_step * (
            ue.mu1 + ue.mu2 / i["ue_sms"])
        assert i["ue_energy"] == pytest.approx(expected, rel=1e-12)
        w = cfg.reward  # Eq. (33): the reward charges E_n plus the ES energy share
        assert rewards[agent] == pytest.approx(w.quality_weight * i["quality"] - w.delay_weight * i["delay"]
                                               - w.energy_weight * (i["ue_energy"] + i["es_energy_share"]),
                                               rel=1e-12, abs=1e-12)
    # the ES shares add up to the ES energy: E (Eq. 22) = sum E_n + sum_m E_m
    total = sum(i["ue_energy"] + i["es_energy_share"] for i in infos.values())
    assert total == pytest.approx(infos["ue_0"]["network_energy"], rel=1e-12)
    assert all(i["es_energy_share"] > 0 for i in infos.values() if i["common_steps"] + i["es_personal_steps"] > 0)

    # the per-cluster summary agrees with the per-UE infos
    clusters = np.array([infos[a]["cluster"] for a in agents])
    common = np.array([infos[a]["common_steps"] for a in agents])
    assert summary["cluster_sizes"] == np.bincount(clusters).tolist()
    assert summary["cluster_max_common_steps"] == [int(common[clusters == m].max()) for m in range(len(
        summary["cluster_sizes"]))]
    assert [infos[a]["es_sms"] for a in agents] == [summary["cluster_es_sms"][c] for c in clusters]


def test_decision_context_is_what_the_oracle_receives():
    env = his_env.parallel_env(**SMALL)
    received = []

    class Recorder:
        needs_prompts = False

        def __init__(self, inner):
            self.inner = inner

        def evaluate(self, request):
            received.append((request.similarity.copy(), request.cluster.copy()))
            return self.inner.evaluate(request)

    env.oracle = Recorder(env.oracle)
    env.reset(seed=6)
    context = env.decision_context()
    expected_types = {"prompt_index": np.int64, "cluster": np.int64, "similarity": np.float64, "ue_sms": np.int64,
                      "distance_m": np.float64, "downlink_rate_bps": np.float64}
    for key, dtype in expected_types.items():
        assert context[key].dtype == dtype and context[key].shape == (SMALL["num_ues"],), key
    assert type(context["num_clusters"]) is int and type(context["es_sm_budget"]) is int
    prompts = env.current_prompts()
    assert [env.pool.texts[i] for i in context["prompt_index"]] == prompts["personal"]
    assert context["cluster"].tolist() == prompts["cluster"]
    phi = context["similarity"].copy()
    context["similarity"][:] = 9.0  # a copy: the env is unaffected
    env.step({a: [2, 2] for a in env.agents})
    similarity, cluster = received[0]
    np.testing.assert_array_equal(similarity, phi)
    np.testing.assert_array_equal(cluster, context["cluster"])
    # phi is Eq. (5): the cosine of the personal prompt's embedding with its cluster's public prompt's
    emb = env.embedder.embed(prompts["personal"] + prompts["public"])
    personal, public = emb[:SMALL["num_ues"]], emb[SMALL["num_ues"]:]
    np.testing.assert_allclose(phi, np.einsum("nd,nd->n", personal, public[context["cluster"]]), atol=1e-5)


@pytest.mark.parametrize("method", ["state", "render", "current_prompts", "decision_context", "network_summary"])
def test_methods_before_reset_say_to_reset(method):
    env = his_env.parallel_env(**SMALL, render_mode="ansi")
    with pytest.raises(RuntimeError, match=r"call reset\(\) first"):
        getattr(env, method)()
    with pytest.raises(RuntimeError, match=r"before reset\(\)"):
        env.step({a: [0, 0] for a in env.possible_agents})


def test_spaces_are_dicts_and_reset_seeds_the_action_spaces():
    env_a, env_b = his_env.parallel_env(**SMALL), his_env.parallel_env(**SMALL)
    assert list(env_a.observation_spaces) == list(env_a.action_spaces) == env_a.possible_agents
    assert all(env_a.action_space(a) is env_a.action_spaces[a] for a in env_a.possible_agents)
    assert all(env_a.observation_space(a) is env_a.observation_spaces[a] for a in env_a.possible_agents)

    def samples(env, seed):
        env.reset(seed=seed)
        return [env.action_space(a).sample().tolist() for a in env.agents for _ in range(3)]

    first = samples(env_a, 7)
    assert samples(env_b, 7) == first
    assert samples(env_a, 7) == first  # the same env, re-seeded
    assert samples(env_a, 8) != first


def test_max_cycles_sets_the_episode_length():
    env = his_env.parallel_env(**SMALL, max_cycles=2)
    assert env.max_cycles == env.config.episode_length == 2
    env.reset(seed=0)
    _, _, _, truncs, _ = env.step({a: [0, 0] for a in env.agents})
    assert not any(truncs.values())
    _, _, _, truncs, _ = env.step({a: [0, 0] for a in env.agents})
    assert all(truncs.values()) and env.agents == []
    env.max_cycles = 3
    assert env.config.episode_length == 3
    for bad in (0, -2, 2.5, True, "3"):
        with pytest.raises(ValueError, match=f"max_cycles={bad!r}; allowed: an integer >= 1"):
            his_env.parallel_env(**SMALL, max_cycles=bad)
        with pytest.raises(ValueError, match="max_cycles"):
            env.max_cycles = bad


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


ALLOWED = r"a\[0\] \(common steps\) in 0\.\.16, a\[1\] \(ES personalised steps - y_min\) in 0\.\.11"


@pytest.mark.parametrize("value, message", [
    ([np.inf, 2], r"ue_2 is \[inf, 2\.0\] with dtype float64; allowed: integers, "),  # promotes the batch to float
    (np.array([np.nan, 1.0]), r"ue_2 is \[nan, 1\.0\] with dtype float64; allowed: integers, "),
    ([[1], 2], r"ue_2 is \[\[1\], 2\] of no regular shape; allowed: shape \(2,\), "),  # ragged
    ([[1, 2], [3, 4]], r"ue_2 is \[\[1, 2\], \[3, 4\]\] of shape \(2, 2\); allowed: shape \(2,\), "),
    ([True, 1], r"ue_2 is \[True, 1\], which holds booleans; allowed: integers \(not booleans\), "),
    (np.array([True, False]), r"ue_2 is array\(\[ True, False\]\), which holds booleans"),
    ((np.bool_(True), 3), r"ue_2 is \(np\.True_, 3\), which holds booleans"),
    (["a", "b"], r"ue_2 is \['a', 'b'\] with dtype <U1; allowed: integers, "),
])
def test_bad_action_is_reported_for_its_own_agent(value, message):
    """Mixed into valid int actions of the other agents, whose values numpy would otherwise
    promote, refuse as a batch, or take as 0/1."""
    env = his_env.parallel_env(num_ues=4, num_clusters=2)
    env.reset(seed=0)
    actions = {a: np.array([n, 1]) for n, a in enumerate(env.agents)}
    actions["ue_2"] = value
    with pytest.raises(ValueError, match=message) as err:
        env.step(actions)
    assert "ue_0" not in str(err.value) and "ue_1" not in str(err.value)
    assert str(err.value).endswith("a[1] (ES personalised steps - y_min) in 0..11")
    actions = {a: [n, 1] for n, a in enumerate(env.agents)}  # the same among plain lists
    actions["ue_2"] = value
    with pytest.raises(ValueError, match=message):
        env.step(actions)


def test_candidate_actions_are_checked_too():
    env = his_env.parallel_env(num_ues=3, num_clusters=2)
    env.reset(seed=0)
    candidates = np.zeros((2, 3, 2), dtype=np.int64)
    candidates[1, 2] = [0, 12]
    with pytest.raises(ValueError, match=r"action of ue_2 in candidate 1 is \[0, 12\]; allowed: " + ALLOWED):
        env.evaluate_joint_actions(candidates)
    with pytest.raises(ValueError, match="allowed: integers"):
        env.evaluate_joint_actions(np.zeros((2, 3, 2), dtype=bool))


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
    assert planned["utility"][2] == pytest.approx(infos["ue_0"]["network_utility"])
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
    assert env.render(None) == env.render("ansi") == text  # the old-style mode argument some wrappers pass
    with pytest.raises(ValueError, match=r"render\(mode='human'\); allowed: None or this env's render_mode 'ansi'"):
        env.render("human")


def test_state_is_all_observations(small):
    obs, _ = small.reset(seed=0)
    np.testing.assert_array_equal(small.state(), np.concatenate([obs[a] for a in small.agents]))
    assert small.state_space.contains(small.state())
