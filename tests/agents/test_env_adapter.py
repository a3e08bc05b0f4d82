"""The RLlib adapter: reward modes against rewards and utilities of independently stepped env
copies, MAPPO's joint observation, and one training iteration of each learner kind."""
import numpy as np
import pytest

from his_env import HISConfig

TINY = {"num_ues": 4, "num_clusters": 2, "episode_length": 3}


def env_config():
    return HISConfig.from_dict(TINY).to_dict()


def adapter(**extra):
    from agents.rllib.env_adapter import HISMultiAgentEnv

    return HISMultiAgentEnv({"env": env_config(), **extra})


def reference_env():
    import his_env

    return his_env.parallel_env(env_config())


def random_joint_actions(seed, agents, space):
    space.seed(seed)
    return {a: space.sample() for a in agents}


@pytest.mark.parametrize("seed", [0, 7])
def test_difference_reward_is_utility_minus_utility_with_the_ue_at_the_default(seed):
    env = adapter(reward_mode="difference")
    env.reset(seed=seed)
    agents = list(env.possible_agents)
    actions = random_joint_actions(seed, agents, env.action_spaces[agents[0]])
    _, rewards, *_ = env.step(actions)

    # Independent: step fresh copies of the env from the same seed, once with the joint action,
    # once per UE with that UE's action replaced by index (0, 0) (x = 0, y = y_min).
    def utility_of(joint):
        ref = reference_env()
        ref.reset(seed=seed)
        _, _, _, _, infos = ref.step(joint)
        return infos[agents[0]]["network_utility"]

    u_full = utility_of(actions)
    for agent in agents:
        counterfactual = dict(actions)
        counterfactual[agent] = np.zeros(2, dtype=np.int64)
        assert rewards[agent] == pytest.approx(u_full - utility_of(counterfactual), rel=1e-9, abs=1e-9)


def test_team_reward_is_the_utility_shared_and_individual_is_eq33():
    seed = 3
    team, individual, ref = adapter(reward_mode="team"), adapter(reward_mode="individual"), reference_env()
    for env in (team, individual, ref):
        env.reset(seed=seed)
    agents = list(ref.possible_agents)
    utilities, ue_energies, first_cluster_sizes = [], [], []
    for step in range(TINY["episode_length"]):
        actions = random_joint_actions(100 + step, agents, ref.action_space(agents[0]))
        _, r_team, *_ = team.step(actions)
        _, r_ind, _, truncs, out_infos = individual.step(actions)
        _, r_ref, _, _, infos = ref.step(actions)
        utility = infos[agents[0]]["network_utility"]
        utilities.append(utility)
        ue_energies.append(np.mean([infos[a]["ue_energy"] for a in agents]))
        first_cluster_sizes.append(sum(infos[a]["cluster"] == 0 for a in agents))
        assert sum(r_ref.values()) == pytest.approx(utility, rel=1e-12)  # Eq. (23) = sum of Eq. (33)
        assert r_ind == r_ref
        assert all(v == pytest.approx(utility / len(agents), rel=1e-12) for v in r_team.values())
    # RLlib sees a time-limit truncation, and the episode's mean network metrics come with it
    from agents.rllib.env_adapter import EPISODE_SUMMARY_KEY

    assert truncs["__all__"] is True
    summary = out_infos[agents[0]][EPISODE_SUMMARY_KEY]
    assert summary["utility"] == pytest.approx(np.mean(utilities), rel=1e-12)
    assert summary["ue_mean/ue_energy"] == pytest.approx(np.mean(ue_energies), rel=1e-12)
    assert summary["cluster_sizes/0"] == pytest.approx(np.mean(first_cluster_sizes), rel=1e-12)
    assert {"quality", "delay", "energy", "intra_cluster_similarity", "public_personal_similarity",
            "ue_mean/es_energy_share", "ue_mean/projected", "cluster_es_sms/0"} <= set(summary)
    assert summary["decision_points"] == TINY["episode_length"]


def test_mappo_observation_is_own_then_all_ues_in_agent_order():
    env, ref = adapter(global_obs=True), reference_env()
    obs, _ = env.reset(seed=5)
    ref_obs, _ = ref.reset(seed=5)
    agents = list(ref.possible_agents)
    joint = np.concatenate([ref_obs[a] for a in agents])
    for agent in agents:
        assert obs[agent].shape == (3 + 3 * len(agents),)
        np.testing.assert_array_equal(obs[agent][:3], ref_obs[agent])
        np.testing.assert_array_equal(obs[agent][3:], joint)
        assert env.observation_spaces[agent].contains(obs[agent])


def test_unknown_reward_mode_is_rejected():
    with pytest.raises(ValueError, match="reward_mode 'selfish'"):
        adapter(reward_mode="selfish")


@pytest.mark.slow
@pytest.mark.parametrize("algo, modules, critic_in", [("ppo-shared", ["shared"], 3), ("mappo", None, 3 + 3 * 4)])
def test_other_learners_build_and_train_one_iteration(algo, modules, critic_in):
    import ray
    import torch

    from agents.config import RunConfig
    from agents.rllib.ippo import build_algo_config

    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        run = RunConfig.from_dict({"env": env_config(),
                                   "algorithm": {"algo": algo, "hidden": [16], "episodes_per_iteration": 2},
                                   "experiment": {"num_envs_per_env_runner": 1, "seed": 0}})
        algo_obj = build_algo_config(run).build_algo()
        module = algo_obj.learner_group._learner.module
        expected = modules or [f"ue_{n}" for n in range(4)]
        assert sorted(module.keys()) == sorted(expected)
        first = module[expected[0]]
        assert first.vf[0].in_features == critic_in and first.pi[0].in_features == 3
        before = {k: v.clone() for k, v in first.state_dict().items()}
        result = algo_obj.train()
        assert result["env_runners"]["num_env_steps_sampled"] == 2 * TINY["episode_length"]
        after = first.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter changed"
        algo_obj.stop()
    finally:
        ray.shutdown()
