"""MASAC's coupled discrete critic builds on a device other than the CPU (agents.benchmarl.compat).

The 'meta' device stands in for a GPU on machines without one: TorchRL refuses a Composite whose
leaf is on another device in the same way for both."""
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("benchmarl")

from tests.benchmark.test_task import DISCRETE, small_spec  # noqa: E402

N_AGENTS, N_ACTIONS = 3, 5


class CriticRecorder:
    """A critic model config that keeps the specs MASAC asks it for and builds no layers (layers cannot
    be initialised on the 'meta' device)."""

    def __init__(self):
        self.calls = []

    def get_model(self, **kwargs):
        from tensordict.nn import TensorDictModule

        self.calls.append(kwargs)
        return TensorDictModule(lambda x: x, in_keys=[("agents", "observation")], out_keys=["action_value"])


def masac_like(device):
    """What MASAC's coupled value module reads of its algorithm: specs, group map, critic, device."""
    from torchrl.data import Categorical, Composite, Unbounded

    group = Composite({"observation": Unbounded(shape=(N_AGENTS, 4))}, shape=(N_AGENTS,))
    actions = Composite({"action": Categorical(n=N_ACTIONS, shape=(N_AGENTS,))}, shape=(N_AGENTS,))
    return SimpleNamespace(
        device=torch.device(device), group_map={"agents": [f"ue_{i}" for i in range(N_AGENTS)]},
        action_spec=Composite({"agents": actions}), observation_spec=Composite({"agents": group}), state_spec=None,
        critic_model_config=CriticRecorder())


def test_benchmarls_own_masac_critic_cannot_be_built_off_the_cpu():
    """The fault the fix is for, in the pinned BenchMARL and TorchRL; when this fails, they build it
    themselves and agents.benchmarl.compat can go."""
    from benchmarl.algorithms.masac import Masac

    original = getattr(Masac.get_discrete_value_module_coupled, "__wrapped__", Masac.get_discrete_value_module_coupled)
    original(masac_like("cpu"), "agents")  # on the CPU it builds
    with pytest.raises(RuntimeError, match=r"action_value.*another device \(cpu against meta\)"):
        original(masac_like("meta"), "agents")


def test_the_fix_builds_the_critic_on_the_algorithms_device_and_is_applied_once():
    from benchmarl.algorithms.masac import Masac

    from agents.benchmarl import compat

    compat.apply()
    patched = Masac.get_discrete_value_module_coupled
    compat.apply()
    assert Masac.get_discrete_value_module_coupled is patched  # not wrapped twice
    algorithm = masac_like("meta")
    module = patched(algorithm, "agents")
    (call,) = algorithm.critic_model_config.calls
    output_spec = call["output_spec"]
    assert output_spec.device.type == "meta" and output_spec["action_value"].device.type == "meta"
    assert output_spec["action_value"].shape == (N_AGENTS * N_ACTIONS,)
    assert call["device"].type == "meta" and call["input_spec"]["agents", "observation"].device.type == "meta"
    assert module[1].out_keys == [("agents", "action_value")]
    assert torch.get_default_device().type == "cpu"  # the default device is restored


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("algorithm", DISCRETE)
def test_every_discrete_algorithm_trains_on_a_gpu(algorithm, tmp_path):
    from agents.benchmarl.experiment import run_benchmarl

    out = run_benchmarl(small_spec(algorithm, device="cuda"), tmp_path, references={"random": 0.0, "search": 1.0})
    assert out["summary"]["iterations"] == 3
