"""The PettingZoo env and HISVecEnv agree on dynamics-on episodes, step by step.

The PettingZoo env runs B episodes with random actions; HISVecEnv replays them with `mirror` (the
text side of each slot from the PettingZoo episode, the dynamics' draws from the same seeds) and
the same actions. Rewards, observations, global states and the cumulative books (requests,
batteries) must agree to 1e-6, for each process on alone and for all on together."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import his_env  # noqa: E402
from his_env.vector import HISVecEnv  # noqa: E402

torch.set_num_threads(1)
SMALL = {"num_ues": 10, "num_clusters": 3, "episode_length": 12, "steps.total": 24}
SEEDS = (0, 1, 2)
# each process's settings chosen so that it acts within 12 slots: queues fill and drop, batteries
# run short (a request costs ~1-1.5 kJ on the UE here), work outlasts slots at 1 s each
PROCESSES = {
    "channel": {}, "mobility": {"dynamics.mobility.preset": "vehicle"}, "background_load": {},
    "requests": {"dynamics.requests.rate_per_slot": 0.5, "dynamics.requests.deadline_slots": 3,
                 "dynamics.requests.queue_capacity": 2},
    "work": {}, "intent": {},
    "battery": {"dynamics.battery.capacity_j": 3000.0, "dynamics.battery.trickle_charge_w": 0.5},
    # bursty arrivals (a part of requests, which it switches on, with the settings above): short spells, so that
    # both come within 12 slots; bursts of 0.8 requests per slot, calm spells of 0.3
    "bursts": {"dynamics.requests.enabled": True, "dynamics.requests.rate_per_slot": 0.5,
               "dynamics.requests.deadline_slots": 3, "dynamics.requests.queue_capacity": 2,
               "dynamics.requests.bursts.enabled": True, "dynamics.requests.bursts.mean_burst_slots": 2.0,
               "dynamics.requests.bursts.mean_calm_slots": 3.0, "dynamics.requests.bursts.peak_ratio": 1.6},
}

SECTIONS = [name for name in PROCESSES if name != "bursts"]  # every config section on, as the other tests' episodes


def overrides_with(processes, scheme="his"):
    out = {**SMALL, "scheme.name": scheme}
    for name in processes:
        if name != "bursts":
            out[f"dynamics.{name}.enabled"] = True
        out.update(PROCESSES[name])
    return {key.replace(".", "__"): value for key, value in out.items()}


def pettingzoo_episodes(kwargs, seeds=SEEDS, action_seed=5):
    """Per seed: text contexts (T + 1), actions (T), rewards (T), observations and states (T + 1),
    the books at the end, and the infos of every step."""
    env = his_env.parallel_env(**kwargs)
    rng = np.random.default_rng(action_seed)
    agents = env.possible_agents
    episodes = []
    for seed in seeds:
        obs, infos = env.reset(seed=seed)
        record = {"context": [env.decision_context()], "actions": [], "rewards": [], "infos": [infos],
                  "obs": [np.stack([obs[a] for a in agents])], "state": [env.state()]}
        while env.agents:
            actions = rng.integers(0, env.action_space(agents[0]).nvec, size=(env.num_ues, 2))
            obs, rewards, _, _, infos = env.step({a: actions[n] for n, a in enumerate(agents)})
            record["actions"].append(actions)
            record["rewards"].append([rewards[a] for a in agents])
            record["infos"].append(infos)
            record["obs"].append(np.stack([obs[a] for a in agents]))
            record["state"].append(env.state())
            record["context"].append(env.decision_context())
        record["books"] = env.dynamics_books()
        episodes.append(record)
    return env, episodes


def text_side(episodes):
    return {key: np.stack([np.stack([np.asarray(c[key]) for c in e["context"]]) for e in episodes])
            for key in ("cluster", "num_clusters", "similarity")}


def stacked(episodes, key, t):
    return np.stack([np.asarray(e[key][t], dtype=float) for e in episodes])


@pytest.mark.parametrize("processes", [[name] for name in PROCESSES] + [list(PROCESSES)],
                         ids=[*PROCESSES, "all"])
@pytest.mark.parametrize("scheme", ["his", "iis"])
def test_vector_env_replays_pettingzoo_episodes(processes, scheme):
    if scheme == "iis" and len(processes) == 1:
        pytest.skip("IIS is checked with every process on together")
    kwargs = overrides_with(processes, scheme)
    env, episodes = pettingzoo_episodes(kwargs)
    vec = HISVecEnv(num_envs=len(SEEDS), reward_mode="individual", **kwargs)
    td = vec.mirror(text_side(episodes), SEEDS)
    tol = {"rtol": 1e-6, "atol": 1e-6}
    np.testing.assert_allclose(td["agents", "observation"].numpy(), stacked(episodes, "obs", 0), **tol)
    np.testing.assert_allclose(td["state"].numpy(), stacked(episodes, "state", 0), **tol)
    agents = env.possible_agents
    for t in range(SMALL["episode_length"]):
        td["agents", "action"] = torch.as_tensor(stacked(episodes, "actions", t).astype(np.int64))
        out = vec.step(td)["next"]
        np.testing.assert_allclose(out["agents", "reward"][..., 0].numpy(), stacked(episodes, "rewards", t),
                                   err_msg=f"rewards of step {t}", **tol)
        np.testing.assert_allclose(out["agents", "observation"].numpy(), stacked(episodes, "obs", t + 1),
                                   err_msg=f"observations after step {t}", **tol)
        np.testing.assert_allclose(out["state"].numpy(), stacked(episodes, "state", t + 1),
                                   err_msg=f"states after step {t}", **tol)
        info = out["agents", "info"]
        for key in ("active", "queue_length", "requests_dropped", "battery_j", "dynamics_penalty"):
            pz = np.stack([[e["infos"][t + 1][a][key] for a in agents] for e in episodes]).astype(float)
            np.testing.assert_allclose(info[key].numpy(), pz, err_msg=f"{key} of step {t}", **tol)
        td = out.clone()
    books = vec.dynamics_books()
    assert sorted(books) == sorted(episodes[0]["books"])
    for key, value in books.items():
        np.testing.assert_allclose(value.numpy(), np.stack([e["books"][key] for e in episodes]).astype(float),
                                   err_msg=key, **tol)


def test_the_checked_settings_exercise_every_process():
    """The mirror test is not vacuous: with every process on, requests are served and dropped,
    batteries move UE steps to the ES, UEs stay busy across slots and ES SMs are held."""
    _, episodes = pettingzoo_episodes(overrides_with(SECTIONS))
    infos = [step[a] for e in episodes for step in e["infos"][1:] for a in step]
    books = {key: sum(e["books"][key].sum() for e in episodes) for key in episodes[0]["books"]}
    assert books["requests_served"] > 0 and books["requests_dropped_deadline"] > 0
    assert books["battery_drained_j"] > 0
    assert sum(i["battery_moved_steps"] for i in infos) > 0
    assert max(i["busy_slots"] for i in infos) > 1
    assert max(i["es_held_sms"] for i in infos) > 0


def test_the_checked_bursts_visit_both_spells():
    """The mirror test of bursty arrivals is not vacuous: its episodes have calm and burst slots."""
    env = his_env.parallel_env(**overrides_with(["bursts"]))
    spells = []
    for seed in SEEDS:
        env.reset(seed=seed)
        while env.agents:
            env.step({a: env.action_space(a).sample() for a in env.agents})
            spells.append(bool(env._dynamics_state.burst))
    assert 0 < sum(spells) < len(spells)


def test_each_ue_observes_its_last_delay_over_the_deadline():
    """The last-delay feature is T_n of the UE's last request (the `delay` info of the step where it
    was active) over the deadline (3 slots of 1 s here), and 0 before its first request."""
    from his_env.dynamics.slot import OBSERVATION_FEATURES

    _, episodes = pettingzoo_episodes(overrides_with(SECTIONS), seeds=(0,))
    episode = episodes[0]
    agents = list(episode["infos"][0])
    column = 3 + OBSERVATION_FEATURES.index("last_delay_fraction")
    deadline_s = PROCESSES["requests"]["dynamics.requests.deadline_slots"] * 1.0
    last = np.zeros(len(agents))
    checked = 0
    for t in range(1, len(episode["obs"])):
        for n, agent in enumerate(agents):
            if episode["infos"][t][agent]["active"]:
                last[n] = episode["infos"][t][agent]["delay"]
                checked += 1
        np.testing.assert_allclose(episode["obs"][t][:, column], last / deadline_s, rtol=1e-6, err_msg=f"step {t}")
    assert checked > 0 and np.any(last > deadline_s)  # delays were seen, some beyond the deadline


class HeldSms:
    """Each UE's share of the ES SMs its cluster's running phases hold, rebuilt from the step infos
    alone: when UE n starts a request in slot t, its cluster m holds v_m SMs (info `es_sms`) for
    T^C + T^P-E = (x_m^max + sum y) xi / f(v_m) seconds (Eqs. 8, 12; EC-Diff off, a call is a
    step), and UE n's part is its share of those calls: x_m^max x_n / sum x + y_n (the common run
    split by common steps, as Eq. (33) splits its energy)."""

    def __init__(self, config, num_ues):
        from his_env import system_model

        self.config, self.rate = config, lambda sms: system_model.flops_rate(sms, config.es)
        self.sms, self.until = np.zeros(num_ues), np.full(num_ues, -np.inf)

    def at(self, t):
        """The SMs each UE holds at the start of slot t."""
        return np.where(t < self.until - 1e-9, self.sms, 0.0)

    def record(self, t, infos, agents):
        info = [infos[a] for a in agents]
        active = np.array([i["active"] for i in info], dtype=bool)
        cluster = np.array([i["cluster"] for i in info])
        x = np.array([i["common_steps"] for i in info], dtype=float) * active
        y = np.array([i["es_personal_steps"] for i in info], dtype=float) * active
        for n in np.flatnonzero(active):
            members = cluster == cluster[n]
            common_calls, personal_calls = x[members].max(), y[members].sum()
            calls = common_calls * x[n] / x[members].sum() if x[members].sum() > 0 else 0.0
            sms = info[n]["es_sms"]
            seconds = (common_calls + personal_calls) * self.config.es.flops_per_step / self.rate(sms)
            self.sms[n] = sms * (calls + y[n]) / (common_calls + personal_calls)
            self.until[n] = t + seconds / self.config.dynamics.slot_s


def test_the_difference_reward_charges_each_ue_its_queue_and_held_sms():
    """With dynamics on, D_n = U(a) - U(a without UE n) - c_n: U from stepping copies of the
    PettingZoo env, "without UE n" its action at (0, 0) and the ES SMs its running phases hold
    (rebuilt by `HeldSms` from the infos) added to the slot's budget; c_n UE n's own charges (its
    info's `dynamics_penalty`; both U carry the slot's charges, which cancel). The RLlib adapter and
    HISVecEnv (replaying the same episodes) both give it; the charges and the held SMs are not all
    zero, and the held SMs change some rewards, so both terms are exercised."""
    import copy
    from dataclasses import replace

    from agents.rllib.env_adapter import HISMultiAgentEnv
    from his_env.config import HISConfig

    kwargs = overrides_with(SECTIONS)
    env, episodes = pettingzoo_episodes(kwargs, seeds=(0,))
    agents = env.possible_agents
    config = HISConfig().with_overrides(**kwargs)
    adapter = HISMultiAgentEnv({"env": config.to_dict(), "reward_mode": "difference"})
    adapter.reset(seed=0)
    reference = his_env.parallel_env(**kwargs)
    reference.reset(seed=0)
    vec = HISVecEnv(num_envs=1, reward_mode="difference", **kwargs)
    td = vec.mirror(text_side(episodes), (0,))
    held = HeldSms(config, len(agents))
    charged = changed_by_held = 0
    for t in range(SMALL["episode_length"]):
        actions = episodes[0]["actions"][t]
        joint = {a: actions[n] for n, a in enumerate(agents)}

        def utility_after(step_actions, extra_sms=0.0):
            env_copy = copy.deepcopy(reference)
            budget = env_copy._point.es_sm_budget
            env_copy._point = replace(env_copy._point, es_sm_budget=int(np.floor(budget + extra_sms + 0.5)))
            _, rewards, _, _, infos = env_copy.step(step_actions)
            return sum(rewards.values()), infos

        utility, infos = utility_after(joint)
        charges = np.array([infos[a]["dynamics_penalty"] for a in agents])
        holding = held.at(t)
        without = {a: np.zeros(2, dtype=np.int64) for a in agents}
        expected = np.array([utility - utility_after({**joint, a: without[a]}, holding[n])[0]
                             for n, a in enumerate(agents)]) - charges
        action_only = np.array([utility - utility_after({**joint, a: without[a]})[0] for a in agents]) - charges
        charged += int(np.count_nonzero(charges))
        changed_by_held += int(np.count_nonzero(np.abs(expected - action_only) > 1e-9))
        _, adapter_rewards, *_ = adapter.step(joint)
        np.testing.assert_allclose([adapter_rewards[a] for a in agents], expected, rtol=1e-9, atol=1e-9,
                                   err_msg=f"adapter, step {t}")
        td["agents", "action"] = torch.as_tensor(actions[None].astype(np.int64))
        out = vec.step(td)["next"]
        np.testing.assert_allclose(out["agents", "reward"][0, :, 0].numpy(), expected, rtol=1e-6, atol=1e-6,
                                   err_msg=f"HISVecEnv, step {t}")
        td = out.clone()
        _, _, _, _, step_infos = reference.step(joint)
        held.record(t, step_infos, agents)
    assert charged > 0 and changed_by_held > 0


def test_evaluate_joint_actions_takes_a_budget_per_candidate_and_refuses_a_bad_one():
    """Each candidate's own ES budget: a larger budget never lowers U of the same joint action here
    (ES phases only get faster), the decision point's own budget gives the default's U, and a budget
    of the wrong shape, dtype or value is refused naming what is allowed."""
    env = his_env.parallel_env(**overrides_with(SECTIONS))
    env.reset(seed=0)
    env.step({a: np.array([4, 3]) for a in env.agents})  # slot 1: six UEs start requests
    assert env.decision_context()["active"].any()
    joint = np.full((3, env.num_ues, 2), [4, 3])
    budget = env.decision_context()["es_sm_budget"]
    point_budget = int(env.unwrapped._point.es_sm_budget)
    u = env.evaluate_joint_actions(joint, np.array([point_budget, point_budget + 50, point_budget + 500]))["utility"]
    assert u[0] == pytest.approx(env.evaluate_joint_actions(joint[:1])["utility"][0], abs=1e-12)
    assert u[0] <= u[1] <= u[2] and u[2] > u[0] and budget >= 0  # some UE is active: its ES phases speed up
    for bad, needle in ((np.array([10, 10]), r"shape \(2,\)"), (np.array([10.0, 10.0, 10.0]), "dtype float64"),
                        (np.array([10, 0, 10]), "integers >= 1")):
        with pytest.raises(ValueError, match=needle):
            env.evaluate_joint_actions(joint, bad)
