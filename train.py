"""Train IPPO (the paper's MIRA learner), shared-parameter PPO or MAPPO on the HIS env with RLlib.

    python train.py                                   # N = 50, HIS, fitted HIQM, IPPO, 5 minutes
    python train.py --config configs/train_small.yaml --iterations 30
    python train.py --config configs/train_paper_reward.yaml   # the paper's per-UE reward, Eq. (33)
    python train.py --resume runs/my-run               # continue from the latest checkpoint
    python train.py --help                             # every flag

The default training reward is the difference reward (each UE's marginal contribution to the
network utility), not the paper's Eq. (33); configs/train_paper_reward.yaml trains on Eq. (33).
The command line lives in his_cli/train.py, the training run in agents/training/.
"""
from his_cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
