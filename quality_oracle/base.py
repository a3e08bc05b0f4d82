"""The protocol between the environment and whatever judges image quality.

The environment builds one `QualityRequest` per decision point, for all UEs at once, and asks
its oracle for the per-UE quality Q_n (the CLIP alignment of the final image with the personal
prompt, Eq. 6). The fitted HIQM answers from the common steps and similarity alone (Eq. 7); a
live oracle runs the HIS two-phase sampler on a GPU and needs the prompts and the step split.
The environment never knows which one it has.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from quality_oracle.ecdiff import ECDiffSchedule


@dataclass
class QualityRequest:
    """Everything known about one decision point's generations, vectorised over UEs."""

    common_steps: np.ndarray  # x_n, int (N,)
    es_personal_steps: np.ndarray  # y_n, int (N,)
    ue_steps: np.ndarray  # z_n, int (N,)
    similarity: np.ndarray  # phi_{n,m(n)}, float (N,), Eq. (5)
    cluster: np.ndarray  # m(n), int (N,)
    sim_npi: bool  # SIM and NPI on (iota = 1 in Eq. 7)
    approximated_es_steps: np.ndarray  # ES steps of UE n served by EC-Diff approximation, int (N,)
    personal_prompts: list[str] = field(default_factory=list)
    public_prompts: list[str] = field(default_factory=list)  # one per cluster
    negative_prompts: list[str] = field(default_factory=list)  # NPI, one per UE ("" when off)
    ecdiff: ECDiffSchedule | None = None
    seed: int = 0


@runtime_checkable
class QualityOracle(Protocol):
    """Anything that turns a `QualityRequest` into per-UE quality."""

    #: True if the oracle reads the prompt texts (the env then generates NPI negatives for it).
    needs_prompts: bool

    def evaluate(self, request: QualityRequest) -> np.ndarray:
        """Quality Q_n of each UE's final image, float array of shape (N,)."""
        ...
