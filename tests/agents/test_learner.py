"""The MIRA learner pieces: GAE with the advantage-normalisation switch, bootstrapping at
truncation, the clipped losses of Eqs. (34) and (37), and the RLModule's greedy actions.

Advantages are checked against an independent numpy GAE computed from the batch the Learner
builds (per-episode segments, bootstrapped with V of the final observation at truncation).
"""
import copy

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

TINY = {"num_ues": 3, "num_clusters": 1, "episode_length": 4}


def tiny_env_config():
    from his_env import HISConfig

    return HISConfig.from_dict(TINY).to_dict()


@pytest.fixture(scope="module")
def episodes_and_config():
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    from agents.config import RunConfig
    from agents.rllib.ippo import build_algo_config

    torch.set_num_threads(1)
    env_cfg = tiny_env_config()
    train = RunConfig.from_dict({"env": env_cfg, "algorithm": {"episodes_per_iteration": 2, "hidden": [32, 32]},
                                 "experiment": {"num_envs_per_env_runner": 1, "seed": 1}})
    runner = MultiAgentEnvRunner(config=build_algo_config(train))
    episodes = runner.sample(num_episodes=3, explore=True, random_actions=False)
    runner.stop()
    return episodes, env_cfg, train


def test_time_limit_is_truncation_not_termination(episodes_and_config):
    """The env ends episodes by truncation; RLlib must see truncated (bootstrap with V(s_T)),
    not terminated, for every UE (see agents.rllib.env_adapter.rllib_done_flags)."""
    episodes, _, _ = episodes_and_config
    for episode in episodes:
        assert episode.is_truncated and not episode.is_terminated
        for sa in episode.agent_episodes.values():
            assert sa.is_truncated and not sa.is_terminated


def test_rllib_done_flags():
    from agents.rllib.env_adapter import rllib_done_flags

    terms, truncs = rllib_done_flags({"a": False, "b": False}, {"a": True, "b": True})
    assert truncs == {"__all__": True} and terms == {"a": False, "b": False, "__all__": False}
    terms, truncs = rllib_done_flags({"a": False, "b": False}, {"a": False, "b": False})
    assert not terms["__all__"] and not truncs["__all__"]
    terms, truncs = rllib_done_flags({"a": True, "b": True}, {"a": False, "b": False})
    assert terms["__all__"] and not truncs["__all__"]
    terms, truncs = rllib_done_flags({"a": True, "b": False}, {"a": False, "b": True})  # mixed end
    assert terms == {"a": True, "b": False, "__all__": False} and truncs == {"__all__": True}


def build_learner(env_cfg, train, **switches):
    from agents.rllib.ippo import build_algo_config

    train = train.with_overrides({f"algorithm.{key}": value for key, value in switches.items()})
    torch.manual_seed(123)  # identical initial weights for every learner built here
    config = build_algo_config(train)
    specs = config._rl_module_spec.rl_module_specs
    return config.build_learner(spaces={mid: (s.observation_space, s.action_space) for mid, s in specs.items()})


def learner_batch(learner, episodes):
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=copy.deepcopy(episodes),
                                       shared_data={}, metrics=None)
    return batch


def numpy_gae(values, rewards, mask, gamma, lam):
    """Per segment (real rows followed by one bootstrap row): GAE with V(s_T) bootstrap."""
    adv = np.zeros_like(rewards)
    i, n = 0, len(rewards)
    while i < n:
        j = i
        while mask[j]:
            j += 1  # j: the bootstrap row of this episode
        running = 0.0
        for t in range(j - 1, i - 1, -1):
            delta = rewards[t] + gamma * values[t + 1] - values[t]
            running = delta + gamma * lam * running
            adv[t] = running
        i = j + 1
    return adv


@pytest.mark.parametrize("advantage_normalization", [True, False])
def test_advantages_are_gae_with_truncation_bootstrap(episodes_and_config, advantage_normalization):
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing

    episodes, env_cfg, train = episodes_and_config
    learner = build_learner(env_cfg, train, advantage_normalization=advantage_normalization,
                            reward_normalization=False)
    batch = learner_batch(learner, episodes)
    for mid, mb in batch.items():
        mask = mb[Columns.LOSS_MASK].numpy().astype(bool)
        assert (~mask).sum() == 3  # one bootstrap row per episode
        with torch.no_grad():
            values = learner.module[mid].compute_values({Columns.OBS: mb[Columns.OBS]}).numpy().astype(np.float64)
        rewards = mb[Columns.REWARDS].numpy().astype(np.float64)
        raw = numpy_gae(values, rewards, mask, train.discount, train.algorithm.lambda_)
        got = mb[Postprocessing.ADVANTAGES].numpy()[mask]
        np.testing.assert_allclose(mb[Columns.VF_PREDS].numpy(), values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mb[Postprocessing.VALUE_TARGETS].numpy()[mask], (raw + values)[mask],
                                   rtol=1e-4, atol=1e-5)
        if advantage_normalization:
            expect = (raw[mask] - raw[mask].mean()) / raw[mask].std()
            assert got.mean() == pytest.approx(0.0, abs=1e-5)
            assert got.std() == pytest.approx(1.0, abs=1e-4)
        else:
            expect = raw[mask]
        np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)


def test_advantage_switch_changes_the_loss(episodes_and_config):
    """At the first minibatch the ratio is 1, so the policy term of the loss is -mean(A):
    0 with normalisation, -mean(raw GAE) without; the rest of the loss is identical."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing

    episodes, env_cfg, train = episodes_and_config
    losses, adv_means = {}, {}
    for switch in (True, False):
        learner = build_learner(env_cfg, train, advantage_normalization=switch, reward_normalization=False)
        batch = learner_batch(learner, episodes)
        mid = sorted(batch)[0]
        mb = batch[mid]
        fwd = learner.module[mid].forward_train(mb)
        cfg = learner.config.get_config_for_module(mid)
        losses[switch] = float(learner.compute_loss_for_module(module_id=mid, config=cfg, batch=mb,
                                                               fwd_out=fwd).detach())
        mask = mb[Columns.LOSS_MASK].numpy().astype(bool)
        adv_means[switch] = float(mb[Postprocessing.ADVANTAGES].numpy()[mask].mean())
    assert adv_means[True] == pytest.approx(0.0, abs=1e-5)
    assert abs(adv_means[False]) > 1e-3
    assert losses[True] - losses[False] == pytest.approx(adv_means[False] - adv_means[True], rel=1e-3, abs=1e-5)


def test_value_loss_is_clipped_around_old_values():
    """Eq. (37) on numbers worked by hand: V_old = 0, eps = 0.2, target R = 1.
    V = 0.5: unclipped (0.5-1)^2 = 0.25, clipped (0.2-1)^2 = 0.64 -> max 0.64.
    V = -0.5: unclipped 2.25, clipped (-0.2-1)^2 = 1.44 -> max 2.25."""
    v = torch.tensor([0.5, -0.5])
    old = torch.zeros(2)
    target = torch.ones(2)
    clipped = old + torch.clamp(v - old, -0.2, 0.2)
    loss = torch.max((v - target) ** 2, (clipped - target) ** 2)
    np.testing.assert_allclose(loss.numpy(), [0.64, 2.25], rtol=1e-6)


def test_learner_value_clip_and_policy_clip_switches(episodes_and_config):
    """The learner's loss equals a hand-written Eq. (34)+(35)+(37) on the same batch after a
    perturbation of the weights (so ratios != 1 and values moved beyond the clip)."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing

    episodes, env_cfg, train = episodes_and_config
    for policy_clip, value_clip in ((True, 0.2), (False, None)):
        learner = build_learner(env_cfg, train, policy_clip=policy_clip, value_clip=value_clip)
        batch = learner_batch(learner, episodes)
        mid = sorted(batch)[0]
        mb = batch[mid]
        module = learner.module[mid]
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.05 * torch.randn_like(p))
        fwd = module.forward_train(mb)
        cfg = learner.config.get_config_for_module(mid)
        loss = float(learner.compute_loss_for_module(module_id=mid, config=cfg, batch=mb, fwd_out=fwd).detach())
        with torch.no_grad():
            mask = mb[Columns.LOSS_MASK].bool()
            dist = module.get_train_action_dist_cls().from_logits(fwd[Columns.ACTION_DIST_INPUTS])
            ratio = torch.exp(dist.logp(mb[Columns.ACTIONS]) - mb[Columns.ACTION_LOGP])
            adv = mb[Postprocessing.ADVANTAGES]
            surr = torch.min(adv * ratio, adv * ratio.clamp(0.8, 1.2)) if policy_clip else adv * ratio
            v = module.compute_values(mb)
            r = mb[Postprocessing.VALUE_TARGETS]
            vf = (v - r) ** 2
            if value_clip is not None:
                old = mb[Columns.VF_PREDS]
                vf = torch.max(vf, (old + (v - old).clamp(-0.2, 0.2) - r) ** 2)
            expect = (-surr + cfg.vf_loss_coeff * vf - train.algorithm.entropy * dist.entropy())[mask].mean()
        assert loss == pytest.approx(float(expect), rel=1e-5, abs=1e-6)


def test_greedy_actions_are_argmax_per_component():
    import gymnasium as gym

    from agents.rllib.modules import HISActorCriticModule

    torch.manual_seed(0)
    module = HISActorCriticModule(observation_space=gym.spaces.Box(0, 1, (3,), np.float32),
                                  action_space=gym.spaces.MultiDiscrete([17, 12]),
                                  model_config={"hidden": [16]})
    obs = torch.rand(5, 3)
    with torch.no_grad():
        logits = module.pi(obs)
    acts = module.greedy_actions(obs).numpy()
    np.testing.assert_array_equal(acts[:, 0], logits[:, :17].argmax(-1).numpy())
    np.testing.assert_array_equal(acts[:, 1], logits[:, 17:].argmax(-1).numpy())


def test_advantage_estimation_refuses_a_recurrent_module_by_name():
    from agents.rllib.learner import HISAdvantageEstimation

    class Recurrent:
        def is_stateful(self):
            return True

    class Modules:
        def foreach_module(self, func, return_dict):
            return {"ue_3": torch.zeros(4)}

        def __getitem__(self, mid):
            return Recurrent()

    gae = HISAdvantageEstimation(gamma=0.5, lambda_=0.95)
    with pytest.raises(ValueError, match="module 'ue_3' is stateful .* stateless modules only"):
        gae(rl_module=Modules(), episodes=[], batch={"ue_3": {}})
