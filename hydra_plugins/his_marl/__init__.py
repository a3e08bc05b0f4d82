"""Hydra plugin: BenchMARL's own run script finds the HIS tasks (`task=his/his` and the other schemes).

Hydra imports every module of the `hydra_plugins` namespace package on its Python path before it
composes a config. When Hydra builds its search path, this one registers the HIS tasks with BenchMARL
(`agents.benchmarl.task.register`) and adds `configs/benchmark`
(task/his/*.yaml, experiment/his.yaml, reward/*.yaml) to Hydra's search path, so that

    PYTHONPATH=/path/to/his-marl python -m benchmarl.run algorithm=mappo task=his/his experiment=his

works like a built-in task. Where BenchMARL is not installed the plugin does nothing.
"""
from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

try:
    from agents.benchmarl import task as _his_task
except ImportError:  # BenchMARL/TorchRL absent: nothing to register
    _his_task = None


class HISMarlSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if _his_task is not None and _his_task.CONFIG_DIR.is_dir():
            _his_task.register()
            search_path.append(provider="his-marl", path=_his_task.hydra_search_path())
