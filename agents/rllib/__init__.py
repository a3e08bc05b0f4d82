"""The RLlib backend: the learners' algorithm config (ippo.py: ippo, ppo-shared, mappo), the
PettingZoo-to-RLlib env adapter (env_adapter.py), the RLModule (modules.py), the PPO learner
(learner.py) with its reward normalisation connector (normalization.py), the env runner
(env_runner.py) and the metrics callback (callbacks.py).

This package imports nothing at import time: its modules need Ray, which only the RLlib backend
requires. RLlib's checkpoints name these modules by import path (`agents.rllib.modules...`).
"""
