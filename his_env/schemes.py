"""The inference schemes of Sec. VII-B as named presets over clustering, public prompt and modules.

| scheme | clustering | public prompt | SIM & NPI | common phase |
|---|---|---|---|---|
| HIS    | semantic (Alg. 1) | generated from the cluster's prompts | on | yes |
| PPGFIS | entity (knowledge-graph style) | a random member's prompt | off | yes |
| CFIS   | one cluster | a random member's prompt | off | yes |
| IIS    | semantic (only groups the ES queue and SM split) | none | off | no: x = 0 |

Any field can be overridden in the config (`scheme.clustering`, `scheme.public_prompt`,
`scheme.sim_npi`, `scheme.common_phase`) to build ablations such as "HIS without SIM/NPI" (Fig. 12)
or "HIS with random clustering" (Fig. 14).

A new scheme is one `Scheme(...)` entry in `SCHEMES` below: the config (`scheme.name`), both envs
and the BenchMARL task (`his/<name>`, `agents.benchmarl.task.HISTask`) read the registry.
Hydra's `task=his/<name>` also needs the task's settings file
`configs/benchmark/task/his/<name>.yaml` (a copy of `his.yaml` with the name changed).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Protocol

from his_common.registry import Registry



class SchemeSettings(Protocol):
    """What `resolve` reads of a `scheme:` config section (his_env.config.SchemeConfig): the
    registry knows no config module, the config module reads the registry for its allowed names."""

    name: str
    clustering: Optional[str]
    public_prompt: Optional[str]
    sim_npi: Optional[bool]
    common_phase: Optional[bool]
    allocation: str


@dataclass(frozen=True)
class Scheme:
    name: str
    clustering: str  # semantic | entity | random | single
    public_prompt: str  # generated | llm | random_member
    sim_npi: bool
    common_phase: bool
    allocation: str  # kkt | user_equal | cluster_equal


# The presets; their names are the allowed values of `scheme.name`.
SCHEMES: Registry[Scheme] = Registry("scheme")
for _preset in (Scheme("his", "semantic", "generated", True, True, "kkt"),
                Scheme("ppgfis", "entity", "random_member", False, True, "kkt"),
                Scheme("cfis", "single", "random_member", False, True, "kkt"),
                Scheme("iis", "semantic", "random_member", False, False, "kkt")):
    SCHEMES.register(_preset.name, _preset)


def resolve(config: SchemeSettings) -> Scheme:
    """The preset named in the config with the config's non-null overrides applied."""
    scheme = SCHEMES[config.name]
    overrides = {key: getattr(config, key) for key in ("clustering", "public_prompt", "sim_npi", "common_phase")
                 if getattr(config, key) is not None}
    return replace(scheme, allocation=config.allocation, **overrides)
