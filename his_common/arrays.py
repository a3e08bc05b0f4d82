"""One array vocabulary for numpy arrays and torch tensors, so each formula is written once.

The simulator's formulas (`his_env.system_model`, `his_env.allocation`, `his_env.channel`, the
EC-Diff schedule and the HIQM curve) run on numpy arrays in the PettingZoo env and on torch
tensors with leading batch dimensions (B envs, CPU or CUDA) in the vectorised env. They ask
`namespace(*arrays)` for the operations whose spelling differs between the two libraries
(axis/dim, take_along_axis/gather, bincount/scatter_add, ...). torch is imported only when a
tensor is seen, so numpy users never pay for it.

Conventions: float results keep the float dtype of the inputs (float64 in numpy; the tensors'
own float dtype in torch), integer results are int64, reductions take ``axis``.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


def is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def torch_compiling() -> bool:
    """Whether torch is compiling (tracing) the code that runs now; False where torch is not imported."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.compiler.is_compiling()


def namespace(*arrays: Any) -> "NumpyOps | TorchOps":
    """The operations for these arrays: torch if any of them is a tensor, else numpy. The float
    dtype is that of the first floating tensor among them (torch's default if none is)."""
    first = None
    for a in arrays:
        if is_tensor(a):
            if a.is_floating_point():
                return TorchOps.for_tensor(a)
            first = a if first is None else first
    return NUMPY if first is None else TorchOps.for_tensor(first)


class NumpyOps:
    """numpy spelling (float64, int64)."""

    is_torch = False
    float_dtype = np.float64

    def float(self, x):
        return np.asarray(x, dtype=np.float64)

    def int(self, x):
        return np.asarray(x, dtype=np.int64)

    def asarray(self, x, dtype=None):
        return np.asarray(x, dtype=dtype)

    def is_floating(self, x) -> bool:
        return np.asarray(x).dtype.kind == "f"

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def maximum(self, a, b):
        return np.maximum(a, b)

    def minimum(self, a, b):
        return np.minimum(a, b)

    def clip(self, x, lo, hi):
        return np.clip(x, lo, hi)

    floor = staticmethod(np.floor)
    sqrt = staticmethod(np.sqrt)
    exp = staticmethod(np.exp)
    log2 = staticmethod(np.log2)
    log10 = staticmethod(np.log10)

    def sum(self, x, axis=None, keepdims=False):
        return np.sum(x, axis=axis, keepdims=keepdims)

    def searchsorted(self, sorted_1d, x):
        """Index i with sorted[i-1] <= x < sorted[i] (side="right")."""
        return np.searchsorted(sorted_1d, x, side="right")

    def amax(self, x, axis):
        return np.max(x, axis=axis)

    def amin(self, x, axis, keepdims=False):
        return np.min(x, axis=axis, keepdims=keepdims)

    def float_bits(self, x):
        """The bit patterns of floats as signed integers of their width (int64 for float64): for
        floats >= 0 the order of the floats is the order of the integers, and consecutive floats are
        consecutive integers."""
        x = np.asarray(x)
        return x.view(np.int64 if x.dtype == np.float64 else np.int32)

    def bits_float(self, bits):
        """The floats whose bit patterns `float_bits` returned."""
        bits = np.asarray(bits)
        return bits.view(np.float64 if bits.dtype == np.int64 else np.float32)

    def any(self, x) -> bool:
        return bool(np.any(x))

    def may_any(self, x) -> bool:
        """`any`, for code that only skips work when it is False (see TorchOps.may_any)."""
        return bool(np.any(x))

    def check(self, ok, message) -> None:
        """ValueError(message()) unless every element of `ok` is true."""
        if not np.all(ok):
            raise ValueError(message())

    def count(self, mask, axis):
        """The true elements of a bool array along `axis` (int)."""
        return np.count_nonzero(mask, axis=axis).astype(np.int64)

    def add_product(self, x, a, b):
        """x + a b for integer arrays."""
        return x + a * b

    def argmax(self, x, axis):
        return np.argmax(x, axis=axis)

    def argmin(self, x, axis):
        return np.argmin(x, axis=axis)

    def cumsum(self, x, axis):
        return np.cumsum(x, axis=axis)

    def cummax(self, x, axis):
        return np.maximum.accumulate(x, axis=axis)

    def take_along_axis(self, x, index, axis=-1):
        """x[..., index[..., j]] along the last axis; leading dimensions broadcast."""
        if np.ndim(index) == 1:  # one index for every leading position (the PettingZoo env's case)
            return x[..., index]
        lead = np.broadcast_shapes(x.shape[:-1], index.shape[:-1])
        return np.take_along_axis(np.broadcast_to(x, lead + x.shape[-1:]),
                                  np.broadcast_to(index, lead + index.shape[-1:]), axis=-1)

    def broadcast_to(self, x, shape):
        return np.broadcast_to(x, shape)

    def rows(self, table, index):
        """table[index[...]] along the first axis: int index (...) -> (..., *table.shape[1:])."""
        return table[index]

    def arange(self, n, like=None):
        return np.arange(n, dtype=np.int64)

    def zeros(self, shape, dtype="float", like=None):
        return np.zeros(shape, dtype=np.float64 if dtype == "float" else np.int64 if dtype == "int" else bool)

    def one_hot(self, index, num_classes):
        """(..., N) int -> (..., N, C) float."""
        return np.eye(num_classes, dtype=np.float64)[index]

    def segment_sum(self, values, index, num_segments):
        """out[..., m] = sum of values[..., n] with index[..., n] == m (leading dims broadcast)."""
        if np.ndim(index) == 1:  # one index for every leading position
            if np.ndim(values) == 1:
                return np.bincount(index, weights=np.asarray(values, dtype=np.float64), minlength=num_segments)
            return np.asarray(values, dtype=np.float64) @ np.eye(num_segments)[index]
        values, index = np.broadcast_arrays(values, index)
        lead = values.shape[:-1]
        rows = int(np.prod(lead, dtype=np.int64))
        flat = (index.reshape(rows, -1) + num_segments * np.arange(rows)[:, None]).ravel()
        out = np.bincount(flat, weights=values.reshape(-1).astype(np.float64), minlength=rows * num_segments)
        return out.reshape(lead + (num_segments,))

    def segment_max(self, values, index, num_segments):
        """out[..., m] = max of values[..., n] with index[..., n] == m, 0 for an empty segment (values >= 0)."""
        member = np.arange(num_segments) == np.asarray(index)[..., None]
        return np.where(member, np.asarray(values)[..., None], 0).max(axis=-2)

    def add_at_last_axis(self, x, index, delta):
        """x[..., index[...]] += delta[...] in place (one position per row)."""
        m = x.shape[-1]
        flat = x.reshape(-1, m)
        np.add.at(flat, (np.arange(flat.shape[0]), np.broadcast_to(index, x.shape[:-1]).ravel()),
                  np.broadcast_to(delta, x.shape[:-1]).ravel())
        return x

    def copy(self, x):
        return np.array(x, copy=True)


NUMPY = NumpyOps()


class TorchOps:
    """torch spelling; created per (float dtype, device) of the tensors it serves."""

    is_torch = True
    _cache: dict = {}

    def __init__(self, float_dtype, device):
        import torch

        self.torch = torch
        self.float_dtype = float_dtype
        self.device = device

    @classmethod
    def for_tensor(cls, t) -> "TorchOps":
        float_dtype = t.dtype if t.is_floating_point() else _default_float()
        if torch_compiling():  # a fresh one: a lookup would make the compiled code depend on the cache's keys
            return cls(float_dtype, t.device)
        key = (float_dtype, t.device)
        ops = cls._cache.get(key)
        if ops is None:
            ops = cls._cache[key] = cls(float_dtype, t.device)
        return ops

    def float(self, x):
        if is_tensor(x):
            return x if x.dtype == self.float_dtype else x.to(self.float_dtype)
        return self.torch.as_tensor(x, dtype=self.float_dtype, device=self.device)

    def int(self, x):
        if is_tensor(x):
            return x if x.dtype == self.torch.int64 else x.to(self.torch.int64)
        return self.torch.as_tensor(x, dtype=self.torch.int64, device=self.device)

    def asarray(self, x, dtype=None):
        if is_tensor(x):
            return x
        return self.torch.as_tensor(np.asarray(x), device=self.device)

    def is_floating(self, x) -> bool:
        return x.is_floating_point() if is_tensor(x) else np.asarray(x).dtype.kind == "f"

    def where(self, cond, a, b):
        return self.torch.where(cond, a, b)

    def maximum(self, a, b):
        if not is_tensor(b):
            return self.torch.clamp(a, min=b)
        if not is_tensor(a):
            return self.torch.clamp(b, min=a)
        return self.torch.maximum(a, b)

    def minimum(self, a, b):
        if not is_tensor(b):
            return self.torch.clamp(a, max=b)
        if not is_tensor(a):
            return self.torch.clamp(b, max=a)
        return self.torch.minimum(a, b)

    def clip(self, x, lo, hi):
        return self.torch.clamp(x, lo, hi)

    def floor(self, x):
        return self.torch.floor(x)

    def sqrt(self, x):
        return self.torch.sqrt(x)

    def exp(self, x):
        return self.torch.exp(x)

    def log2(self, x):
        return self.torch.log2(x)

    def log10(self, x):
        return self.torch.log10(x)

    def searchsorted(self, sorted_1d, x):
        return self.torch.searchsorted(sorted_1d, x.contiguous(), right=True)

    def sum(self, x, axis=None, keepdims=False):
        if axis is None:
            return x.sum()
        return x.sum(dim=axis, keepdim=keepdims)

    def amax(self, x, axis):
        return x.amax(dim=axis)

    def amin(self, x, axis, keepdims=False):
        return x.amin(dim=axis, keepdim=keepdims)

    def float_bits(self, x):
        return x.view(self.torch.int64 if x.dtype == self.torch.float64 else self.torch.int32)

    def bits_float(self, bits):
        return bits.view(self.torch.float64 if bits.dtype == self.torch.int64 else self.torch.float32)

    def any(self, x) -> bool:
        return bool(x.any())

    def may_any(self, x) -> bool:
        """Whether any element is true, for code that only skips work when it is False (a loop that
        stops once nothing is left to do, a branch no element needs). While torch compiles or
        captures a step (`torch.compiler.is_compiling()`), True without looking: reading a value
        would split the capture, and doing the work anyway changes nothing (a loop's remaining passes
        add zero; a branch's values are masked out), so the result is the same."""
        if torch_compiling():
            return True
        return bool(x.any())

    def check(self, ok, message) -> None:
        """ValueError(message()) unless every element of `ok` is true. While torch compiles a step,
        an assertion on the device instead (no value read back): a failure stops the program with
        torch's device-side assertion error rather than a ValueError."""
        if torch_compiling():
            self.torch._assert_async(ok.all())
        elif not bool(ok.all()):
            raise ValueError(message())

    def count(self, mask, axis):
        # Eagerly, counted in bytes (no int64 copy of the mask), then widened. Not while torch compiles:
        # inductor cannot lower a bool tensor viewed as bytes (CUDA: a LoweringException, so the whole
        # step ran uncaptured; CPU: wrong counts), and it fuses the plain sum anyway.
        if mask.shape[axis] < 256 and not torch_compiling():
            return mask.view(self.torch.uint8).sum(dim=axis, dtype=self.torch.uint8).to(self.torch.int64)
        return mask.sum(dim=axis)

    def add_product(self, x, a, b):
        return self.torch.addcmul(x, a, b)  # one pass; exact for integers

    def argmax(self, x, axis):
        return x.argmax(dim=axis)

    def argmin(self, x, axis):
        return x.argmin(dim=axis)

    def cumsum(self, x, axis):
        return x.cumsum(dim=axis)

    def cummax(self, x, axis):
        return x.cummax(dim=axis).values

    def take_along_axis(self, x, index, axis=-1):
        if x.shape[:-1] != index.shape[:-1]:  # (torch.broadcast_shapes is slow Python: skipped when not needed)
            lead = self.torch.broadcast_shapes(x.shape[:-1], index.shape[:-1])
            x, index = x.expand(lead + x.shape[-1:]), index.expand(lead + index.shape[-1:])
        return self.torch.gather(x, -1, index)

    def broadcast_to(self, x, shape):
        return x.expand(shape) if is_tensor(x) else self.torch.as_tensor(x, device=self.device).expand(shape)

    def rows(self, table, index):
        # index_select on the flat index: several times faster on a CPU than advanced indexing
        return table.index_select(0, index.reshape(-1)).reshape(tuple(index.shape) + tuple(table.shape[1:]))

    def arange(self, n, like=None):
        return self.torch.arange(n, device=self.device)

    def zeros(self, shape, dtype="float", like=None):
        t = self.torch
        return t.zeros(shape, dtype=self.float_dtype if dtype == "float" else t.int64 if dtype == "int" else t.bool,
                       device=self.device)

    def one_hot(self, index, num_classes):
        return self.torch.nn.functional.one_hot(index, num_classes).to(self.float_dtype)

    def segment_sum(self, values, index, num_segments):
        shape = values.shape if values.shape == index.shape else self.torch.broadcast_shapes(values.shape, index.shape)
        values = values.expand(shape)
        out = self.torch.zeros(shape[:-1] + (num_segments,), dtype=values.dtype, device=values.device)
        return out.scatter_add_(-1, index.expand(shape), values)

    def segment_max(self, values, index, num_segments):
        shape = values.shape if values.shape == index.shape else self.torch.broadcast_shapes(values.shape, index.shape)
        values = values.expand(shape)
        out = self.torch.zeros(shape[:-1] + (num_segments,), dtype=values.dtype, device=values.device)
        return out.scatter_reduce_(-1, index.expand(shape), values, reduce="amax", include_self=True)

    def add_at_last_axis(self, x, index, delta):
        x.scatter_add_(-1, index.unsqueeze(-1), delta.to(x.dtype).unsqueeze(-1))
        return x

    def copy(self, x):
        return x.clone()


def _default_float():
    import torch

    return torch.get_default_dtype()
