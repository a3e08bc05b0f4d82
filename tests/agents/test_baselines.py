"""Baselines: the search reference is checked by brute force over single-UE deviations and, for
two UEs, over every joint action; the fixed and random policies by their definitions."""
import re

import numpy as np
import pytest

from agents.baselines import (FixedSplitPolicy, RandomPolicy, SearchPolicy, StepRanges, action_grid,
                              make_baseline)


def make_env(**cfg):
    from his_env import HISConfig

    from agents.env_access import make_parallel_env

    return make_parallel_env(HISConfig.from_dict(cfg).to_dict())


def test_action_grid_enumerates_multidiscrete():
    import gymnasium as gym

    grid = action_grid(gym.spaces.MultiDiscrete([3, 2]))
    assert grid.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]]


def test_make_baseline_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown baseline 'greedy'"):
        make_baseline("greedy")
    with pytest.raises(ValueError, match="fixed:X,Y"):
        make_baseline("fixed:a")
    assert isinstance(make_baseline("fixed:8,3"), FixedSplitPolicy)


@pytest.mark.parametrize("spec, needle", [
    ("fixed:99,99", "common steps X=99 is out of range; allowed: common steps X in 0..16, "
                    "ES personalised steps Y in 0..11"),
    ("fixed:16,12", "ES personalised steps Y=12 is out of range"),
    ("fixed:-1,3", "common steps X=-1 is out of range"),
    ("search:-1", "SWEEPS=-1 is out of range; allowed: 'search' or 'search:SWEEPS' with SWEEPS an integer >= 0"),
    ("search:abc", "SWEEPS an integer >= 0"),
    ("random:3", "takes no argument"),
    ("open-loop:0", "EPISODES=0 is out of range"),
    ("open-loop:x", "'open-loop:EPISODES' with EPISODES an integer >= 1"),
    ("queue-aware:1.5", "F=1.5 is out of range; allowed: 'queue-aware' or 'queue-aware:F'"),
    ("backlog-search:-1", "ALPHA=-1.0 is out of range; allowed: 'backlog-search' or 'backlog-search:ALPHA'"),
    ("backlog-search:nan", "ALPHA=nan is out of range"),
    ("backlog-search:x", "'backlog-search:ALPHA' with ALPHA a number >= 0"),
])
def test_make_baseline_rejects_arguments_out_of_range(spec, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        make_baseline(spec)


def test_make_baseline_checks_fixed_against_the_envs_step_ranges():
    steps = StepRanges.from_env_config({"steps": {"max_common": 10, "min_es_personal": 2, "max_es_personal": 5}})
    assert steps == StepRanges(10, 2, 5)
    policy = make_baseline("fixed:10,2", steps=steps)
    assert (policy.common_steps, policy.es_personal_steps, policy.es_personal_min) == (10, 2, 2)
    with pytest.raises(ValueError, match=re.escape("X in 0..10, ES personalised steps Y in 2..5")):
        make_baseline("fixed:11,3", steps=steps)
    with pytest.raises(ValueError, match="Y=1 is out of range"):
        make_baseline("fixed:4,1", steps=steps)
    assert make_baseline("search:0").max_sweeps == 0 and make_baseline("search").max_sweeps == 4


class _Space:
    nvec = np.array([17, 12])


class _Env:
    possible_agents = agents = ["ue_0"]

    def action_space(self, agent):
        return _Space()


def test_fixed_split_is_never_clamped():
    """A split outside the action space is an error naming the ranges, not the nearest action."""
    assert FixedSplitPolicy(16, 11).act({"ue_0": None}, _Env())["ue_0"].tolist() == [16, 11]
    with pytest.raises(ValueError, match=re.escape("(x=99, y=99) is outside the env's actions: common steps x in "
                                                   "0..16, ES personalised steps y in 0..11")):
        FixedSplitPolicy(99, 99).act({"ue_0": None}, _Env())


@pytest.mark.slow
def test_search_is_coordinatewise_optimal_and_beats_uniform():
    env = make_env(num_ues=4, num_clusters=2, episode_length=3)
    obs, _ = env.reset(seed=5)
    policy = SearchPolicy(max_sweeps=10)
    policy.reset(env, 5)
    actions = policy.act(obs, env)
    agents = list(env.agents)
    joint = np.stack([actions[a] for a in agents])
    base = env.unwrapped
    u_star = float(base.evaluate_joint_actions(joint[None])["utility"][0])
    grid = action_grid(env.action_space(agents[0]))
    # Independent brute force: no single UE can improve U by changing its own action.
    for n in range(len(agents)):
        cand = np.repeat(joint[None], len(grid), axis=0)
        cand[:, n] = grid
        assert np.max(base.evaluate_joint_actions(cand)["utility"]) <= u_star + 1e-9 * max(1.0, abs(u_star))
    # At least as good as every "all UEs take the same action" joint action.
    uniform = np.broadcast_to(grid[:, None, :], (len(grid), len(agents), 2)).copy()
    assert u_star >= np.max(base.evaluate_joint_actions(uniform)["utility"]) - 1e-9
    # evaluate_joint_actions agrees with stepping the env.
    _, rewards, _, _, infos = env.step(actions)
    assert sum(rewards.values()) == pytest.approx(u_star, rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_search_finds_the_joint_optimum_of_two_ues():
    env = make_env(num_ues=2, num_clusters=1, episode_length=2)
    obs, _ = env.reset(seed=11)
    agents = list(env.agents)
    grid = action_grid(env.action_space(agents[0]))
    pairs = np.stack(np.meshgrid(np.arange(len(grid)), np.arange(len(grid)), indexing="ij"), -1).reshape(-1, 2)
    everything = np.stack([grid[pairs[:, 0]], grid[pairs[:, 1]]], axis=1)  # (|A|^2, 2, 2)
    best = float(np.max(env.unwrapped.evaluate_joint_actions(everything)["utility"]))
    policy = SearchPolicy(max_sweeps=10)
    actions = policy.act(obs, env)
    joint = np.stack([actions[a] for a in agents])[None]
    got = float(env.unwrapped.evaluate_joint_actions(joint)["utility"][0])
    assert got == pytest.approx(best, rel=1e-3, abs=1e-6)


@pytest.mark.slow
def test_fixed_and_random_policies_follow_their_definitions():
    env = make_env(num_ues=3, num_clusters=1, episode_length=2)
    obs, _ = env.reset(seed=0)
    fixed = FixedSplitPolicy(common_steps=0, es_personal_steps=None).act(obs, env)
    nvec = env.action_space(env.agents[0]).nvec
    for a in env.agents:
        assert fixed[a].tolist() == [0, (nvec[1] - 1) // 2]
    rand = RandomPolicy(seed=1)
    draws = np.stack([np.stack(list(rand.act(obs, env).values())) for _ in range(200)]).reshape(-1, 2)
    assert draws.min(0).tolist() == [0, 0]
    assert (draws.max(0) == nvec - 1).all()


def test_es_only_and_ue_only_take_the_extreme_splits_of_the_envs_step_ranges():
    steps = StepRanges.from_env_config({"steps": {"max_common": 10, "min_es_personal": 2, "max_es_personal": 5}})
    env = make_env(num_ues=2, num_clusters=1, episode_length=1,
                   steps={"total": 20, "max_common": 10, "min_es_personal": 2, "max_es_personal": 5})
    obs, _ = env.reset(seed=0)
    es_only = make_baseline("es-only", steps=steps).act(obs, env)
    ue_only = make_baseline("ue-only", steps=steps).act(obs, env)
    assert {a: v.tolist() for a, v in es_only.items()} == {"ue_0": [10, 3], "ue_1": [10, 3]}  # indices
    assert {a: v.tolist() for a, v in ue_only.items()} == {"ue_0": [0, 0], "ue_1": [0, 0]}
    infos = env.step(es_only)[4]  # x = 10 common, y = 5 ES-personalised, the UE the remaining 20 - 15 = 5
    assert [infos["ue_0"][k] for k in ("common_steps", "es_personal_steps", "ue_steps")] == [10, 5, 5]
    env.reset(seed=0)
    infos = env.step(ue_only)[4]  # x = 0, y = y_min = 2, the UE 18
    assert [infos["ue_1"][k] for k in ("common_steps", "es_personal_steps", "ue_steps")] == [0, 2, 18]
    with pytest.raises(ValueError, match="'es-only' takes no argument"):
        make_baseline("es-only:3")


SEQUENTIAL_SMALL = {"num_ues": 4, "num_clusters": 2, "episode_length": 6, "steps": {"total": 24},
                    "dynamics": {"requests": {"enabled": True, "rate_per_slot": 0.5}, "work": {"enabled": True}}}


def test_open_loop_sees_only_the_slot_index_and_fits_slot_zero_by_stepping():
    from his_env.environment import HISParallelEnv
    from his_env.config import HISConfig

    policy = make_baseline("open-loop:2")
    env = make_env(**SEQUENTIAL_SMALL)
    taken = []
    for seed in (1, 2):  # two evaluation episodes: the same actions, slot by slot, for every UE
        observations, _ = env.reset(seed=seed)
        policy.reset(env, seed)
        episode = []
        while env.agents:
            actions = policy.act(observations, env)
            assert len({tuple(a) for a in actions.values()}) == 1
            episode.append(tuple(actions["ue_0"]))
            observations, *_ = env.step(actions)
        taken.append(episode)
    assert taken[0] == taken[1] and len(taken[0]) == SEQUENTIAL_SMALL["episode_length"]
    # slot 0 by hand: every shared action stepped on fresh calibration episodes, the best mean U
    config = HISConfig.from_dict(SEQUENTIAL_SMALL)
    grid = action_grid(env.action_space("ue_0"))
    mean_u = []
    for action in grid:
        totals = []
        for k in range(2):
            fresh = HISParallelEnv(config)
            fresh.reset(seed=policy.CALIBRATION_SEED + k)
            _, rewards, *_ = fresh.step({agent: action for agent in fresh.possible_agents})
            totals.append(sum(rewards.values()))
        mean_u.append(np.mean(totals))
    assert tuple(grid[int(np.argmax(mean_u))]) == taken[0][0]  # here the myopic schedule scores higher


TINY = {"num_ues": 4, "num_clusters": 2, "episode_length": 6, "steps": {"total": 24}}


@pytest.mark.parametrize("overrides, decisions", [
    # an ES of 2-3 SMs takes seconds a step (an UE step ~0.05 s): every step on the UE, x = y = 0
    ({"es": {"sm_range": [2, 3]}}, (0, 0, 24)),
    # a UE of one SM takes ~3 s a step: the ES takes all it can, x + y = 24 - z_min = 23 with y at y_max = 11
    ({"ue": {"sm_range": [1, 1]}}, (12, 11, 1)),
])
def test_best_constant_action_on_networks_where_it_is_known(overrides, decisions):
    from agents.baselines import best_constant_action
    from his_env.config import HISConfig

    config = HISConfig.from_dict({**TINY, **overrides})
    action = best_constant_action(config, episodes=2, seed=0)
    common, personal, ue = make_env(**TINY, **overrides).unwrapped.decode_actions(action[None])
    assert (int(common[0]), int(personal[0]), int(ue[0])) == decisions


def test_open_loop_keeps_the_schedule_that_scores_higher_on_validation_episodes():
    """On seq-small-heavy the myopic schedule (rebuilt here slot by slot) congests the ES and the
    best constant action beats it on the validation episodes (each U summed here by stepping the
    env): the policy keeps the constant one."""
    import his_env
    from agents.baselines import OpenLoopPolicy, best_constant_action
    from his_env.environment import HISParallelEnv

    config = his_env.parallel_env(scenario="seq-small-heavy").unwrapped.config
    policy = OpenLoopPolicy(calibration_episodes=2)
    schedule = policy.fit(config)

    envs = [HISParallelEnv(config) for _ in range(2)]
    for k, env in enumerate(envs):
        env.reset(seed=policy.CALIBRATION_SEED + k)
    grid = action_grid(envs[0].action_space(envs[0].possible_agents[0]))
    uniform = np.broadcast_to(grid[:, None, :], (len(grid), config.num_ues, 2))
    myopic = []
    while envs[0].agents:
        best = grid[int(np.argmax(np.mean([env.evaluate_joint_actions(uniform)["utility"] for env in envs], 0)))]
        myopic.append(best)
        for env in envs:
            env.step({agent: best for agent in env.possible_agents})
    constant = [best_constant_action(config, 2, policy.CALIBRATION_SEED)] * config.episode_length

    def validation_utility(actions):
        env, total = HISParallelEnv(config), 0.0
        for k in range(2):
            env.reset(seed=policy.VALIDATION_SEED + k)
            for action in actions:
                total += sum(env.step({agent: action for agent in env.possible_agents})[1].values())
        return total / (2 * config.episode_length)

    assert validation_utility(constant) > validation_utility(myopic) + 0.2
    np.testing.assert_array_equal(schedule, np.stack(constant))


def test_queue_aware_offloads_a_backlog_while_the_es_has_room():
    from his_env.dynamics.slot import OBSERVATION_FEATURES

    env = make_env(**SEQUENTIAL_SMALL)
    env.reset(seed=0)
    policy = make_baseline("queue-aware:0.5")
    policy.reset(env, 0)
    nvec = env.action_space("ue_0").nvec
    feature = {name: 3 + i for i, name in enumerate(OBSERVATION_FEATURES)}

    def observation(queue, slack, busy):
        obs = np.zeros(3 + len(OBSERVATION_FEATURES), dtype=np.float32)
        obs[feature["queue_fraction"]], obs[feature["head_slack_fraction"]] = queue, slack
        obs[feature["es_busy_fraction"]] = busy
        return obs

    actions = policy.act({"ue_0": observation(0.5, 1.0, 0.2), "ue_1": observation(0.25, 1.0, 0.2),
                          "ue_2": observation(0.0, 0.4, 0.2), "ue_3": observation(0.75, 1.0, 0.6)}, env)
    es_all, middle = [nvec[0] - 1, nvec[1] - 1], [0, (nvec[1] - 1) // 2]
    assert [actions[a].tolist() for a in ("ue_0", "ue_1", "ue_2", "ue_3")] == [es_all, middle, es_all, middle]
    paper = make_env(num_ues=4, num_clusters=2)
    paper.reset(seed=0)
    with pytest.raises(ValueError, match="'dynamics.requests.enabled' is false"):
        make_baseline("queue-aware").reset(paper, 0)


def _busy_sequential_env(seed: int = 3):
    """SEQUENTIAL_SMALL stepped until some active UE has requests waiting behind the one it starts."""
    env = make_env(**{**SEQUENTIAL_SMALL, "episode_length": 40})
    env.reset(seed=seed)
    middle = np.array([0, 5])
    for _ in range(39):
        context = env.unwrapped.decision_context()
        if np.any(context["active"] & (context["queue_length"] > 0)):
            return env, context
        env.step({agent: middle for agent in env.agents})
    raise AssertionError("no active UE with a backlog in 39 slots")


@pytest.mark.slow
def test_backlog_search_charges_each_active_ues_delay_to_the_requests_behind_it():
    env, context = _busy_sequential_env()
    base = env.unwrapped
    grid = action_grid(env.action_space("ue_0"))
    rng = np.random.default_rng(0)
    joint = grid[rng.integers(len(grid), size=(5, base.num_ues))]
    scored = base.evaluate_joint_actions(joint)
    # ue_delay is the T_n that stepping reports
    for k in range(2):
        fresh = make_env(**{**SEQUENTIAL_SMALL, "episode_length": 40})
        fresh.reset(seed=3)
        while fresh.unwrapped._step_count < base._step_count:
            fresh.step({agent: np.array([0, 5]) for agent in fresh.agents})
        _, _, _, _, infos = fresh.step(dict(zip(fresh.agents, joint[k])))
        assert [infos[a]["delay"] for a in fresh.possible_agents] == pytest.approx(scored["ue_delay"][k].tolist())
    # the objective, by hand: U - ALPHA w_T sum over active UEs of q_n T_n
    alpha, w_t = 2.5, base.config.reward.delay_weight
    expected = [scored["utility"][k] - alpha * w_t * sum(
        context["queue_length"][n] * scored["ue_delay"][k][n] for n in range(base.num_ues) if context["active"][n])
        for k in range(len(joint))]
    policy = SearchPolicy(backlog_weight=alpha)
    policy.reset(env, 0)
    assert policy._searcher_for(base)._utilities(joint) == pytest.approx(expected, rel=1e-12)
    assert any(context["active"][n] and context["queue_length"][n] > 0 and scored["ue_delay"][0][n] > 0
               for n in range(base.num_ues))  # the charge is not zero here


@pytest.mark.slow
def test_backlog_search_is_coordinatewise_optimal_for_its_objective_and_zero_weight_is_the_search():
    env, context = _busy_sequential_env()
    base = env.unwrapped
    obs = {agent: None for agent in env.agents}
    policy = make_baseline("backlog-search:3")
    assert policy.name == "backlog-search" and policy.backlog_weight == 3.0
    policy.reset(env, 0)
    actions = policy.act(obs, env)
    joint = np.stack([actions[a] for a in env.agents])
    grid = action_grid(env.action_space("ue_0"))
    charge = np.where(context["active"], context["queue_length"], 0) * 3.0 * base.config.reward.delay_weight

    def objective(batch):
        scored = base.evaluate_joint_actions(batch)
        return scored["utility"] - scored["ue_delay"] @ charge

    best = float(objective(joint[None])[0])
    for n in range(base.num_ues):
        cand = np.repeat(joint[None], len(grid), axis=0)
        cand[:, n] = grid
        assert np.max(objective(cand)) <= best + 1e-9 * max(1.0, abs(best))
    myopic, zero = SearchPolicy(seed=4), make_baseline("backlog-search:0", seed=4)
    assert zero.name == "search"
    for p in (myopic, zero):
        p.reset(env, 0)
    a, b = myopic.act(obs, env), zero.act(obs, env)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_backlog_search_needs_the_request_queues_and_the_numpy_search():
    paper = make_env(num_ues=4, num_clusters=2)
    paper.reset(seed=0)
    with pytest.raises(ValueError, match="'backlog-search' weighs the request queues"):
        make_baseline("backlog-search").reset(paper, 0)
    assert make_baseline("backlog-search", search_device="cpu").device is None
    assert make_baseline("search", search_device="cpu").device == "cpu"
