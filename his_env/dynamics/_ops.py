"""Array operations the dynamics need beyond `his_common.arrays`, spelled for numpy and torch.

`his_common.arrays.namespace` gives the shared vocabulary; these few functions (trigonometry,
hypot, remainder, rounding) dispatch on the same rule: torch if the argument is a tensor, else
numpy. Kept private to `his_env.dynamics` until another part of the simulator needs them.
"""
from __future__ import annotations

import numpy as np

from his_common.arrays import is_tensor, namespace


def cos(x):
    return x.cos() if is_tensor(x) else np.cos(x)


def sin(x):
    return x.sin() if is_tensor(x) else np.sin(x)


def atan2(y, x):
    return y.atan2(x) if is_tensor(y) else np.arctan2(y, x)


def hypot(x, y):
    return x.hypot(y) if is_tensor(x) else np.hypot(x, y)


def absolute(x):
    return x.abs() if is_tensor(x) else np.abs(x)


def remainder(x, divisor):
    """x mod divisor with the sign of the divisor (Python's %), for ints and floats."""
    return x.remainder(divisor) if is_tensor(x) else np.mod(x, divisor)


def round_half_up(x):
    """floor(x + 0.5): one rounding rule for both libraries (numpy and torch round halves to even)."""
    return namespace(x).floor(x + 0.5)


def log1p(x):
    return x.log1p() if is_tensor(x) else np.log1p(x)


def stack(arrays, axis: int = -1):
    """Arrays of one shape stacked along a new axis."""
    if any(is_tensor(a) for a in arrays):
        import torch

        return torch.stack(list(arrays), dim=axis)
    return np.stack(arrays, axis=axis)
