"""HISVecEnv against the PettingZoo env: the same decision point and actions give the same numbers."""
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import his_env  # noqa: E402
from his_env.allocation import ALLOCATION_RULES  # noqa: E402
from his_env.vector import DecisionBank, HISVecEnv, decision_context  # noqa: E402

torch.set_num_threads(1)
SMALL = {"num_ues": 10, "num_clusters": 3, "episode_length": 4, "steps.total": 24}  # total 24: projections occur
SEEDS = (0, 1, 2)


def pettingzoo_points(overrides, seeds=SEEDS, action_seed=0):
    """Context, observation, actions and step outputs of the PettingZoo env at `seeds`."""
    env = his_env.parallel_env(**{k.replace(".", "__"): v for k, v in overrides.items()})
    rng = np.random.default_rng(action_seed)
    points = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        context = decision_context(env)
        actions = rng.integers(0, env.action_space("ue_0").nvec, size=(env.num_ues, 2))
        counterfactual = np.repeat(actions[None], env.num_ues + 1, axis=0)
        counterfactual[np.arange(1, env.num_ues + 1), np.arange(env.num_ues)] = 0
        utilities = env.evaluate_joint_actions(counterfactual)["utility"]
        _, rewards, _, _, infos = env.step({a: actions[n] for n, a in enumerate(env.possible_agents)})
        points.append({"context": context, "obs": np.stack([obs[a] for a in env.possible_agents]),
                       "actions": actions, "rewards": np.array([rewards[a] for a in env.possible_agents]),
                       "infos": infos, "network": {k: infos["ue_0"][f"network_{k}"] for k in ("utility", "quality", "delay", "energy")},
                       "difference": utilities[0] - utilities[1:]})
    return env, points


def stacked_contexts(points):
    keys = points[0]["context"].keys()
    return {k: np.stack([np.asarray(p["context"][k]) for p in points]) for k in keys}


def bank_of(points):
    c = stacked_contexts(points)
    return DecisionBank(c["prompt_index"], c["cluster"], c["num_clusters"], c["similarity"])


@pytest.mark.parametrize("ecdiff", [False, True])
@pytest.mark.parametrize("allocation", ["kkt", "user_equal", "cluster_equal"])
@pytest.mark.parametrize("scheme", ["his", "ppgfis", "cfis", "iis"])
def test_step_equals_pettingzoo(scheme, allocation, ecdiff):
    overrides = {**SMALL, "scheme.name": scheme, "scheme.allocation": allocation, "ecdiff.enabled": ecdiff}
    penv, points = pettingzoo_points(overrides)
    vec = HISVecEnv(num_envs=len(points), reward_mode="individual", bank=bank_of(points),
                    **{k.replace(".", "__"): v for k, v in overrides.items()})
    first = vec.load_decision_context(stacked_contexts(points))
    np.testing.assert_allclose(first["agents", "observation"].numpy(), np.stack([p["obs"] for p in points]),
                               rtol=1e-6, atol=1e-7)
    td = first.clone()
    td["agents", "action"] = torch.as_tensor(np.stack([p["actions"] for p in points]))
    out = vec.step(td)["next"]
    info = out["agents", "info"]
    for b, p in enumerate(points):
        agents = penv.possible_agents
        np.testing.assert_allclose(info["individual_reward"][b].numpy(), p["rewards"], rtol=1e-6)
        np.testing.assert_allclose(out["agents", "reward"][b, :, 0].numpy(), p["rewards"], rtol=1e-6)
        for key in ("quality", "delay", "ue_energy", "es_energy_share"):
            np.testing.assert_allclose(info[key][b].numpy(), [p["infos"][a][key] for a in agents], rtol=1e-6)
        for key in ("utility", "quality", "delay", "energy"):
            assert out["info", key][b].item() == pytest.approx(p["network"][key], rel=1e-6)


@pytest.mark.parametrize("ecdiff", [False, True])
@pytest.mark.parametrize("scheme", ["his", "iis"])
def test_difference_and_team_rewards_equal_pettingzoo(scheme, ecdiff):
    overrides = {**SMALL, "scheme.name": scheme, "ecdiff.enabled": ecdiff}
    _, points = pettingzoo_points(overrides, action_seed=4)
    kwargs = {k.replace(".", "__"): v for k, v in overrides.items()}
    for mode in ("difference", "team"):
        vec = HISVecEnv(num_envs=len(points), reward_mode=mode, bank=bank_of(points), **kwargs)
        td = vec.load_decision_context(stacked_contexts(points))
        td["agents", "action"] = torch.as_tensor(np.stack([p["actions"] for p in points]))
        reward = vec.step(td)["next", "agents", "reward"][..., 0].numpy()
        for b, p in enumerate(points):
            expected = p["difference"] if mode == "difference" else np.full(10, p["network"]["utility"] / 10)
            np.testing.assert_allclose(reward[b], expected, rtol=1e-5, atol=1e-5)  # float32 rewards


def test_action_encodings_decode_to_the_same_steps():
    overrides = dict(SMALL)
    _, points = pettingzoo_points(overrides, seeds=(0,))
    kwargs = {k.replace(".", "__"): v for k, v in overrides.items()}
    actions = torch.as_tensor(points[0]["actions"])[None]
    nx, ny = 17, 12
    results = []
    for mode, encoded in (("multi_categorical", actions),
                          ("categorical", actions[..., 0] * ny + actions[..., 1]),
                          ("continuous", (actions.double() / torch.tensor([nx - 1, ny - 1])).float())):
        vec = HISVecEnv(num_envs=1, reward_mode="individual", action_mode=mode, bank=bank_of(points), **kwargs)
        td = vec.load_decision_context(stacked_contexts(points))
        td["agents", "action"] = encoded
        results.append(vec.step(td)["next", "agents", "info", "individual_reward"])
    torch.testing.assert_close(results[1], results[0])
    torch.testing.assert_close(results[2], results[0])
    np.testing.assert_allclose(results[0][0].numpy(), points[0]["rewards"], rtol=1e-6)


def test_specs_seeding_and_truncation():
    from torchrl.envs.utils import check_env_specs

    bank_env, points = pettingzoo_points(SMALL, seeds=(0, 1, 2, 3))
    kwargs = {k.replace(".", "__"): v for k, v in SMALL.items()}
    for mode in ("multi_categorical", "categorical", "continuous"):
        check_env_specs(HISVecEnv(num_envs=3, action_mode=mode, bank=bank_of(points), **kwargs))
    a = HISVecEnv(num_envs=5, seed=7, bank=bank_of(points), **kwargs)
    b = HISVecEnv(num_envs=5, seed=7, bank=bank_of(points), **kwargs)
    ra, rb = a.rollout(6, break_when_any_done=False), b.rollout(6, break_when_any_done=False)
    # random actions come from the specs' own generator: compare the env's side only
    torch.testing.assert_close(ra["agents", "observation"], rb["agents", "observation"])
    truncated = ra["next", "truncated"][:, :, 0]
    assert truncated[:, 3].all() and not truncated[:, :3].any()  # episode_length 4
    assert ra["next", "agents", "truncated"].shape == (5, 6, 10, 1)


def test_bad_arguments_are_refused_early():
    with pytest.raises(ValueError, match="reward_mode='teams'.*individual, team, difference"):
        HISVecEnv(reward_mode="teams")
    with pytest.raises(ValueError, match="action_mode='box'"):
        HISVecEnv(action_mode="box")
    with pytest.raises(ValueError, match="num_envs=0"):
        HISVecEnv(num_envs=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' is not available"):
            HISVecEnv(device="cuda")
    with pytest.raises(ValueError, match="oracle.kind"):
        HISVecEnv(oracle__kind="live")


@pytest.mark.parametrize("allocation", ["kkt", "user_equal", "cluster_equal"])
def test_points_with_fewer_clusters_than_the_batch_axis(allocation):
    """A batch mixes decision points of 3 and 2 clusters: the absent third cluster gets no SMs and
    changes nothing (against the numpy formulas on the 2-cluster point alone)."""
    from his_env import system_model
    from his_env.config import HISConfig
    from quality_oracle import build_oracle
    from quality_oracle.base import QualityRequest
    from quality_oracle.ecdiff import ECDiffSchedule

    overrides = {**SMALL, "scheme.allocation": allocation, "ecdiff.enabled": True}
    _, points = pettingzoo_points(overrides, seeds=(5, 6))
    two = points[1]["context"]
    two["cluster"] = np.minimum(two["cluster"], 1)
    two["num_clusters"] = 2
    kwargs = {k.replace(".", "__"): v for k, v in overrides.items()}
    vec = HISVecEnv(num_envs=2, reward_mode="individual", bank=bank_of(points), **kwargs)
    assert vec.core.max_clusters == 3
    td = vec.load_decision_context(stacked_contexts(points))
    actions = np.stack([p["actions"] for p in points])
    td["agents", "action"] = torch.as_tensor(actions)
    out = vec.step(td)["next"]

    cfg = HISConfig.from_dict({}).with_overrides(overrides)
    point = system_model.DecisionPoint(two["cluster"], 2, two["es_sm_budget"], two["ue_sms"], two["downlink_rate_bps"])
    x, y, z, _ = system_model.apply_action_rules(actions[1], cfg.steps, True)
    work = system_model.es_work(cfg, point, x, y, True)
    e = cfg.ecdiff
    quality = build_oracle(cfg.oracle, e).evaluate(QualityRequest(
        x, y, z, two["similarity"], two["cluster"], True, work.approximated_steps,
        ecdiff=ECDiffSchedule(e.pre_inference_calls, e.approx_steps, e.smoothing, e.reinit_calls)))
    expected = system_model.evaluate(cfg, point, x, y, z, work, quality, allocation)
    assert int(expected["es_sms"].sum()) == two["es_sm_budget"]
    np.testing.assert_allclose(out["agents", "info", "individual_reward"][1].numpy(), expected["reward"], rtol=1e-9)
    assert out["info", "utility"][1].item() == pytest.approx(float(expected["utility"]), rel=1e-9)
    np.testing.assert_allclose(out["agents", "info", "individual_reward"][0].numpy(), points[0]["rewards"], rtol=1e-6)


def crafted_contexts(rng, num_envs=6, n=10):
    """Decision points with 3 clusters (a unique and a tied max come from the actions), singleton
    clusters, a point where cluster 2 is absent, one with a single cluster, and random ones."""
    cluster = rng.integers(0, 3, (num_envs, n))
    cluster[0] = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    cluster[1] = [1, 1, 0, 1, 1, 2, 1, 1, 1, 1]  # clusters 0 and 2 are singletons
    cluster[2] = [0, 1, 0, 1, 1, 0, 0, 1, 0, 1]
    cluster[3] = 0
    num_clusters = np.array([3, 3, 2, 1] + [3] * (num_envs - 4))
    cluster[4:, :3] = [0, 1, 2]  # every cluster has a member
    return {"prompt_index": np.zeros((num_envs, n), dtype=np.int64), "cluster": cluster, "num_clusters": num_clusters,
            "similarity": rng.uniform(0.2, 0.95, (num_envs, n)), "es_sm_budget": rng.integers(20, 90, num_envs),
            "ue_sms": rng.integers(4, 60, (num_envs, n)), "distance_m": rng.uniform(10, 250, (num_envs, n)),
            "downlink_rate_bps": rng.uniform(2e6, 8e7, (num_envs, n))}


@pytest.mark.parametrize("allocation", sorted(ALLOCATION_RULES.names))
@pytest.mark.parametrize("scheme", ["his", "ppgfis", "cfis", "iis"])
def test_counterfactual_utilities_equal_evaluating_n_plus_one_joint_actions(scheme, allocation):
    """EC-Diff off: the O(N M) difference-reward counterfactuals equal U of the N + 1 joint actions
    through `evaluate` (float64), with unique and tied cluster maxima, singleton and absent clusters,
    projected actions and a default that is not (0, 0)."""
    from his_env import system_model

    rng = np.random.default_rng(11)
    context = crafted_contexts(rng)
    overrides = {**SMALL, "scheme.name": scheme, "scheme.allocation": allocation, "ecdiff.enabled": False}
    vec = HISVecEnv(num_envs=6, bank=DecisionBank(context["prompt_index"], context["cluster"], context["num_clusters"],
                                                  context["similarity"]),
                    **{k.replace(".", "__"): v for k, v in overrides.items()})
    assert vec.core.max_clusters == 3 and vec.core.dtype == torch.float64
    vec.load_decision_context(context)
    ctx, steps = vec.core.contexts_from(context), vec.config.steps
    nx, ny = vec.core.action_nvec
    seen = {"unique max": False, "tied max": False, "projected": False}
    for draw in range(12):
        high = (nx, ny) if draw % 3 == 0 else (4, ny)  # few common-step values: ties are frequent
        actions = torch.as_tensor(rng.integers(0, high, (6, 10, 2)))
        if draw == 0:
            actions[0, :4, 0] = torch.tensor([16, 3, 5, 2])  # cluster 0 of point 0: UE 0 its unique max
            actions[0, 4:7, 0] = torch.tensor([7, 7, 2])  # cluster 1: a tied max
            actions[0, 0, 1] = 11  # 16 + 11 > 24 - 1: projected
        for default in ((0, 0), (3, 2)):
            fast_actual, fast = vec.core.evaluate_with_counterfactuals(ctx, actions, default)
            actual, reference = vec.core.counterfactuals_by_candidates(ctx, actions, default)
            torch.testing.assert_close(fast, reference, rtol=1e-9, atol=0.0)
            for key, value in actual.items():
                torch.testing.assert_close(fast_actual[key], value, rtol=1e-12, atol=0.0)
        # each UE's counterfactual at its own budget (the dynamics' held SMs returned): both paths agree
        absent = replace(ctx, absent_budget=ctx.es_sm_budget[:, None] + torch.as_tensor(rng.integers(0, 300, (6, 10))))
        _, fast = vec.core.evaluate_with_counterfactuals(absent, actions, (0, 0))
        _, reference = vec.core.counterfactuals_by_candidates(absent, actions, (0, 0))
        torch.testing.assert_close(fast, reference, rtol=1e-9, atol=0.0)
        assert not torch.allclose(fast, vec.core.evaluate_with_counterfactuals(ctx, actions, (0, 0))[1])
        x, _, _, projected = system_model.apply_action_rules(actions, steps, vec.core.scheme.common_phase)
        seen["projected"] |= bool(projected.any())
        for b in range(6):
            for m in range(int(context["num_clusters"][b])):
                members = x[b][torch.as_tensor(context["cluster"][b]) == m]
                if len(members) > 1:
                    at_max = int((members == members.max()).sum())
                    seen["unique max"] |= at_max == 1 and int(members.max()) > 0
                    seen["tied max"] |= at_max > 1 and int(members.max()) > 0
    if vec.core.scheme.common_phase:  # IIS: x = 0, so no maximum and no projection to speak of
        assert seen == {"unique max": True, "tied max": True, "projected": True}


@pytest.mark.parametrize("action_mode", ["multi_categorical", "categorical", "continuous"])
def test_random_actions_cover_the_action_spec(action_mode):
    """`rand_action` (what `rollout` without a policy draws): in the spec, of its dtype and shape, and every
    value of a discrete component drawn (3,200 draws over 17 or 12 values)."""
    env = HISVecEnv(num_envs=64, action_mode=action_mode, bank_size=64)
    spec = env.full_action_spec["agents", "action"]
    td = env.rand_action(env.reset())
    action = td["agents", "action"]
    assert action.shape == spec.shape and action.dtype == spec.dtype and spec.is_in(action)
    if action_mode == "multi_categorical":
        assert sorted(action[..., 0].unique().tolist()) == list(range(17))
        assert sorted(action[..., 1].unique().tolist()) == list(range(12))
    assert env.rand_action()["agents", "action"].shape == spec.shape  # no tensordict: a new one
    env.step(td)  # accepted
