"""HISVecEnv under faults: bad actions, seeds and steps out of order, and unusable bank cache files."""
import io
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import his_env  # noqa: E402
from his_env.config import HISConfig  # noqa: E402
from his_env.vector import DecisionBank, HISVecEnv  # noqa: E402

torch.set_num_threads(1)
SMALL = {"num_ues": 4, "num_clusters": 2, "episode_length": 3}
B, N, NX, NY = 8, 4, 17, 12  # the default steps: x in 0..16, y - y_min in 0..11
BANK_SIZE = 16
FIELDS = ("prompt_index", "cluster", "num_clusters", "similarity")


@pytest.fixture(scope="module")
def pettingzoo():
    return his_env.parallel_env(HISConfig.from_dict(SMALL))


@pytest.fixture(scope="module")
def bank(pettingzoo):
    return DecisionBank.build(HISConfig.from_dict(SMALL), BANK_SIZE, env=pettingzoo, cache=False)


def make_env(bank, action_mode="multi_categorical", **kwargs):
    return HISVecEnv(SMALL, num_envs=B, bank=bank, action_mode=action_mode, reward_mode="individual", **kwargs)


def valid_actions(action_mode, seed=0):
    """Valid actions of every mode, drawn from numpy (the env's own generator is left alone)."""
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, NX, (B, N)), rng.integers(0, NY, (B, N))
    if action_mode == "categorical":
        return torch.as_tensor(x * NY + y)
    if action_mode == "continuous":
        return torch.as_tensor(np.stack([x / (NX - 1), y / (NY - 1)], axis=-1), dtype=torch.float32)
    return torch.as_tensor(np.stack([x, y], axis=-1))


def step_with(env, td, action):
    td = td.clone()
    td["agents", "action"] = action
    return env.step(td)


# ---------------------------------------------------------------------------------------------- actions
def _set(index, value):
    def change(action):
        action[index] = value
        return action
    return change


MULTI = r"allowed: a\[0\] \(common steps\) in 0\.\.16, a\[1\] \(ES personalised steps - y_min\) in 0\.\.11"
CATEGORICAL = r"allowed: an index in 0\.\.203"
CONTINUOUS = r"allowed: a\[0\], a\[1\] finite and in \[0, 1\]"
BAD_ACTIONS = [  # (mode, change of valid actions, the message)
    ("multi_categorical", _set((3, 2, 1), 100), r"action of env 3, ue_2 is \[\d+, 100\]; " + MULTI),
    ("multi_categorical", _set((0, 1, 0), -1), r"action of env 0, ue_1 is \[-1, \d+\]; " + MULTI),
    ("multi_categorical", _set((5, 0, 0), 17), r"action of env 5, ue_0 is \[17, \d+\]; " + MULTI),
    ("multi_categorical", _set((7, 3, 1), 12), r"action of env 7, ue_3 is \[\d+, 12\]; " + MULTI),
    ("categorical", _set((3, 2), 204), r"action of env 3, ue_2 is 204; " + CATEGORICAL),
    ("categorical", _set((3, 2), -1), r"action of env 3, ue_2 is -1; " + CATEGORICAL),
    ("categorical", _set((6, 1), 10 ** 6), r"action of env 6, ue_1 is 1000000; " + CATEGORICAL),
    ("continuous", _set((3, 2, 1), float("nan")), r"action of env 3, ue_2 is \[[\d.]+, nan\]; " + CONTINUOUS),
    ("continuous", _set((3, 2, 0), float("inf")), r"action of env 3, ue_2 is \[inf, [\d.]+\]; " + CONTINUOUS),
    ("continuous", _set((3, 2, 0), -float("inf")), r"action of env 3, ue_2 is \[-inf, [\d.]+\]; " + CONTINUOUS),
    ("continuous", _set((3, 2, 0), 1.7), r"action of env 3, ue_2 is \[1\.70*\d*, [\d.]+\]; " + CONTINUOUS),
    ("continuous", _set((3, 2, 1), -0.25), r"action of env 3, ue_2 is \[[\d.]+, -0\.25\]; " + CONTINUOUS),
    # the first offender (env major) is the one named
    ("multi_categorical", lambda a: _set((6, 0, 0), 99)(_set((2, 3, 1), -5)(a)), r"action of env 2, ue_3 is "),
    # dtype and shape
    ("multi_categorical", lambda a: a.bool(), r"action of env 0, ue_0 is \[\w+, \w+\], which holds booleans; "
                                              r"allowed: integers \(not booleans\)"),
    ("categorical", lambda a: a.bool(), r"action of env 0, ue_0 is \w+, which holds booleans; allowed: integers"),
    ("continuous", lambda a: a.bool(), r"action of env 0, ue_0 is \[\w+, \w+\], which holds booleans; "
                                       r"allowed: floating point"),
    ("multi_categorical", lambda a: a.float(), r"action of env 0, ue_0 is \[[\d.]+, [\d.]+\] with dtype "
                                               r"torch.float32; allowed: integers, " + MULTI[len("allowed: "):]),
    ("categorical", lambda a: a.double(), r"with dtype torch.float64; allowed: integers, an index in 0\.\.203"),
    ("continuous", lambda a: a.round().long(), r"with dtype torch.int64; allowed: floating point"),
    ("continuous", lambda a: a[..., :1].clone(), r"action of env 0, ue_0 is \[[\d.]+\] of shape \(1,\) \(actions "
                                                 r"of shape \(8, 4, 1\)\); allowed: shape \(2,\) per agent"),
    ("multi_categorical", lambda a: torch.cat([a, a[..., :1]], -1), r"of shape \(3,\) .*allowed: shape \(2,\)"),
]


@pytest.mark.parametrize("mode,change,message", BAD_ACTIONS)
def test_bad_actions_are_refused_naming_env_and_agent(bank, mode, change, message):
    """Every bad action is a ValueError naming the env, the agent, the value and what is allowed,
    raised before anything is computed: the env then steps as if the bad step never happened."""
    env, twin = make_env(bank, mode, seed=4), make_env(bank, mode, seed=4)
    td = env.reset()
    twin_td = twin.reset()
    with pytest.raises(ValueError, match=message):
        step_with(env, td, change(valid_actions(mode)))
    good = valid_actions(mode, seed=1)
    out, twin_out = step_with(env, td, good)["next"], step_with(twin, twin_td, good)["next"]
    torch.testing.assert_close(out["agents", "reward"], twin_out["agents", "reward"])
    torch.testing.assert_close(out["agents", "observation"], twin_out["agents", "observation"])


def test_without_validation_valid_actions_give_the_same_results(bank):
    """validate_actions=False changes nothing for valid actions (4 steps, across a truncation);
    it skips only the value checks: out-of-range values pass, a boolean dtype is still refused."""
    for mode in ("multi_categorical", "categorical", "continuous"):
        checked, unchecked = make_env(bank, mode, seed=2), make_env(bank, mode, seed=2, validate_actions=False)
        assert checked.validate_actions is True and unchecked.validate_actions is False
        td_checked, td_unchecked = checked.reset(), unchecked.reset()
        for step in range(4):
            action = valid_actions(mode, seed=step)
            td_checked = step_with(checked, td_checked, action)
            td_unchecked = step_with(unchecked, td_unchecked, action.clone())
            torch.testing.assert_close(td_unchecked["agents", "action"], action, rtol=0, atol=0)
            torch.testing.assert_close(td_unchecked["next"].to_dict(), td_checked["next"].to_dict(), rtol=0, atol=0)
            td_checked, td_unchecked = td_checked["next"], td_unchecked["next"]
    unchecked = make_env(bank, "multi_categorical", validate_actions=False)
    td = unchecked.reset()
    step_with(unchecked, td, _set((3, 2, 1), 100)(valid_actions("multi_categorical")))  # not checked
    with pytest.raises(ValueError, match="holds booleans"):
        step_with(unchecked, td, valid_actions("multi_categorical").bool())
    with pytest.raises(ValueError, match="validate_actions='no'; allowed: True or False"):
        make_env(bank, validate_actions="no")


# ---------------------------------------------------------------------------------------------- seeds
def rollout(env, steps=5, seed=None):
    """Observations and rewards of `steps` steps of fixed actions (across a truncation)."""
    td = env.reset() if seed is None else env.reset(seed=seed)
    observations, rewards = [td["agents", "observation"]], []
    for step in range(steps):
        td = step_with(env, td, valid_actions("multi_categorical", seed=step))["next"]
        observations.append(td["agents", "observation"])
        rewards.append(td["agents", "reward"])
    return torch.stack(observations), torch.stack(rewards)


def test_reset_with_a_seed_reseeds(bank):
    env, other = make_env(bank, seed=0), make_env(bank, seed=5)
    first = env.reset(seed=1)["agents", "observation"]
    torch.testing.assert_close(env.reset(seed=1)["agents", "observation"], first, rtol=0, atol=0)
    torch.testing.assert_close(other.reset(seed=1)["agents", "observation"], first, rtol=0, atol=0)
    assert not torch.equal(env.reset(seed=2)["agents", "observation"], first)
    assert not torch.equal(env.reset()["agents", "observation"], env.reset()["agents", "observation"])
    # the whole episode follows from the seed
    for expected, actual in zip(rollout(env, seed=9), rollout(other, seed=9)):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['options'\]; allowed: tensordict, seed"):
        env.reset(options={})


def test_set_seed_then_the_same_actions_give_the_same_rollout(bank):
    env = make_env(bank, seed=0)
    env.set_seed(3)
    first = rollout(env)
    env.set_seed(3)
    again = rollout(env)
    other = make_env(bank, seed=3)  # seed= at construction is set_seed
    for expected, a, b in zip(first, again, rollout(other)):
        torch.testing.assert_close(a, expected, rtol=0, atol=0)
        torch.testing.assert_close(b, expected, rtol=0, atol=0)
    env.set_seed(np.int64(3))
    torch.testing.assert_close(rollout(env)[0], first[0], rtol=0, atol=0)
    env.set_seed(4)
    assert not torch.equal(rollout(env)[0], first[0])


@pytest.mark.parametrize("seed", ["abc", 1.5, np.float64(2.0), True, -1, 2 ** 64, [1]])
def test_bad_seeds_are_refused(bank, seed):
    env = make_env(bank)
    message = re.escape(f"seed={seed!r} ({type(seed).__name__}); allowed: None (a random seed) or an integer "
                        f"in 0..2**64 - 1")
    with pytest.raises(ValueError, match=message):
        env.set_seed(seed)
    with pytest.raises(ValueError, match=message):
        env.reset(seed=seed)
    with pytest.raises(ValueError, match=message):
        make_env(bank, seed=seed)


def test_step_before_reset_is_a_clear_error(bank):
    env = make_env(bank)
    td = env.full_action_spec.zero()
    with pytest.raises(RuntimeError, match=r"call reset\(\) \(or load_decision_context\(\)\) before step\(\)"):
        env.step(td)
    env.reset()
    env.step(td)  # then it steps


def test_a_bank_of_another_configuration_is_refused(bank):
    with pytest.raises(ValueError, match=r"bank= does not fit this configuration \(num_ues = 5\): prompt_index has "
                                         r"shape \(16, 4\); allowed: \(16, 5\)"):
        HISVecEnv({**SMALL, "num_ues": 5}, num_envs=B, bank=bank)
    broken = DecisionBank(bank.prompt_index, bank.cluster, bank.num_clusters, bank.similarity.copy())
    broken.similarity[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"similarity of context 3, ue_1 is nan; allowed: finite, in \[-1, 1\]"):
        make_env(broken)


# ---------------------------------------------------------------------------------------------- bank cache
def stored(bank, key, **changes):
    """npz bytes of `bank` under `key`, with fields replaced by `changes`."""
    buffer = io.BytesIO()
    np.savez(buffer, **{"key": np.array(key), **{f: getattr(bank, f) for f in FIELDS}, **changes})
    return buffer.getvalue()


def _nan_similarity(bank):
    similarity = bank.similarity.copy()
    similarity[2, 1] = np.nan
    return similarity


FAULTS = {  # name: (bytes of the cache file from the good bytes, the bank and its key; the reason in the warning)
    "truncated": (lambda good, bank, key: good[:len(good) // 2], r"cannot be read: BadZipFile"),
    "empty": (lambda good, bank, key: b"", r"cannot be read: EOFError"),
    "not an npz": (lambda good, bank, key: b"\x80\x04K\x01." * 10, r"cannot be read: "),
    "foreign, 4 rows": (lambda good, bank, key: stored(DecisionBank(*(getattr(bank, f)[:4] for f in FIELDS)), key),
                        r"it holds 4 contexts; 16 were asked for"),
    "NaN similarity": (lambda good, bank, key: stored(bank, key, similarity=_nan_similarity(bank)),
                       r"similarity of context 2, ue_1 is nan; allowed: finite, in \[-1, 1\]"),
    "similarity above 1": (lambda good, bank, key: stored(bank, key, similarity=bank.similarity + 0.5),
                           r"similarity of context \d+, ue_\d is 1\.\d+; allowed: finite, in \[-1, 1\]"),
    "wrong N": (lambda good, bank, key: stored(bank, key, **{f: getattr(bank, f)[:, :3] for f in FIELDS[:2]},
                                               similarity=bank.similarity[:, :3]),
                r"prompt_index has shape \(16, 3\); allowed: \(16, 4\)"),
    "key mismatch": (lambda good, bank, key: stored(bank, "0123456789abcdef0123"),
                     r"it is stored under key '0123456789abcdef0123', not '[0-9a-f]{20}'"),
    "no key": (lambda good, bank, key: _without_key(bank), r"no key stored"),
    "episodes of another length": (lambda good, bank, key: stored(bank, key, trajectory_length=np.array(4)),
                                   r"it stores episodes of 4 contexts, not 1"),
    "float clusters": (lambda good, bank, key: stored(bank, key, cluster=bank.cluster.astype(float)),
                       r"cluster has dtype float64; allowed: integer"),
    "cluster out of range": (lambda good, bank, key: stored(bank, key, cluster=bank.cluster + bank.num_clusters[:, None]),
                             r"cluster of context 0, ue_0 is \d; allowed: 0\.\.\d \(the context's \d clusters\)"),
    "no clusters": (lambda good, bank, key: stored(bank, key, num_clusters=bank.num_clusters * 0),
                    r"num_clusters of context 0 is 0; allowed: 1\.\.4"),
    "prompt outside the pool": (lambda good, bank, key: stored(bank, key, prompt_index=bank.prompt_index + 10 ** 6),
                                r"prompt_index of context 0, ue_0 is \d+; allowed: 0\.\.\d+ \(the prompt pool\)"),
}


def _without_key(bank):
    buffer = io.BytesIO()
    np.savez(buffer, **{f: getattr(bank, f) for f in FIELDS})
    return buffer.getvalue()


def build_recording_warnings(pettingzoo):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = DecisionBank.build(HISConfig.from_dict(SMALL), BANK_SIZE, env=pettingzoo)
    return built, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def assert_same_bank(actual, expected):
    assert len(actual) == len(expected)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(actual, field), getattr(expected, field))
        assert getattr(actual, field).dtype == getattr(expected, field).dtype


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_an_unusable_bank_file_is_moved_aside_and_rebuilt(pettingzoo, bank, tmp_path, monkeypatch, fault):
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path))
    first, caught = build_recording_warnings(pettingzoo)
    assert caught == [] and first.build_seconds > 0
    (path,) = (tmp_path / "vec_bank").glob("*.npz")
    assert path.name == f"{first.key}.npz"
    make_bad, reason = FAULTS[fault]
    bad = make_bad(path.read_bytes(), bank, first.key)
    path.write_bytes(bad)

    rebuilt, caught = build_recording_warnings(pettingzoo)
    assert len(caught) == 1, [str(w.message) for w in caught]
    (kept,) = (tmp_path / "vec_bank").glob(f"{path.name}.unusable-*")
    message = str(caught[0].message)
    assert str(path) in message and str(kept) in message and "rebuilt" in message
    assert re.search(reason, message), message
    assert kept.read_bytes() == bad  # kept as it was, for inspection
    assert rebuilt.build_seconds > 0
    assert_same_bank(rebuilt, bank)

    again, caught = build_recording_warnings(pettingzoo)  # the rewritten file is good
    assert caught == [] and again.build_seconds == 0.0
    assert_same_bank(again, bank)
    env = HISVecEnv(SMALL, num_envs=B, bank=again)
    td = step_with(env, env.reset(), valid_actions("multi_categorical"))
    assert torch.isfinite(td["next", "agents", "reward"]).all()


def test_a_read_only_cache_folder_keeps_the_bank_in_memory_with_one_warning(pettingzoo, bank, tmp_path, monkeypatch):
    """Tests run as root here, where chmod cannot make a folder read-only: the write is made to
    fail as a read-only folder fails it, with PermissionError from the atomic write."""
    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path))
    monkeypatch.setattr("his_common.storage.atomic_write_bytes", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = [DecisionBank.build(HISConfig.from_dict(SMALL), size, env=pettingzoo) for size in (BANK_SIZE, 8, 8)]
    caught = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(caught) == 1, caught
    assert "cannot write the decision-bank cache" in caught[0] and "stays in memory" in caught[0]
    assert str(tmp_path / "vec_bank") in caught[0]
    assert_same_bank(built[0], bank)
    assert len(built[1]) == 8 and all(b.build_seconds > 0 for b in built)
    assert list(tmp_path.rglob("*.npz")) == []
