"""The search reference on a torch device (agents.vector_search) takes the numpy search's actions."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import his_env  # noqa: E402
from agents.baselines import SearchPolicy, make_baseline  # noqa: E402

torch.set_num_threads(1)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("overrides", [{"num_ues": 10, "num_clusters": 3},
                                       {"num_ues": 12, "num_clusters": 2, "ecdiff__enabled": True},
                                       {"num_ues": 8, "scheme__name": "ppgfis", "scheme__allocation": "user_equal"}])
def test_device_search_takes_the_numpy_searchs_actions(device, overrides):
    """Same start, same UE orders, same acceptance: the same joint action and U at three decision
    points (one policy object each, so the device search is reused across points)."""
    env = his_env.parallel_env(**overrides)
    policies = {None: SearchPolicy(seed=0), device: SearchPolicy(seed=0, device=device)}
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        actions, utilities, sweeps = {}, {}, {}
        for where, policy in policies.items():
            policy.reset(env, seed=seed)
            actions[where] = policy.act(obs, env)
            utilities[where], sweeps[where] = policy.last_utility, policy.last_sweeps
        for agent in env.possible_agents:
            np.testing.assert_array_equal(actions[device][agent], actions[None][agent], err_msg=f"seed {seed}")
        assert utilities[device] == pytest.approx(utilities[None], rel=1e-12)
        assert sweeps[device] == sweeps[None]
        # the actions it returns are the env's: stepping them gives the U the search reports
        stepped = env.unwrapped.evaluate_joint_actions(
            np.stack([actions[device][a] for a in env.possible_agents])[None])["utility"][0]
        assert stepped == pytest.approx(utilities[device], rel=1e-12)


def test_device_search_refuses_dynamics_and_is_wired_to_the_baseline_factory():
    env = his_env.parallel_env(scenario="seq-small-light")
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"SearchPolicy\(device='cpu'\) evaluates explicit decision points, but "
                                         r"dynamics processes \[.*\] are on; allowed: device=None"):
        SearchPolicy(device="cpu").act(obs, env)
    assert make_baseline("search:2", search_device="cpu").device == "cpu"
    assert make_baseline("search").device is None
    assert not hasattr(make_baseline("random", search_device="cpu"), "device")
