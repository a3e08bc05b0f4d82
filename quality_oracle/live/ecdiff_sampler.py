"""EC-Diff k-step noise approximation (EC-Diff Alg. 1) for one ES denoising segment.

The ES runs two kinds of segments under HIS: a cluster's common run (public prompt) and each
user's personalised phase I (personal + NPI prompt). Which positions of a segment are real model
calls is decided in one place only, `quality_oracle.ecdiff` (`real_call_mask`, which the env's call
counting shares); this module turns that mask into model outputs:

* at a real position the model output is observed. While the segment has not approximated yet
  (its warm-up), the noise gradient is the difference of its last two real outputs
  (Alg. 1 line 6, EC-Diff Eq. 3); after approximated positions, the correcting call refreshes the
  gradient with smoothing alpha: ``delta = alpha * (eps_real - eps'_prev)`` (Alg. 1 line 15,
  EC-Diff Eq. 6);
* at an approximated position the output is extrapolated: ``eps'_t = eps_prev + delta``
  (Alg. 1 line 9, EC-Diff Eqs. 4-5), and becomes ``eps_prev`` of the next position.

"Noise" is whatever the model predicts and the scheduler consumes, after classifier-free guidance
(epsilon for DDIM UNets, the flow velocity for SD3). State is kept in float32.

Two corner cases the paper does not meet: if a segment approximates after only one real call
(``reinit_calls = 1``) the gradient is zero (the last output is reused); if it approximates before
any real call (``reinit_calls = 0`` in a personalised phase) it continues from the output and
gradient the common run had at the branch point (`carried`). A segment that must approximate
with neither is an error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from quality_oracle.ecdiff import real_call_mask
from quality_oracle.ecdiff import ECDiffSchedule


@dataclass
class NoiseState:
    """The extrapolation state: last model output (real or approximated) and noise gradient."""

    previous: torch.Tensor | None = None  # eps_prev, float32
    gradient: torch.Tensor | None = None  # delta, float32

    def clone(self) -> "NoiseState":
        return NoiseState(None if self.previous is None else self.previous.clone(),
                          None if self.gradient is None else self.gradient.clone())


class KStepNoiseApproximator:
    """EC-Diff Alg. 1 over one segment of `length` steps starting after `start` denoised steps.

    `exits` are the step counts (relative to `start`) after which a latent leaves the segment
    before its end: the members' x_n of a cluster's common run. The step before each is a real,
    correcting call (`quality_oracle.ecdiff.real_call_mask`).
    """

    def __init__(self, schedule: ECDiffSchedule, start: int, length: int,
                 carried: NoiseState | None = None, exits=()):
        self.smoothing = float(schedule.smoothing)  # alpha
        self.mask: np.ndarray = real_call_mask(start, length, schedule.pre_inference_calls,
                                               schedule.approx_steps, schedule.reinit_calls, exits)
        self.state = NoiseState()
        self._carried = carried
        self._approximated = False  # any approximated position yet in this segment
        self.real_calls = 0

    def is_real(self, position: int) -> bool:
        return bool(self.mask[position])

    def approximate(self, position: int) -> torch.Tensor:
        """Extrapolated output at an approximated position (float32)."""
        if self.mask[position]:
            raise RuntimeError(f"position {position} is a real model call, not an approximation")
        if self.state.previous is None:
            if self._carried is None or self._carried.previous is None:
                raise ValueError(
                    "EC-Diff must approximate before any real model call in this segment; raise "
                    "pre_inference_calls / reinit_calls to at least 1")
            self.state = self._carried.clone()
        if self.state.gradient is None:
            self.state.gradient = torch.zeros_like(self.state.previous)
        approx = self.state.previous + self.state.gradient  # Alg. 1 line 9, Eq. (4)
        self.state.previous = approx
        self._approximated = True
        return approx

    def observe(self, position: int, output: torch.Tensor) -> None:
        """Record a real model output and refresh the noise gradient."""
        if not self.mask[position]:
            raise RuntimeError(f"position {position} is approximated, not a real model call")
        output = output.float()
        previous = self.state.previous
        if previous is not None:
            difference = output - previous
            if self._approximated:
                self.state.gradient = self.smoothing * difference  # Alg. 1 line 15, Eq. (6)
            else:
                self.state.gradient = difference  # Alg. 1 line 6, Eq. (3)
        self.state.previous = output
        self.real_calls += 1
