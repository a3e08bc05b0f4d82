"""Live diffusion quality: the HIS two-phase sampler, EC-Diff on the ES, CLIP scoring, score cache.

    from quality_oracle.live import LiveDiffusionOracle
    oracle = LiveDiffusionOracle({"es_model": "stabilityai/stable-diffusion-3-medium-diffusers",
                                  "clip_model": "openai/clip-vit-large-patch14-336"})

Modules: `sampler` (HIS sampler over diffusers components), `ecdiff_sampler` (EC-Diff Alg. 1),
`greedy_search` (EC-Diff Alg. 2-3, SSIM), `clip_score` (Eq. 6), `cache` (disk cache of scores),
`oracle` (the `QualityOracle`). Names are imported on first use, so importing this package does
not import torch or diffusers.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "LiveDiffusionOracle": "oracle", "LiveOracleOptions": "oracle", "LiveOracleError": "oracle",
    "HISSampler": "sampler", "ClusterPlan": "sampler", "UserPlan": "sampler", "Guidance": "sampler",
    "SamplerStats": "sampler", "UnsupportedPipelineError": "sampler", "make_backend": "sampler",
    "KStepNoiseApproximator": "ecdiff_sampler",
    "CLIPScorer": "clip_score",
    "ScoreCache": "cache",
    "ssim": "greedy_search", "two_stage_search": "greedy_search", "ECDiffObjective": "greedy_search",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"quality_oracle.live.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'quality_oracle.live' has no attribute {name!r}")
