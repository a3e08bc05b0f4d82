"""Experiments on the HIS model: the paper's figures and the HIQM measurement, as importable objects."""
