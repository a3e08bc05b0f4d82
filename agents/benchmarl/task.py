"""HIS as a BenchMARL task: `his/<scheme>` for every scheme of `his_env.schemes.SCHEMES` (`his/his`,
`his/ppgfis`, `his/cfis`, `his/iis`).

    import agents.benchmarl.task as his_task             # touches no BenchMARL registry
    from benchmarl.algorithms import MappoConfig
    from benchmarl.experiment import Experiment, ExperimentConfig
    from benchmarl.models import MlpConfig

    task = his_task.HISTask.HIS.get_from_yaml()          # configs/benchmark/task/his/his.yaml
    task = his_task.HISTask.CFIS.get_task({"num_ues": 4, "reward_mode": "team"})
    Experiment(task=task, algorithm_config=MappoConfig.get_from_yaml(),
               model_config=MlpConfig.get_from_yaml(), seed=0,
               config=ExperimentConfig.get_from_yaml()).run()

With BenchMARL's Hydra run script (its `benchmarl/run.py`, unchanged), from the repository root:

    python -m his_cli.benchmarl_run algorithm=mappo task=his/his experiment=his task.num_ues=10
    PYTHONPATH=$PWD python -m benchmarl.run algorithm=mappo task=his/cfis task.reward_mode=team

The first form registers the tasks with BenchMARL (`register()`) and adds `configs/benchmark` to
Hydra's search path, then calls BenchMARL's own `hydra_experiment`; the second relies on the Hydra
search-path plugin in `hydra_plugins/his_marl`, which Hydra finds on the Python path and which does
the same. Importing this module registers nothing: the Python API above needs no registry.

Every task steps `his_env.vector.HISVecEnv` (B copies of the env in torch, one agent group
"agents" of N UEs, per-UE rewards, the global state for centralised critics); BenchMARL logs the
network utility U, Q, T and E of the collected decision points as `collection/his/*`. Discrete
algorithms (ippo, mappo, iql, qmix, vdn, isac, masac) get one categorical action over the
(x, y) pairs; continuous ones (iddpg, maddpg, and the others when the experiment prefers
continuous actions) get two values in [0, 1] that the env rounds to step counts.

Task settings (`TaskConfig`; the YAML files under `configs/benchmark/task/his/` hold them with a
comment each, and Hydra overrides them as `task.<key>=...`):

| key | meaning |
|---|---|
| `num_ues` | N (null: the scenario's or config's, else 50) |
| `reward_mode` | a name of `his_env.reward_modes.REWARD_MODES` (default `DEFAULT_REWARD_MODE` there, `difference`) |
| `bank_size` | decision-point contexts in the env's pre-computed bank (null: the env's default) |
| `capture` | compile and CUDA-graph the env's step (`his_env.vector.capture`; null: on for CUDA devices, off on the CPU) |
| `action_mask` | with dynamics on and discrete actions, the env's `("agents", "action_mask")`: UEs that start no request in the slot may take only action 0, so that BenchMARL's masked policies and Q-learners neither sample nor learn from actions that change nothing (`HISVecEnv`'s module docstring). Default false: on `seq-medium-heavy` the masked shared PPO of `train.py` collapsed late in 2 of 5 runs at discount 0 (docs/dynamics.md) |
| `scenario` | a name of `his_env.scenarios` (`paper`, `seq-<size>-<load>`, `heldout-<k>`) under `config` and `env` (null: none) |
| `config` | an HIS YAML file overlaid on the defaults (null: `configs/default.yaml`'s values) |
| `env` | further HIS config keys, dotted (`{"es.sm_range": [800, 1200], "scheme.allocation": "user_equal"}`) |

The scheme is the task's name; `env` may not set `scheme.name` or `num_ues`.

`HISTask` (BenchMARL's task enum) has one member per registered scheme, named in upper case
(`HISTask.CFIS`), built from the registry when this module is imported; `task_by_name` and
`register()` rebuild it if schemes were registered since. Hydra's `task=his/<scheme>`
reads `configs/benchmark/task/his/<scheme>.yaml` (Hydra needs a config of that name; a YAML per
scheme is the overlay with the settings' comments), while the Python API (`get_task`,
`get_from_yaml` without a file) falls back to `TaskConfig`'s defaults. Network infos are logged as
float64 means (`log_info`).
"""
from __future__ import annotations

import copy
import functools
import sys
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from benchmarl.environments import Task, TaskClass
from benchmarl.utils import DEVICE_TYPING, _read_yaml_config
from torchrl.data import Composite
from torchrl.envs import EnvBase

from his_common.config import load_yaml, shipped_configs_dir
from his_env.config import ConfigError, HISConfig
from his_env.environment import load_config
from his_env.reward_modes import DEFAULT_REWARD_MODE, REWARD_MODES
from his_env.scenarios import scenario_config, scenario_names
from his_env.schemes import SCHEMES

ENV_NAME = "his"
GROUP = "agents"
# configs/benchmark (in a checkout, or shipped with the package): task/his/*.yaml, experiment/his.yaml, reward/*.yaml.
CONFIG_DIR = (shipped_configs_dir() or Path(__file__).resolve().parents[2] / "configs") / "benchmark"


@dataclass
class TaskConfig:
    """The settings of one HIS task (see the module docstring)."""

    num_ues: Optional[int] = 50  # null: the scenario's (or the config file's)
    reward_mode: str = DEFAULT_REWARD_MODE
    bank_size: Optional[int] = None
    capture: Optional[bool] = None  # null: on for CUDA devices, off on the CPU
    action_mask: bool = False  # mask inactive UEs' actions (dynamics on, discrete actions); off: see the docstring
    scenario: Optional[str] = None
    config: Optional[str] = None
    env: Dict[str, Any] = field(default_factory=dict)


def task_config(values: Optional[Dict[str, Any]] = None) -> TaskConfig:
    """A checked `TaskConfig` from a dict; unknown keys and bad values raise `ConfigError`."""
    values = dict(values or {})
    allowed = [f.name for f in fields(TaskConfig)]
    for key in values:
        if key not in allowed:
            raise ConfigError(f"task.{key} is not a setting of the HIS task; allowed: {', '.join(allowed)}")
    cfg = TaskConfig(**values)
    if cfg.num_ues is not None and (isinstance(cfg.num_ues, bool) or not isinstance(cfg.num_ues, int)
                                    or cfg.num_ues < 1):
        raise ConfigError(f"task.num_ues has value {cfg.num_ues!r}; allowed: null or an integer >= 1")
    REWARD_MODES.check(cfg.reward_mode, "task.reward_mode", ConfigError)
    if cfg.bank_size is not None and (isinstance(cfg.bank_size, bool) or not isinstance(cfg.bank_size, int)
                                      or cfg.bank_size < 1):
        raise ConfigError(f"task.bank_size has value {cfg.bank_size!r}; allowed: null or an integer >= 1")
    if cfg.capture not in (None, True, False):
        raise ConfigError(f"task.capture has value {cfg.capture!r}; allowed: null (on for CUDA devices, off on the "
                          f"CPU), true or false")
    if not isinstance(cfg.action_mask, bool):
        raise ConfigError(f"task.action_mask has value {cfg.action_mask!r}; allowed: true (mask the actions of UEs "
                          f"that start no request, where dynamics are on and actions discrete) or false")
    if cfg.scenario is not None and cfg.scenario not in scenario_names():
        raise ConfigError(f"task.scenario has value {cfg.scenario!r}; allowed: null or {', '.join(scenario_names())}")
    if cfg.config is not None and not Path(cfg.config).is_file():
        raise ConfigError(f"task.config has value {cfg.config!r}: no such file; allowed: null or an HIS YAML file")
    if not isinstance(cfg.env, dict):
        raise ConfigError(f"task.env has value {cfg.env!r}; allowed: a mapping of dotted HIS config keys")
    nested_scheme = cfg.env.get("scheme")
    for key in ("num_ues", "scheme.name"):
        if key in cfg.env or (key == "scheme.name" and isinstance(nested_scheme, dict) and "name" in nested_scheme):
            raise ConfigError(f"task.env.{key} cannot be set: the number of UEs is task.num_ues and the scheme "
                              f"is the task's name ({_task_names()})")
    return cfg


class HISTaskClass(TaskClass):
    """BenchMARL's view of one HIS task: how to build the vector env and read its specs."""

    @property
    def scheme(self) -> str:
        return self.name.lower()

    def settings(self) -> TaskConfig:
        """The task's checked settings (read from `config` once; BenchMARL asks for them many times)."""
        if self.__dict__.get("_settings_of") != self.config:
            self.__dict__.update(_settings=task_config(self.config), _settings_of=copy.deepcopy(self.config),
                                 _his_config=None)
        return self.__dict__["_settings"]

    def his_config(self) -> HISConfig:
        """The HIS configuration this task runs (also what the PettingZoo reference env takes); built once."""
        cfg = self.settings()
        if self.__dict__.get("_his_config") is None:
            if cfg.scenario is None:
                base = load_config(cfg.config)
            else:  # the scenario under the config file
                base = scenario_config(cfg.scenario, *([load_yaml(cfg.config)] if cfg.config else []))
            size = {} if cfg.num_ues is None else {"num_ues": cfg.num_ues}
            self._his_config = base.with_overrides({**cfg.env, **size, "scheme.name": self.scheme})
        return self._his_config

    def get_env_fun(self, num_envs: int, continuous_actions: bool, seed: Optional[int],
                    device: DEVICE_TYPING) -> Callable[[], EnvBase]:
        settings = self.settings()
        his_config = self.his_config()  # bad settings fail here, before BenchMARL builds anything
        action_mode = "continuous" if continuous_actions else "categorical"
        return lambda: make_vec_env(his_config, num_envs=num_envs, device=device,
                                    seed=0 if seed is None else int(seed), reward_mode=settings.reward_mode,
                                    action_mode=action_mode, bank_size=settings.bank_size,
                                    capture=settings.capture, action_mask=settings.action_mask)

    def supports_continuous_actions(self) -> bool:
        return True

    def supports_discrete_actions(self) -> bool:
        return True

    def has_render(self, env: EnvBase) -> bool:
        return False

    def max_steps(self, env: EnvBase) -> int:
        return int(self.his_config().episode_length)

    def group_map(self, env: EnvBase) -> Dict[str, List[str]]:
        return {GROUP: [f"ue_{n}" for n in range(self.his_config().num_ues)]}

    def observation_spec(self, env: EnvBase) -> Composite:
        spec = env.full_observation_spec_unbatched
        group = spec[GROUP].clone()
        for key in ("info", "action_mask"):
            if key in group.keys():
                del group[key]
        return Composite({GROUP: group})

    def info_spec(self, env: EnvBase) -> Optional[Composite]:
        group = env.full_observation_spec_unbatched[GROUP]
        if "info" not in group.keys():
            return None
        return Composite({GROUP: Composite({"info": group["info"].clone()}, shape=group.shape)})

    def state_spec(self, env: EnvBase) -> Optional[Composite]:
        return Composite({"state": env.full_observation_spec_unbatched["state"].clone()})

    def action_spec(self, env: EnvBase) -> Composite:
        return env.full_action_spec_unbatched

    def action_mask_spec(self, env: EnvBase) -> Optional[Composite]:
        group = env.full_observation_spec_unbatched[GROUP]
        if "action_mask" not in group.keys():
            return None
        return Composite({GROUP: Composite({"action_mask": group["action_mask"].clone()}, shape=group.shape)})

    @staticmethod
    def env_name() -> str:
        return ENV_NAME

    @staticmethod
    def log_info(batch) -> Dict[str, float]:
        """Network totals of the collected decision points (U, Q, T, E, Eqs. 21-23), logged by BenchMARL."""
        info = batch.get(("next", "info"), None)
        if info is None:
            return {}
        return {f"collection/his/{key}": float(value.double().mean()) for key, value in info.items()}


def make_vec_env(his_config: HISConfig, **kwargs: Any) -> EnvBase:
    """The vector env of a task (one place, so that tests and tools can see what the tasks build)."""
    from his_env.vector import HISVecEnv

    return HISVecEnv(config=his_config, **kwargs)


class _HISTasks(Task):
    """The HIS tasks, one per scheme (Sec. VII-B); `HISTask` has the members."""

    @staticmethod
    def associated_class():
        return HISTaskClass

    def get_task(self, config: Optional[Dict[str, Any]] = None) -> HISTaskClass:
        if config is None:
            return self.get_from_yaml()
        return HISTaskClass(name=self.name, config=asdict(task_config(copy.deepcopy(config))))

    def get_from_yaml(self, path: Optional[str] = None) -> HISTaskClass:
        """The task with its settings from `path` (default: configs/benchmark/task/his/<scheme>.yaml)."""
        if path is None:
            path = CONFIG_DIR / "task" / ENV_NAME / f"{self.name.lower()}.yaml"
            values = _read_yaml_config(str(path)) if path.is_file() else {}
        else:
            values = _read_yaml_config(str(path))
        return self.get_task(values)


def _task_names() -> str:
    return ", ".join(f"{ENV_NAME}/{scheme}" for scheme in SCHEMES)


@functools.lru_cache(maxsize=None)
def _task_enum(schemes: tuple[str, ...]) -> type[_HISTasks]:
    """BenchMARL's task enum with a member per scheme, one enum per set of schemes (BenchMARL
    lower-cases a member's name to find its YAML and settings module: scheme names must be lower case)."""
    for scheme in schemes:
        if scheme != scheme.lower():
            raise ConfigError(f"scheme {scheme!r} cannot be a BenchMARL task: BenchMARL lower-cases task names; "
                              f"allowed: lower-case scheme names")
    enum = _HISTasks("HISTask", {scheme.upper(): None for scheme in schemes}, module=__name__, qualname="HISTask")
    enum.__doc__ = "The HIS tasks, one per scheme of `his_env.schemes.SCHEMES` (Sec. VII-B)."
    return enum


HISTask = _task_enum(SCHEMES.names)


def task_by_name(name: str) -> _HISTasks:
    """`his/cfis` (or `cfis`) -> HISTask.CFIS; unknown names are refused with the allowed ones.
    Needs no registration with BenchMARL: runs built in Python hand BenchMARL the task object."""
    scheme = name.split("/", 1)[1] if name.startswith(ENV_NAME + "/") else name
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown HIS task {name!r}; allowed: {_task_names()}")
    return _current_tasks()[scheme.upper()]


def _current_tasks() -> type[_HISTasks]:
    """`HISTask`, rebuilt first if schemes were registered (or removed) since it was built."""
    global HISTask
    HISTask = _task_enum(SCHEMES.names)
    return HISTask


def register() -> None:
    """Make the tasks known to BenchMARL's Hydra runner as its built-in ones are (idempotent). Called by
    `his_cli.benchmarl_run` and the Hydra plugin in `hydra_plugins/his_marl`, never on import: BenchMARL's
    Python API (`HISTask.HIS.get_task(...)` handed to `Experiment`) needs no registration.

    BenchMARL's documented way to add an environment (its examples/extending/task) is to list the task
    enum in `benchmarl.environments.tasks`, from which its package fills, on import, the registry
    `task_config_registry` ("his/his" -> enum member) that Hydra's `task=his/his` reads, and the schemas
    `<env>_<task>` that Hydra validates task settings against, found as the `TaskConfig` of module
    `benchmarl.environments.<env>.<task>`. BenchMARL has filled its registries by the time this runs, so
    this does the same fill for the HIS enum; entries of schemes no longer registered are removed.
    """
    import benchmarl.environments as environments

    tasks = _current_tasks()
    environments.tasks[:] = [t for t in environments.tasks if not issubclass(t, _HISTasks)] + [tasks]
    package = sys.modules.get(f"benchmarl.environments.{ENV_NAME}")
    if package is None:
        package = types.ModuleType(f"benchmarl.environments.{ENV_NAME}")
        package.__path__ = []  # a package with no files: its task modules are the ones below
        sys.modules[package.__name__] = package
    for key in [k for k in environments.task_config_registry if k.startswith(ENV_NAME + "/")]:
        scheme = key.split("/", 1)[1]
        if scheme not in SCHEMES:
            del environments.task_config_registry[key]
            environments._task_class_registry.pop(f"{ENV_NAME}_{scheme}", None)
            sys.modules.pop(f"{package.__name__}.{scheme}", None)
            package.__dict__.pop(scheme, None)
    for task in tasks:
        scheme = task.name.lower()
        environments.task_config_registry[f"{ENV_NAME}/{scheme}"] = task
        environments._task_class_registry[f"{ENV_NAME}_{scheme}"] = TaskConfig
        module_name = f"{package.__name__}.{scheme}"
        if module_name not in sys.modules:
            module = types.ModuleType(module_name, f"settings of the HIS task {ENV_NAME}/{scheme}")
            module.TaskConfig = TaskConfig
            sys.modules[module_name] = module
            setattr(package, scheme, module)
    try:
        from hydra.core.config_store import ConfigStore
    except ImportError:  # Hydra is optional for BenchMARL's Python API
        return
    store = ConfigStore.instance()
    for scheme in SCHEMES:
        store.store(name=f"{ENV_NAME}_{scheme}_config", group="task", node=TaskConfig)


def hydra_search_path() -> str:
    """The Hydra search-path entry holding `task/his/*.yaml` and `experiment/his.yaml`."""
    return f"file://{CONFIG_DIR}"
