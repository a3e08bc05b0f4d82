"""EC-Diff two-stage greedy search (EC-Diff Alg. 2-3) over (k, alpha), then the switching point s.

The objective (EC-Diff Eq. 12) weighs three scores of an edge-cloud generation:

* Quality = SSIM(x^cloud, x^ec-diff) (Eq. 9): structural similarity of the image with the
  cloud-only image of the same prompt and seed (`ssim`: Wang et al. 2004, 11x11 Gaussian window,
  sigma 1.5, K1 = 0.01, K2 = 0.03, as EC-Diff Eq. 32);
* Efficiency = (t^cloud - t^ec-diff) / (t^cloud - t^edge) (Eq. 10);
* Burden = (T - s) / (T - s') (Eq. 11), s' the earliest switching point allowed;

Objective = w1 Quality + w2 Efficiency + w3 Burden, with EC-Diff's weights 0.3 / 0.3 / 0.4
(its appendix A.5). Here s is the number of cloud (ES) steps before the handoff to the edge (UE).

Both stages are the same greedy line search over an ordered list of values (Alg. 2 lines 3-39,
Alg. 3): start in the middle, keep going in a direction while the objective improves, turn to the
nearest unvisited value on the other side after a worse one, and stop after three moves in a row
without improvement (or when no value is left in the chosen direction). Stage 1 repeats it for
k = 1..5 and stops once three k in a row failed to beat the best (Alg. 2 lines 40-50).

`ECDiffObjective` evaluates Eq. 12 with the live sampler: cloud model = the sampler's ES model,
edge model = its UE model, one prompt per cluster, times from a per-step cost model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from quality_oracle.ecdiff import real_calls
from quality_oracle.ecdiff import ECDiffSchedule

# ----------------------------------------------------------------------------- SSIM and Eqs. 9-12


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM (EC-Diff Eq. 32) of each image pair, (B, C, H, W) -> (B,), computed in float64.

    Local statistics use a normalised Gaussian window over the valid region (no padding), with
    population (biased) variances; the map is averaged over channels and positions. Images
    smaller than the window use the largest odd window that fits.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    size = min(window_size, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2
    g = _gaussian_window(size, sigma, x.dtype, x.device)
    channels = x.shape[1]
    wh = g.view(1, 1, size, 1).repeat(channels, 1, 1, 1)
    ww = g.view(1, 1, 1, size).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wh, groups=channels), ww, groups=channels)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def efficiency(t_cloud: float, t_edge: float, t_ecdiff: float) -> float:
    """Eq. (10): share of the cloud-to-edge time gap that EC-Diff closes."""
    if t_cloud == t_edge:
        raise ValueError("Efficiency (Eq. 10) is undefined when the edge model is as slow as the cloud model")
    return (t_cloud - t_ecdiff) / (t_cloud - t_edge)


def burden(total_steps: int, switch: int, earliest_switch: int) -> float:
    """Eq. (11): (T - s) / (T - s'); 1 at the earliest switch, smaller with more cloud steps."""
    return (total_steps - switch) / (total_steps - earliest_switch)


@dataclass(frozen=True)
class ObjectiveWeights:
    quality: float = 0.3  # w1, EC-Diff A.5
    efficiency: float = 0.3  # w2
    burden: float = 0.4  # w3


def objective(quality: float, efficiency_: float, burden_: float,
              weights: ObjectiveWeights = ObjectiveWeights()) -> float:
    """Eq. (12)."""
    return weights.quality * quality + weights.efficiency * efficiency_ + weights.burden * burden_


# ----------------------------------------------------------------------------- greedy search


@dataclass
class LineSearchResult:
    best: float | int
    value: float
    visited: list[tuple[float | int, float]] = field(default_factory=list)  # in evaluation order


def greedy_line_search(evaluate: Callable[[float | int], float], values: Sequence[float | int],
                       start: float | int, patience: int = 3) -> LineSearchResult:
    """The greedy search with early stopping of EC-Diff Alg. 2 (lines 3-39) and Alg. 3."""
    values = sorted(values)
    if start not in values:
        raise ValueError(f"start {start!r} is not one of the values {values}")
    current, direction, worse = start, 1, 0
    best_value = evaluate(current)
    result = LineSearchResult(current, best_value, [(current, best_value)])
    visited = {current}
    while worse < patience and len(visited) < len(values):
        if direction == 1:
            candidates = [v for v in values if v > current and v not in visited]
            nxt = candidates[0] if candidates else None
        else:
            candidates = [v for v in values if v < current and v not in visited]
            nxt = candidates[-1] if candidates else None
        if nxt is None:
            break
        current = nxt
        visited.add(current)
        value = evaluate(current)
        result.visited.append((current, value))
        if value > result.value:
            result.best, result.value, worse = current, value, 0
        else:
            worse += 1
            direction = -direction
    return result


ALPHA_VALUES = tuple(round(0.1 * i, 1) for i in range(1, 10))  # Alg. 2 line 1


@dataclass
class GreedySearchResult:
    approx_steps: int  # k
    smoothing: float  # alpha
    switch: int  # s
    value: float
    stage1: dict[int, LineSearchResult]
    stage2: LineSearchResult


def search_approximation(evaluate: Callable[[int, float], float], k_values: Sequence[int] = range(1, 6),
                         alpha_values: Sequence[float] = ALPHA_VALUES, alpha_start: float = 0.5,
                         patience: int = 3) -> tuple[int, float, float, dict[int, LineSearchResult]]:
    """Stage 1 (Alg. 2): best (k, alpha); returns (k, alpha, objective, per-k line searches)."""
    best_k, best_alpha, best_value, stalls = None, None, -np.inf, 0
    per_k: dict[int, LineSearchResult] = {}
    for k in k_values:
        line = greedy_line_search(lambda a, k=k: evaluate(k, a), alpha_values, alpha_start, patience)
        per_k[k] = line
        if line.value > best_value:
            best_k, best_alpha, best_value, stalls = k, line.best, line.value, 0
        else:
            stalls += 1
        if stalls >= patience:
            break
    return best_k, best_alpha, best_value, per_k


def two_stage_search(evaluate: Callable[[int, float, int], float], switch_values: Sequence[int],
                     switch_start: int, k_values: Sequence[int] = range(1, 6),
                     alpha_values: Sequence[float] = ALPHA_VALUES, alpha_start: float = 0.5,
                     patience: int = 3) -> GreedySearchResult:
    """EC-Diff Alg. 2 then Alg. 3. Stage 1 evaluates at s = `switch_start`."""
    k, alpha, _, stage1 = search_approximation(lambda k_, a: evaluate(k_, a, switch_start), k_values,
                                               alpha_values, alpha_start, patience)
    stage2 = greedy_line_search(lambda s: evaluate(k, alpha, s), switch_values, switch_start, patience)
    return GreedySearchResult(k, alpha, int(stage2.best), stage2.value, stage1, stage2)


# ----------------------------------------------------------------------------- live objective


class ECDiffObjective:
    """Eq. (12) of an EC-Diff configuration (k, alpha, s), measured with the live HIS sampler.

    Each prompt is its own cluster with one user: x = 0, y = s cloud (ES) steps with the k-step
    approximation after `pre_inference_calls` real calls, z = T - s edge (UE) steps. Quality is the
    mean SSIM against the cloud-only image (x = 0, y = T, z = 0, no approximation). Times follow
    ``t = (ES model calls) * es_step_cost + (UE steps) * ue_step_cost``; with no costs given they
    are proportional to the two denoisers' parameter counts.
    """

    def __init__(self, sampler, prompts: Sequence[str], total_steps: int, pre_inference_calls: int,
                 earliest_switch: int, weights: ObjectiveWeights = ObjectiveWeights(), seed: int = 0,
                 step_costs: tuple[float, float] | None = None):
        from quality_oracle.live.sampler import ClusterPlan, UserPlan

        self._cluster, self._user = ClusterPlan, UserPlan
        self.sampler = sampler
        self.prompts = list(prompts)
        self.total_steps = int(total_steps)
        self.pre_inference_calls = int(pre_inference_calls)
        self.earliest_switch = int(earliest_switch)
        self.weights = weights
        self.seed = int(seed)
        if step_costs is None:
            count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
            step_costs = (float(count(sampler.es.denoiser)), float(count(sampler.ue.denoiser)))
        self.es_cost, self.ue_cost = map(float, step_costs)
        self._reference = None
        self.evaluations: list[tuple[int, float, int, float]] = []

    def _plans(self, es_steps: int):
        T = self.total_steps
        return [self._cluster(p, (self._user(p, "", 0, es_steps, T - es_steps),), seed=self.seed + i)
                for i, p in enumerate(self.prompts)]

    def _images(self, es_steps: int, schedule: ECDiffSchedule | None) -> torch.Tensor:
        images, _ = self.sampler.generate(self._plans(es_steps), ecdiff=schedule)
        return torch.cat(images)

    @property
    def reference(self) -> torch.Tensor:
        if self._reference is None:
            self._reference = self._images(self.total_steps, None)  # cloud only
        return self._reference

    def __call__(self, approx_steps: int, smoothing: float, switch: int) -> float:
        T, p = self.total_steps, self.pre_inference_calls
        schedule = ECDiffSchedule(pre_inference_calls=p, approx_steps=int(approx_steps),
                                  smoothing=float(smoothing), reinit_calls=0)
        images = self._images(int(switch), schedule)
        quality = float(ssim(self.reference, images).mean())  # Eq. (9)
        calls = int(real_calls(0, int(switch), p, int(approx_steps), 0))
        t_cloud, t_edge = T * self.es_cost, T * self.ue_cost
        t_ecdiff = calls * self.es_cost + (T - int(switch)) * self.ue_cost
        value = objective(quality, efficiency(t_cloud, t_edge, t_ecdiff),
                          burden(T, int(switch), self.earliest_switch), self.weights)
        self.evaluations.append((int(approx_steps), float(smoothing), int(switch), value))
        return value
