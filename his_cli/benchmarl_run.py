"""BenchMARL's Hydra run script with the HIS tasks registered.

    python -m his_cli.benchmarl_run algorithm=mappo task=his/his experiment=his
    python -m his_cli.benchmarl_run algorithm=qmix task=his/cfis experiment=his task.num_ues=10 +reward=team
    python -m his_cli.benchmarl_run -m algorithm=ippo,mappo task=his/his,his/iis seed=0,1 experiment=his

Everything after the module name is BenchMARL's (Hydra's) command line: `algorithm=`, `task=`,
`experiment=`, `model=`, `seed=`, and `section.key=value` overrides. The HIS tasks are `his/his`,
`his/ppgfis`, `his/cfis` and `his/iis` (settings: agents.benchmarl.task); `experiment=his`
selects the CPU-sized settings in configs/benchmark/experiment/his.yaml, `+reward=team` (or
`individual`, `difference`) the reward mode.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from agents.benchmarl import task as benchmarl_task

    from benchmarl.run import hydra_experiment

    benchmarl_task.register()
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(arg.startswith("hydra.searchpath") for arg in args):
        args.append(f"hydra.searchpath=[{benchmarl_task.hydra_search_path()}]")
    sys.argv = [sys.argv[0]] + args
    hydra_experiment()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
