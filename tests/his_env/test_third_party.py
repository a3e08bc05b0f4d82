"""The env, unchanged, under the MARL libraries users bring: TorchRL's PettingZooWrapper (with
its own spec check), SuperSuit's vector env training Stable-Baselines3's PPO, and RLlib's
ParallelPettingZooEnv. Each runs a small env (N = 4, a few decision points per episode) and
skips with the reason where its library is not installed."""
import numpy as np
import pytest

import his_env
from his_env.environment import INFO_KEYS

SMALL = dict(num_ues=4, num_clusters=2, max_cycles=3)
# A member's prompt as each cluster's public prompt: training draws many fresh decision points,
# and this way none of them brings a new text to embed.
FAST = dict(SMALL, scheme__public_prompt="random_member")


def test_torchrl_pettingzoo_wrapper_passes_check_env_specs():
    pytest.importorskip("torchrl", reason="TorchRL is not installed")
    import torch
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper
    from torchrl.envs.utils import check_env_specs

    env = PettingZooWrapper(env=his_env.parallel_env(**SMALL), seed=0, return_state=True)
    check_env_specs(env, seed=0)
    rollout = env.rollout(5, break_when_any_done=False)  # runs across the end of a 3-step episode
    info = rollout["next", "ue", "info"]
    assert set(info.keys()) == set(INFO_KEYS)
    # the UEs' rewards add up to the network utility U reported in every UE's info (Eq. 23)
    rewards = rollout["next", "ue", "reward"][..., 0]
    torch.testing.assert_close(rewards.sum(-1), info["network_utility"][:, 0].to(rewards.dtype), rtol=1e-5, atol=1e-4)
    assert rollout["next", "truncated"][:, 0].tolist() == [False, False, True, False, False]
    torch.testing.assert_close(rollout["state"], rollout["ue", "observation"].reshape(5, -1))


def test_supersuit_vec_env_trains_stable_baselines3_ppo():
    supersuit = pytest.importorskip("supersuit", reason="SuperSuit is not installed")
    pytest.importorskip("stable_baselines3", reason="Stable-Baselines3 is not installed")
    from stable_baselines3 import PPO

    vec = supersuit.pettingzoo_env_to_vec_env_v1(his_env.parallel_env(**FAST))
    vec = supersuit.concat_vec_envs_v1(vec, 1, num_cpus=0, base_class="stable_baselines3")
    assert vec.num_envs == 4 and vec.action_space.nvec.tolist() == [17, 12]  # one slot per UE; MultiDiscrete as is
    vec.reset()
    vec.action_space.seed(0)
    _, rewards, _, infos = vec.step(np.stack([vec.action_space.sample() for _ in range(4)]))
    assert rewards.sum() == pytest.approx(infos[0]["network_utility"], rel=1e-5)  # Eq. (23)
    # no seed= here: SB3 would call seed() on SuperSuit's ConcatVecEnv, which has none
    model = PPO("MlpPolicy", vec, n_steps=48, batch_size=64, n_epochs=1, device="cpu", policy_kwargs={"net_arch": [16]})
    model.learn(total_timesteps=384)
    assert model.num_timesteps == 384
    actions, _ = model.predict(vec.reset(), deterministic=True)
    assert actions.shape == (4, 2) and all(vec.action_space.contains(a) for a in actions)


def test_rllib_parallel_pettingzoo_env_steps_and_renders():
    pytest.importorskip("ray.rllib", reason="RLlib (ray[rllib]) is not installed")
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    env = ParallelPettingZooEnv(his_env.parallel_env(**SMALL, render_mode="ansi"))
    observations, infos = env.reset(seed=0)
    assert set(observations) == set(infos) == {"ue_0", "ue_1", "ue_2", "ue_3"}
    assert all(list(info) == list(INFO_KEYS) for info in infos.values())
    for t in range(3):
        actions = {agent: env.action_space[agent].sample() for agent in observations}
        observations, rewards, terminateds, truncateds, infos = env.step(actions)
        assert all(env.observation_space[a].contains(o) for a, o in observations.items())
        assert sum(rewards.values()) == pytest.approx(infos["ue_0"]["network_utility"], rel=1e-12)
        assert truncateds["__all__"] is (t == 2) and terminateds["__all__"] is False
    assert "cluster 0" in env.render()


@pytest.mark.slow
def test_rllib_ppo_trains_one_iteration_on_parallel_pettingzoo_env():
    pytest.importorskip("ray.rllib", reason="RLlib (ray[rllib]) is not installed")
    import ray
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.tune.registry import register_env

    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        register_env("his_pettingzoo_small", lambda _: ParallelPettingZooEnv(his_env.parallel_env(**FAST)))
        config = (PPOConfig().environment("his_pettingzoo_small")
                  .env_runners(num_env_runners=0, rollout_fragment_length=12)
                  .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, *args, **kwargs: "shared")
                  .rl_module(model_config={"fcnet_hiddens": [8]})
                  .training(train_batch_size_per_learner=24, minibatch_size=24, num_epochs=1)
                  .debugging(seed=0))
        algo = config.build_algo()
        try:
            result = algo.train()
            assert result["env_runners"]["num_env_steps_sampled"] == 24
        finally:
            algo.stop()
    finally:
        ray.shutdown()
