"""A fix BenchMARL 1.5 needs under TorchRL 0.11 to train MASAC on a GPU, applied once per process.

MASAC's coupled discrete critic (BenchMARL's default for discrete actions,
`coupled_discrete_values: true`) declares its output spec as a Composite on the algorithm's device
whose `action_value` leaf is made without a device, so on the CPU (TorchRL's default). TorchRL 0.11
refuses a Composite with a leaf on another device, so MASAC stopped at its start on any device but
the CPU ("Setting a new attribute (action_value) with spec type UnboundedContinuous on another
device (cpu against cuda:0)"). `apply()` builds that module with torch's default device set to the
algorithm's, which puts the leaf where the Composite is; every layer of the module is made on the
algorithm's device either way, so nothing else changes.

`agents.benchmarl.experiment.HISExperiment` calls `apply()` before BenchMARL builds its algorithm.
"""
from __future__ import annotations

import functools

_APPLIED = "_his_marl_on_device"


def apply() -> None:
    """Patch MASAC's coupled discrete value module to build on the algorithm's device (idempotent)."""
    import torch
    from benchmarl.algorithms.masac import Masac

    original = Masac.get_discrete_value_module_coupled
    if getattr(original, _APPLIED, False):
        return

    @functools.wraps(original)
    def on_device(self, group: str):
        with torch.device(self.device):
            return original(self, group)

    setattr(on_device, _APPLIED, True)
    Masac.get_discrete_value_module_coupled = on_device
