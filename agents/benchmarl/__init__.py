"""The BenchMARL backend: the HIS tasks (task.py, with their Hydra configs under configs/benchmark),
the experiment and its callbacks (experiment.py), the run loop (training.py) and reward/advantage
normalisation (normalization.py).

This package imports nothing at import time: the modules need BenchMARL (and TorchRL), which only
the BenchMARL backend requires; import them by name (`from agents.benchmarl.training import ...`).
BenchMARL's environments live with the learner too, so the simulator (his_env) knows no BenchMARL.
"""
