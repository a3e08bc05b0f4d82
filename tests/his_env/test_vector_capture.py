"""Step capture (`his_env.vector.capture`): the compiled step gives the uncaptured step's results."""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from his_env.vector import HISVecEnv  # noqa: E402
from his_env.vector.capture import resolve_capture  # noqa: E402

torch.set_num_threads(1)
SMALL = {"num_ues": 6, "num_clusters": 2, "episode_length": 3}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def paired_envs(device, **kwargs):
    """The same env uncaptured and captured (same seed, same bank)."""
    plain = HISVecEnv(num_envs=5, seed=11, device=device, capture=False, bank_size=64, **kwargs)
    return plain, HISVecEnv(num_envs=5, seed=11, device=device, capture=True, bank=plain.bank, **kwargs)


# a compiler error would leave the env uncaptured with this warning, and the results equal: an error here
@pytest.mark.filterwarnings("error:step capture failed:RuntimeWarning")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("setting", ["paper, EC-Diff on", "every dynamics process on"])
def test_captured_steps_equal_uncaptured_steps(device, setting):
    """Eight steps with resets between episodes (episode_length 3): the captured env compiles (no
    fallback to the uncaptured step), every output key equals the uncaptured one's (floats to float64
    rounding: fused kernels may sum in another order; integers and flags exactly), results kept from
    earlier steps are not overwritten, and nothing compiles again after the first step."""
    if setting == "paper, EC-Diff on":
        envs = paired_envs(device, reward_mode="difference", ecdiff__enabled=True, **SMALL)
    else:
        envs = paired_envs(device, reward_mode="difference", scenario="seq-small-heavy", num_ues=6,
                           episode_length=3, dynamics__requests__bursts__enabled=True)
    assert envs[1].config.dynamics.enabled_processes or setting.startswith("paper")
    tds = [env.reset() for env in envs]
    kept = [[], []]
    for step in range(8):
        action = envs[0].full_action_spec["agents", "action"].rand()
        # compiled at the first step; after it, nothing may make torch compile again
        with torch._dynamo.config.patch(error_on_recompile=step > 0):
            for i, env in enumerate(envs):
                tds[i]["agents", "action"] = action.clone()
                out, tds[i] = env.step_and_maybe_reset(tds[i])
                kept[i].append(out["next"])
    for plain, captured in zip(kept[0], kept[1]):
        assert set(plain.keys(True, True)) == set(captured.keys(True, True))
        for key in plain.keys(True, True):
            a, b = plain[key], captured[key]
            if a.is_floating_point():
                torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-9, msg=lambda m: f"{key}: {m}")
            else:
                assert torch.equal(a, b), key
    assert not envs[1].capture_failed
    # the rewards vary over the steps (a step's outputs are not the last replay's, shared)
    rewards = torch.stack([step["agents", "reward"] for step in kept[1]])
    assert not torch.equal(rewards[0], rewards[-1])


@pytest.mark.parametrize("scenario, overrides", [(None, {"ecdiff__enabled": True}), (None, {}),
                                                 ("seq-small-heavy", {"dynamics__requests__bursts__enabled": True})])
def test_the_evaluation_traces_as_one_graph(scenario, overrides):
    """No graph break in the captured step (a value read back to the host would split it and bring
    back a sync per step): paper with EC-Diff on and off (the evaluation with the next decision point),
    and a scenario with every dynamics process on (the evaluation, the transition to the next slot and
    its decision points)."""
    env = HISVecEnv(num_envs=4, reward_mode="difference", scenario=scenario, bank_size=16, capture=False,
                    **({**SMALL, **overrides} if scenario is None else overrides))
    env.reset()
    actions = env.decode_actions(env.full_action_spec["agents", "action"].rand())
    if env.dynamics is None:  # the evaluation and the next decision point (bank rows, channel, observation)
        drawn = env.core.sample_draws(env._generator)
        explanation = torch._dynamo.explain(env._advancement)(env._contexts, actions, drawn)
    else:
        drawn = env.dynamics.draws(env._draws, (env.num_envs,), False, env.core.dtype)
        explanation = torch._dynamo.explain(env._slot_advancement)(env._contexts, actions, env._dynamics_state,
                                                                   env._slot, drawn, env._rows, None)
    assert explanation.graph_break_count == 0, [r.reason for r in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_capture_setting():
    assert resolve_capture(None, torch.device("cuda")) is True
    assert resolve_capture(None, torch.device("cpu")) is False
    assert resolve_capture(True, torch.device("cpu")) is True
    assert HISVecEnv(num_envs=2, bank_size=8, **SMALL).capture is False  # the CPU default
    with pytest.raises(ValueError, match=r"capture='yes'; allowed: None \(on for CUDA devices, off on the CPU\)"):
        HISVecEnv(num_envs=2, capture="yes", bank_size=8, **SMALL)


def test_a_compiler_that_fails_leaves_the_step_uncaptured_with_a_warning(monkeypatch):
    import his_env.vector.capture as capture

    def failing_compile(function, **kwargs):
        def compiled(*args):
            raise torch._dynamo.exc.BackendCompilerFailed(failing_compile, RuntimeError("no C compiler"), None)
        return compiled

    monkeypatch.setattr(capture.torch, "compile", failing_compile)
    plain, fallback = paired_envs("cpu", reward_mode="difference", **SMALL)
    assert not fallback.capture_failed  # nothing compiled yet
    tds = [plain.reset(), fallback.reset()]
    action = plain.full_action_spec["agents", "action"].rand()
    outs = []
    for i, env in enumerate((plain, fallback)):
        tds[i]["agents", "action"] = action.clone()
        if i == 1:
            with pytest.warns(RuntimeWarning, match="step capture failed, so the env steps uncaptured.*no C compiler"):
                outs.append(env.step(tds[i])["next"])
        else:
            outs.append(env.step(tds[i])["next"])
    torch.testing.assert_close(outs[1]["agents", "reward"], outs[0]["agents", "reward"], rtol=0, atol=0)
    assert fallback.capture_failed and not plain.capture_failed  # what bench_vec_env.py reports


@pytest.mark.parametrize("scenario", [None, "seq-small-heavy"])
def test_the_step_breakdown_times_every_part_and_leaves_the_env_as_it_was(scenario):
    """`bench_vec_env.py --breakdown`: every part timed (a positive number of ms), and the env's own
    `_step` back afterwards (the TorchRL part swaps in a prebuilt output): its steps still move on."""
    import importlib.util
    import re
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_vec_env.py"
    spec = importlib.util.spec_from_file_location("bench_vec_env_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    env = HISVecEnv(num_envs=2, reward_mode="difference", scenario=scenario, bank_size=16,
                    **(SMALL if scenario is None else {"num_ues": 4}))
    line = bench.step_breakdown(env, reps=2)
    parts = dict(re.findall(r"(?:, )?(.+?) (\d+\.\d{3}) ms", line))  # a name may hold a comma
    assert {"the same uncaptured", "output", "action check", "whole step", "TorchRL's step around it"} <= set(parts)
    assert all(float(value) > 0 for value in parts.values()), line
    assert "_step" not in vars(env)
    td = env.reset()
    td["agents", "action"] = env.full_action_spec["agents", "action"].rand()
    first = env.step(td)["next", "agents", "reward"]
    td["agents", "action"] = env.full_action_spec["agents", "action"].rand()
    assert not torch.equal(env.step(td)["next", "agents", "reward"], first)
