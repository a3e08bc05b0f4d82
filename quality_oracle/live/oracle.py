"""`LiveDiffusionOracle`: per-UE quality from real HIS generations, scored with CLIP (Eq. 6).

It implements the `QualityOracle` protocol (`quality_oracle.base`) with ``needs_prompts = True``.
For each request it groups the UEs by cluster, runs the HIS two-phase sampler (`sampler`) with
the request's step split (x_n, y_n, z_n), prompts and, when ``request.ecdiff`` is set, EC-Diff
on the ES, decodes the images and returns their CLIP alignment with the personal prompts.

SIM and NPI follow ``request.sim_npi``: on, the common phase uses ``guidance_common`` (w1) and the
personal phases ``guidance_personal`` (w2) with the NPI negative prompt; off (the paper's
baseline), both phases use ``guidance_personal`` and the empty negative prompt.

Options come from the env config's ``oracle.live`` mapping (see `LIVE_OPTION_HELP`); unknown keys
are rejected. Models load lazily on the first cache miss; a disk cache (`cache`) answers repeated
generations without touching a model.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from quality_oracle.ecdiff import real_call_mask
from quality_oracle.base import QualityRequest
from quality_oracle.live.cache import ScoreCache, score_key
from his_common.storage import cache_root
from quality_oracle.live.sampler import (ClusterPlan, Guidance, HISSampler, UnsupportedPipelineError,
                                         UserPlan)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
SUPPORTED_PIPELINES = ("StableDiffusion3Pipeline", "StableDiffusionPipeline", "StableDiffusionXLPipeline")
NO_CUDA = "CUDA is not available; set oracle.live.device: cpu to run (slowly) on the CPU"

LIVE_OPTION_HELP = {
    "es_model": "ES diffusion pipeline: a diffusers folder (model_index.json) or hub id (required)",
    "ue_model": "UE pipeline of the same latent space (default: es_model)",
    "clip_model": "CLIP scorer, a transformers CLIPModel folder or hub id (required; paper: ViT-L/14@336px)",
    "dtype": "bfloat16 | float16 | float32 for the diffusion models (CLIP runs in float32)",
    "device": "torch device, 'cuda' (default), 'cuda:1', or 'cpu'",
    "batch_size": "images per batched forward pass (classifier-free guidance doubles the rows)",
    "height": "image height in pixels (1024 in the HIS experiment)",
    "width": "image width in pixels",
    "guidance_common": "w1 of the common phase with SIM on (2.0, HIS Sec. III-C)",
    "guidance_personal": "w2 of the personal phases (8.0 in the HIS experiment)",
    "cache": "keep CLIP scores in a disk cache and answer repeated generations from it (true); an unusable "
             "cache file is moved aside and rebuilt, an unwritable folder runs without cache (with a warning)",
    "cache_dir": "score cache folder (null: $HIS_MARL_CACHE/live_oracle, else ~/.cache/his_marl/live_oracle)",
    "seed_offset": "added to every cluster's seed (vary to draw other images)",
    "max_sequence_length": "T5 tokens of SD3 prompts (256 as the SD3 pipeline)",
}


class LiveOracleError(ValueError):
    """A live-oracle option is wrong, or a model cannot be found or driven."""


@dataclass
class LiveOracleOptions:
    """Validated ``oracle.live`` options."""

    es_model: str = ""
    clip_model: str = ""
    ue_model: str | None = None
    dtype: str = "bfloat16"
    device: str = "cuda"
    batch_size: int = 8
    height: int = 1024
    width: int = 1024
    guidance_common: float = 2.0
    guidance_personal: float = 8.0
    cache: bool = True
    cache_dir: str | None = None  # None: $HIS_MARL_CACHE/live_oracle, else ~/.cache/his_marl/live_oracle
    seed_offset: int = 0
    max_sequence_length: int = 256

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> "LiveOracleOptions":
        options = dict(options or {})
        allowed = [f.name for f in fields(cls)]
        for key in options:
            if key not in allowed:
                raise LiveOracleError(f"unknown oracle.live option {key!r}; allowed keys: {', '.join(allowed)}")
        opts = cls(**options)
        opts.validate()
        return opts

    def validate(self) -> None:
        for name in ("es_model", "clip_model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise LiveOracleError(f"oracle.live.{name} is required: {LIVE_OPTION_HELP[name]}")
        if self.ue_model is not None and (not isinstance(self.ue_model, str) or not self.ue_model):
            raise LiveOracleError("oracle.live.ue_model must be a path or hub id, or null for es_model")
        if self.dtype not in DTYPES:
            raise LiveOracleError(f"oracle.live.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.device, str) or not self.device.split(":")[0] in ("cuda", "cpu"):
            raise LiveOracleError(f"oracle.live.device must be 'cuda', 'cuda:N' or 'cpu', got {self.device!r}")
        for name in ("batch_size", "height", "width", "max_sequence_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LiveOracleError(f"oracle.live.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed_offset, int) or isinstance(self.seed_offset, bool):
            raise LiveOracleError(f"oracle.live.seed_offset must be an integer, got {self.seed_offset!r}")
        for name in ("guidance_common", "guidance_personal"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise LiveOracleError(f"oracle.live.{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.cache, bool):
            raise LiveOracleError(f"oracle.live.cache must be true or false, got {self.cache!r}")
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise LiveOracleError(f"oracle.live.cache_dir must be a folder path or null, got {self.cache_dir!r}")
        if self.cache_dir is not None and self.cache:
            folder = Path(self.cache_dir).expanduser()
            existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
            if existing is not None and not existing.is_dir():
                raise LiveOracleError(f"oracle.live.cache_dir={str(self.cache_dir)!r}: {str(existing)!r} is a "
                                      "file, not a folder; give a folder (created if missing), null for "
                                      "$HIS_MARL_CACHE/live_oracle, or set oracle.live.cache: false")

    @property
    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        return cache_root() / "live_oracle"


# ----------------------------------------------------------------------------- model loading


def _looks_local(model: str) -> bool:
    """A path rather than a hub id ("org/name"): absolute, ~ or ., or more than one '/'."""
    return (model.startswith(("/", "~", ".")) or model.count("/") > 1 or "\\" in model
            or Path(model).expanduser().exists())


def check_model_source(option: str, model: str, expected: str, marker: str) -> None:
    """Fail early on a local path that does not exist or lacks the file that marks its kind."""
    if not _looks_local(model):
        return
    path = Path(model).expanduser()
    if not path.exists():
        raise LiveOracleError(f"oracle.live.{option}: path {str(path)!r} does not exist; expected {expected}")
    if path.is_file():
        raise LiveOracleError(f"oracle.live.{option}: {str(path)!r} is a file; expected {expected} "
                              "(single-file checkpoints are not supported: load them with diffusers and "
                              "save_pretrained to a folder)")
    if not (path / marker).is_file():
        raise LiveOracleError(f"oracle.live.{option}: {str(path)!r} has no {marker}; expected {expected}")
    if marker == "model_index.json":
        try:
            class_name = json.loads((path / marker).read_text()).get("_class_name")
        except ValueError as err:
            raise LiveOracleError(f"oracle.live.{option}: cannot read {path / marker}: {err}") from err
        if class_name not in SUPPORTED_PIPELINES:
            raise LiveOracleError(f"oracle.live.{option}: unsupported pipeline type {class_name!r} in "
                                  f"{str(path)!r}; supported: {', '.join(SUPPORTED_PIPELINES)}")


PIPELINE_EXPECTED = ("a diffusers pipeline folder with model_index.json "
                     "(DiffusionPipeline.save_pretrained or a hub snapshot)")
CLIP_EXPECTED = "a transformers CLIPModel folder with config.json (and its tokenizer)"


def load_pipeline(model: str, dtype: torch.dtype, device: str):
    """Load a diffusers pipeline (the live oracle's one loader; tests replace it)."""
    from diffusers import DiffusionPipeline

    try:
        with warnings.catch_warnings():  # diffusers >= 0.36 renames torch_dtype; older ones need it
            warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
            pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise LiveOracleError(f"cannot load the diffusion pipeline {model!r}: expected {PIPELINE_EXPECTED}, "
                              f"locally or in the Hugging Face cache ({err})") from err
    if type(pipe).__name__ not in SUPPORTED_PIPELINES:
        raise LiveOracleError(f"unsupported pipeline type {type(pipe).__name__} for {model!r}; "
                              f"supported: {', '.join(SUPPORTED_PIPELINES)}")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_clip(model: str, device: str, batch_size: int):
    """Load the CLIP scorer (tests replace it)."""
    from quality_oracle.live.clip_score import CLIPScorer

    try:
        return CLIPScorer.from_pretrained(model, device=device, batch_size=batch_size)
    except (OSError, ValueError) as err:
        raise LiveOracleError(f"cannot load the CLIP model {model!r}: expected {CLIP_EXPECTED} ({err})") from err


def cluster_seed(request_seed: int, cluster: int, offset: int = 0) -> int:
    """The seed of a cluster's one initial noise: a hash of (offset, request seed, cluster)."""
    digest = hashlib.sha256(f"{offset}/{int(request_seed)}/{int(cluster)}".encode()).hexdigest()
    return int(digest[:15], 16)


# ----------------------------------------------------------------------------- the oracle


class LiveDiffusionOracle:
    """Quality oracle that generates each UE's image with the HIS sampler and scores it with CLIP."""

    needs_prompts = True

    def __init__(self, options: Mapping[str, Any] | LiveOracleOptions | None = None, **overrides: Any):
        if isinstance(options, LiveOracleOptions):
            options = asdict(options)
        self.options = LiveOracleOptions.from_mapping({**dict(options or {}), **overrides})
        o = self.options
        if o.device.startswith("cuda") and not torch.cuda.is_available():
            raise LiveOracleError(NO_CUDA)
        check_model_source("es_model", o.es_model, PIPELINE_EXPECTED, "model_index.json")
        if o.ue_model:
            check_model_source("ue_model", o.ue_model, PIPELINE_EXPECTED, "model_index.json")
        check_model_source("clip_model", o.clip_model, CLIP_EXPECTED, "config.json")
        self.cache = ScoreCache(o.cache_path) if o.cache else None
        self._sampler: HISSampler | None = None
        self._scorer = None
        self.generated = 0  # images generated (cache misses) so far

    # -- lazy models
    @property
    def sampler(self) -> HISSampler:
        if self._sampler is None:
            o = self.options
            es = load_pipeline(o.es_model, DTYPES[o.dtype], o.device)
            ue = es
            if o.ue_model and o.ue_model != o.es_model:
                ue = load_pipeline(o.ue_model, DTYPES[o.dtype], o.device)
            try:
                self._sampler = HISSampler(es, ue, batch_size=o.batch_size, height=o.height, width=o.width,
                                           guidance=Guidance(o.guidance_common, o.guidance_personal),
                                           max_sequence_length=o.max_sequence_length)
            except UnsupportedPipelineError as err:
                raise LiveOracleError(str(err)) from err
        return self._sampler

    @property
    def scorer(self):
        if self._scorer is None:
            self._scorer = load_clip(self.options.clip_model, self.options.device, self.options.batch_size)
        return self._scorer

    # -- protocol
    def evaluate(self, request: QualityRequest) -> np.ndarray:
        """CLIP alignment Q_n of each UE's HIS image with its personal prompt, shape (N,)."""
        o = self.options
        x = np.asarray(request.common_steps, dtype=np.int64)
        y = np.asarray(request.es_personal_steps, dtype=np.int64)
        z = np.asarray(request.ue_steps, dtype=np.int64)
        cluster = np.asarray(request.cluster, dtype=np.int64)
        n_users = len(x)
        if not (len(y) == len(z) == len(cluster) == n_users):
            raise ValueError("common_steps, es_personal_steps, ue_steps and cluster must have one entry per UE")
        if len(request.personal_prompts) != n_users:
            raise ValueError(f"the live oracle needs one personal prompt per UE: got "
                             f"{len(request.personal_prompts)} for {n_users} UEs")
        if n_users and len(request.public_prompts) <= int(cluster.max()):
            raise ValueError(f"the live oracle needs a public prompt per cluster: got "
                             f"{len(request.public_prompts)} for cluster ids up to {int(cluster.max())}")
        sim_npi = bool(request.sim_npi)
        if sim_npi and len(request.negative_prompts) != n_users:
            raise ValueError(f"with SIM/NPI on the live oracle needs one negative prompt per UE: got "
                             f"{len(request.negative_prompts)} for {n_users} UEs")
        guidance = Guidance(o.guidance_common if sim_npi else o.guidance_personal, o.guidance_personal)
        negatives = [str(request.negative_prompts[n] or "") if sim_npi else "" for n in range(n_users)]
        ecdiff = request.ecdiff
        common_run = {int(m): int(x[cluster == m].max()) for m in np.unique(cluster)}

        keys = []
        for n in range(n_users):
            m = int(cluster[n])
            fields_ = {
                "es_model": o.es_model, "ue_model": o.ue_model or o.es_model, "clip_model": o.clip_model,
                "dtype": o.dtype, "height": o.height, "width": o.width,
                "max_sequence_length": o.max_sequence_length,
                "w_common": guidance.common if x[n] > 0 else None, "w_personal": guidance.personal,
                "public": request.public_prompts[m] if x[n] > 0 else None,
                "personal": request.personal_prompts[n], "negative": negatives[n],
                "steps": [int(x[n]), int(y[n]), int(z[n])],
                "seed": cluster_seed(request.seed, m, o.seed_offset),
                "ecdiff": None,
            }
            if ecdiff is not None:
                prefix = real_call_mask(0, common_run[m], ecdiff.pre_inference_calls, ecdiff.approx_steps,
                                        ecdiff.reinit_calls, exits=x[cluster == m])[: int(x[n])]
                fields_["ecdiff"] = [ecdiff.pre_inference_calls, ecdiff.approx_steps,
                                     float(ecdiff.smoothing), ecdiff.reinit_calls,
                                     "".join("1" if b else "0" for b in prefix)]
            keys.append(score_key(fields_))

        scores = np.full(n_users, np.nan)
        cached = self.cache.get_many(keys) if self.cache is not None else {}
        for n, key in enumerate(keys):
            if key in cached:
                scores[n] = cached[key]
        missing = [n for n in range(n_users) if np.isnan(scores[n])]
        if not missing:
            return scores

        plans, members = [], []
        for m in sorted({int(cluster[n]) for n in missing}):
            idx = [n for n in missing if cluster[n] == m]
            users = tuple(UserPlan(request.personal_prompts[n], negatives[n], int(x[n]), int(y[n]), int(z[n]))
                          for n in idx)
            plans.append(ClusterPlan(request.public_prompts[m], users,
                                     seed=cluster_seed(request.seed, m, o.seed_offset),
                                     common_run_steps=common_run[m]))
            members.append(idx)
        images, _ = self.sampler.generate(plans, ecdiff=ecdiff, guidance=guidance)
        new = []
        for idx, imgs in zip(members, images):
            values = self.scorer.score(imgs, [request.personal_prompts[n] for n in idx])
            for n, value in zip(idx, values):
                scores[n] = float(value)
                new.append((keys[n], float(value), {"x": int(x[n]), "y": int(y[n]), "z": int(z[n]),
                                                    "personal": request.personal_prompts[n]}))
        self.generated += len(new)
        if self.cache is not None:
            self.cache.put_many(new)
        return scores
