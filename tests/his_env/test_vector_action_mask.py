"""HISVecEnv's ("agents", "action_mask"): with dynamics on, the actions of UEs that start no request are masked to 0."""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from torchrl.envs.utils import check_env_specs  # noqa: E402

from his_env.dynamics.slot import OBSERVATION_FEATURES  # noqa: E402
from his_env.vector import HISVecEnv, action_mask  # noqa: E402

torch.set_num_threads(1)
SEQUENTIAL = {"scenario": "seq-small-heavy", "num_ues": 6, "bank_size": 64}
ACTIVE = 3 + OBSERVATION_FEATURES.index("active")  # after Eq. (31)'s three values


def test_the_mask_by_hand():
    active = torch.tensor([True, False])
    # categorical over nx = 2 x ny = 3 pairs: index 0 is (x = 0, y = y_min)
    assert action_mask(active, "categorical", (2, 3)).tolist() == [[True] * 6, [True] + [False] * 5]
    # multi_categorical: the 2 flags of x, then the 3 of y; the inactive UE keeps x = 0 and y - y_min = 0
    assert action_mask(active, "multi_categorical", (2, 3)).tolist() == [[True] * 5,
                                                                          [True, False, True, False, False]]
    with pytest.raises(ValueError, match="action_mode='continuous' has no action mask; allowed: categorical"):
        action_mask(active, "continuous", (2, 3))


@pytest.mark.parametrize("action_mode, flags", [("categorical", 17 * 12), ("multi_categorical", 17 + 12)])
def test_the_mask_follows_each_ues_active_flag_over_an_episode(action_mode, flags):
    env = HISVecEnv(num_envs=3, action_mode=action_mode, seed=4, **SEQUENTIAL)
    check_env_specs(env, seed=0)
    assert env.observation_spec["agents", "action_mask"].shape == (3, 6, flags)
    td, seen = env.reset(), {True: 0, False: 0}
    for _ in range(30):
        mask, active = td["agents", "action_mask"], td["agents", "observation"][..., ACTIVE] > 0.5
        assert mask.dtype == torch.bool and mask.shape == (3, 6, flags)
        assert torch.equal(mask.all(-1), active)  # every action of an active UE
        assert torch.equal(mask.sum(-1)[~active], torch.full_like(mask.sum(-1)[~active], 1 if action_mode ==
                                                                   "categorical" else 2))  # only 0 otherwise
        assert bool(mask[..., 0].all())
        for flag in (True, False):
            seen[flag] += int((active == flag).sum())
        td["agents", "action"] = env.full_action_spec["agents", "action"].rand()
        td = env.step(td)["next"]
    assert seen[True] > 0 and seen[False] > 0  # both kinds of UE were checked


def test_inactive_ues_actions_change_nothing():
    """What the mask rests on: the same step with the inactive UEs' actions redrawn gives the same rewards."""
    rewards = []
    for redraw in (False, True):
        env = HISVecEnv(num_envs=4, action_mode="categorical", seed=2, reward_mode="individual", **SEQUENTIAL)
        td = env.reset()
        action = torch.randint(0, 17 * 12, (4, 6), generator=torch.Generator().manual_seed(0))
        if redraw:
            inactive = ~td["agents", "action_mask"].all(-1)
            assert bool(inactive.any())
            action = torch.where(inactive, torch.randint(0, 17 * 12, (4, 6)), action)
        td["agents", "action"] = action
        rewards.append(env.step(td)["next", "agents", "reward"])
    assert torch.equal(rewards[0], rewards[1])


@pytest.mark.parametrize("kwargs", [
    {"num_ues": 4, "bank_size": 64, "action_mode": "categorical"},  # the paper's setting: every action counts
    {**SEQUENTIAL, "action_mode": "continuous"},  # nothing to mask in a box
    {**SEQUENTIAL, "action_mode": "categorical", "action_mask": False},
])
def test_no_mask_key_where_there_is_nothing_to_mask_or_it_is_turned_off(kwargs):
    env = HISVecEnv(num_envs=2, **kwargs)
    assert "action_mask" not in env.observation_spec["agents"].keys()
    assert "action_mask" not in env.reset()["agents"].keys()


def test_a_bad_action_mask_setting_is_refused():
    with pytest.raises(ValueError, match=r"action_mask='yes'; allowed: True .* or False"):
        HISVecEnv(num_envs=1, num_ues=4, bank_size=64, action_mask="yes")
