"""Step capture: the draw-free parts of a vector env step as compiled, CUDA-graphed calls.

A `HISVecEnv` step evaluates its decision points through the shared formula code
(`his_env.vector.core`): about 1,200 small torch operations per step with the difference reward.
On a GPU each is a kernel launch, so up to tens of thousands of envs a step costs the same few
milliseconds whatever B is: the time goes to launching, not to work. The env captures the
draw-free part of its step as one graph: with the dynamics off, the evaluation of the actions (the
results the step reports, the rewards) and the next decision points from their draws (bank rows,
distances, channel, observation; `HISVecEnv._advancement`); with the Markov-game dynamics, the
slot's charges, the evaluation, the transition to the next slot (`SlotDynamics.settle`, `evolve`
from the slot's draws) and its decision points and observation (`HISVecEnv._slot_advancement`).
`captured(function)` returns the same function built, on its first call, by
`torch.compile(mode="reduce-overhead")`: inductor fuses the element-wise chains into far fewer
kernels and replays them as one CUDA graph. The results are those of the uncaptured function to
float rounding (fused kernels may sum in another order: relative differences ~1e-15 in float64);
nothing else changes (random draws stay outside, on the env's own generator, in the same order).

The first call compiles (tens of seconds; inductor keeps the compiled code in its disk cache, so
a later process with the same shapes and config builds faster), and so does each new shape or
config in a process, up to torch's `recompile_limit` of variants per function, beyond which torch
runs the function uncompiled (same results, eager speed) and says so in a warning. The outputs
are copied out of the graph's memory, which the next replay overwrites, so results kept from
earlier steps stay valid. Where the compiler cannot run (no C compiler or Triton for the device),
the first call warns and the env steps uncaptured from then on.

Capture is on by default on CUDA devices and off on the CPU, where inductor's code was measured
slower than torch's own kernels (B = 1,024, N = 50, difference reward, float64, one thread:
55 ms compiled against 31 ms eager per evaluation, after a 44 s compile); see the Benchmarks
page. While torch traces, `his_common.arrays` loops that stop early run their fixed count
instead (`may_any`: their remaining passes change nothing), and checks become device-side
assertions (`check`), so no value is read back to the host.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import torch


def resolve_capture(capture: bool | None, device: torch.device) -> bool:
    """Whether to capture: `capture` itself, or (None) on for CUDA devices, off on the CPU."""
    if capture is None:
        return device.type == "cuda"
    if not isinstance(capture, bool):
        raise ValueError(f"capture={capture!r}; allowed: None (on for CUDA devices, off on the CPU), True or False")
    return capture


def copied(value: Any) -> Any:
    """The tensors of a nested value (dicts, tuples, lists, dataclasses) copied, each to its own
    memory; everything else as is. Copies a captured call's results out of the graph's memory, and
    makes a state built outside a capture (where two fields may be one tensor) look like one built
    inside, so that the compiled code serves both without compiling again."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: copied(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, dict):
        return {key: copied(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(copied(item) for item in value)
    return value


def captured(function: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """`function` (tensors in, a nested dict/tuple of tensors out, no random draws, no host reads)
    compiled on first call: CUDA graphs on a CUDA device, fused kernels only on the CPU."""
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    compiled = torch.compile(function, mode=mode)  # shapes: static first, dynamic once one changes
    state = {"call": None}

    def run(*args: Any) -> Any:
        if state["call"] is None:  # the first call compiles; a compiler that fails leaves the step uncaptured
            try:
                out = copied(compiled(*args))
            except torch._dynamo.exc.TorchDynamoException as exc:
                warnings.warn(f"step capture failed, so the env steps uncaptured (same results, more time per "
                              f"step; HISVecEnv(capture=False) skips the attempt): {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}", RuntimeWarning, stacklevel=2)
                state["call"] = function
                return function(*args)
            state["call"] = lambda *a: copied(compiled(*a))
            return out
        return state["call"](*args)

    run.__wrapped__ = function
    # True once compiled, False once the compiler failed and the function runs uncaptured, None before the first call
    run.is_captured = lambda: None if state["call"] is None else state["call"] is not function
    return run
