"""Random draws in each array library's own way, for the dynamics' thin sampling wrappers.

Every process is a pure transition of its state and of standard draws (uniforms on [0, 1) or
standard normals) that a wrapper takes from a generator: a `numpy.random.Generator` gives numpy
float64 arrays (the PettingZoo env), a `torch.Generator` gives tensors on the generator's device
(the vectorised env; dtype: torch's default unless given). Feeding the same draws to the numpy
and the torch transition gives the same result, which is how the two envs are held equal.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _torch_generator(generator: Any):
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(generator, torch.Generator):
        return torch
    raise TypeError(f"a random generator must be a numpy.random.Generator or a torch.Generator, "
                    f"got {type(generator).__name__}")


def uniform(generator: Any, shape: tuple[int, ...], dtype: Any = None):
    """Uniform draws on [0, 1) of `shape`."""
    if isinstance(generator, np.random.Generator):
        return generator.random(shape)
    torch = _torch_generator(generator)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)


def standard_normal(generator: Any, shape: tuple[int, ...], dtype: Any = None):
    """Standard normal draws N(0, 1) of `shape`."""
    if isinstance(generator, np.random.Generator):
        return generator.standard_normal(shape)
    torch = _torch_generator(generator)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
