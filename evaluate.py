"""Evaluate trained checkpoints and baselines on the HIS env; reproduce the paper's Figs. 10-17.

    python evaluate.py --checkpoint runs/my-run                 # one table: the policy on the run's env
    python evaluate.py --policy search --policy random          # baselines on configs/default.yaml
    python evaluate.py --figure 10 --policy search              # HIS vs PPGFIS vs CFIS vs IIS
    python evaluate.py --figure 10 --checkpoint his=runs/his --checkpoint iis=runs/iis --policy search
    python evaluate.py --figure 15 --runs runs/fig15/*          # reward curves from train.py logs

Every policy runs every variant of the figure for `--episodes` episodes on the seeds
`--seed-base + i`. `python evaluate.py --help` lists every flag and figure; the figures, the grid
runner, the tables and the plots are the `experiments` package (experiments.runner.run_evaluation).
"""
from his_cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
