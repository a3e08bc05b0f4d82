"""The HIS two-phase sampler (HIS Sec. III-B, IV-B) over diffusers pipeline components.

One call generates every user's image of a decision point. For each cluster m:

* **common phase (ES)**: one run from the cluster's initial noise (one seed per cluster) with the
  public prompt at guidance w1 (SIM, Sec. III-C) for x_m^max = max_n x_n steps, handing the latent
  after x_n steps to each user n;
* **personalised phase I (ES)**: y_n steps with the personal prompt at guidance w2, the user's NPI
  negative prompt taking the place of the unconditional prediction (Eq. 4; the empty prompt when
  NPI is off);
* **personalised phase II (UE)**: the last z_n steps on the UE model (a second pipeline of the same
  latent space, possibly smaller), on the same scheduler timesteps; then the VAE decode.

The loop is this module's own, over the pipeline's components (no pipeline file is patched and
no latent leaves memory). All lanes (common runs and users, of all clusters) advance together
through the scheduler's timesteps: at step i every lane that needs the ES model goes into one
batched forward (in chunks of `batch_size` images, each with its own prompt and guidance), every
lane on the UE model into another (or the same one when the UE model is the ES model), and users
join as their x_n is reached. With EC-Diff (`ecdiff`), each ES segment calls the model only where
`quality_oracle.ecdiff.real_call_mask` says and extrapolates the noise elsewhere (`ecdiff_sampler`);
a common run calls the model at the last step of every member's x_n, so each user receives a
latent from a real call, as the env's call counting assumes.

Supported: Stable Diffusion 3 (`StableDiffusion3Pipeline`: SD3Transformer2DModel + flow-matching
Euler) and DDIM UNet pipelines (`StableDiffusionPipeline` SD 1.x/2.x, `StableDiffusionXLPipeline`;
their scheduler is replaced by a DDIM scheduler of the same config, as in EC-Diff). Classifier-free
guidance follows diffusers: a guidance scale <= 1 means no guidance (conditional prediction only).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

import torch

from quality_oracle.ecdiff import ECDiffSchedule
from quality_oracle.live.ecdiff_sampler import KStepNoiseApproximator

# ----------------------------------------------------------------------------- plans and results


@dataclass(frozen=True)
class UserPlan:
    """One user's generation: personal prompt, NPI negative prompt and step split (x, y, z)."""

    personal_prompt: str
    negative_prompt: str  # "" = the empty prompt (NPI off)
    common_steps: int  # x_n
    es_personal_steps: int  # y_n
    ue_steps: int  # z_n

    @property
    def total_steps(self) -> int:
        return self.common_steps + self.es_personal_steps + self.ue_steps


@dataclass(frozen=True)
class ClusterPlan:
    """A cluster: its public prompt, its users and the seed of its one initial noise."""

    public_prompt: str
    users: tuple[UserPlan, ...]
    seed: int
    common_run_steps: int | None = None  # length of the common run if longer than max x_n

    @property
    def max_common_steps(self) -> int:  # x_m^max (Sec. IV-B)
        return max([u.common_steps for u in self.users] + [self.common_run_steps or 0])


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance scales: w1 of the common phase (SIM), w2 of the personal phase."""

    common: float = 2.0  # w1, SIM (HIS Sec. III-C)
    personal: float = 8.0  # w2, the HIS experiment's personal guidance


@dataclass
class SamplerStats:
    """Model calls per lane and batched forward passes, for checks and accounting."""

    common_calls: list[list[int]] = field(default_factory=list)  # [cluster] -> ES calls of its run
    personal_calls: list[list[int]] = field(default_factory=list)  # [cluster][user] ES calls (y)
    ue_calls: list[list[int]] = field(default_factory=list)  # [cluster][user] UE calls (z)
    approximated: list[list[int]] = field(default_factory=list)  # [cluster][user] approx. y steps
    es_forwards: int = 0
    ue_forwards: int = 0


@dataclass
class SamplerResult:
    latents: list[torch.Tensor]  # per cluster: (users, C, h, w) final latents (unscaled)
    stats: SamplerStats


# ----------------------------------------------------------------------------- text conditioning


@dataclass
class TextEmbeddings:
    """Encoded prompts, one row per distinct prompt; `pooled` for SD3 / SDXL."""

    hidden: torch.Tensor  # (P, L, D)
    pooled: torch.Tensor | None = None  # (P, D2)

    def rows(self, index: torch.Tensor) -> "TextEmbeddings":
        return TextEmbeddings(self.hidden.index_select(0, index),
                              None if self.pooled is None else self.pooled.index_select(0, index))

    @staticmethod
    def cat(parts: Sequence["TextEmbeddings"]) -> "TextEmbeddings":
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return TextEmbeddings(torch.cat([p.hidden for p in parts]), pooled)


class PromptTable:
    """Distinct prompts of one run, encoded once by a backend; rows looked up by text."""

    def __init__(self, backend: "DenoiserBackend", prompts: Sequence[str], chunk: int = 16):
        self.index = {}
        for text in prompts:
            self.index.setdefault(text, len(self.index))
        texts = list(self.index)  # encoded in chunks: T5-XXL on 100 prompts at once is large
        self.embeddings = TextEmbeddings.cat([backend.encode(texts[i:i + chunk])
                                              for i in range(0, len(texts), chunk)])

    def rows(self, texts: Sequence[str]) -> TextEmbeddings:
        idx = torch.tensor([self.index[t] for t in texts], device=self.embeddings.hidden.device)
        return self.embeddings.rows(idx)


# ----------------------------------------------------------------------------- backends


class UnsupportedPipelineError(TypeError):
    """The diffusers pipeline is of a family the sampler does not drive."""


def _scheduler_step(scheduler, output: torch.Tensor, index: int, timestep, sample: torch.Tensor):
    # Lanes share the step index but not the scheduler call history: position the index-based
    # schedulers (flow-matching Euler) explicitly; DDIM reads only the timestep.
    if hasattr(scheduler, "_step_index"):
        scheduler._step_index = index
    return scheduler.step(output, timestep, sample, return_dict=False)[0]


class DenoiserBackend(ABC):
    """What the sampler needs of one diffusion model: encode, predict with guidance, step, decode."""

    family: str = ""

    def __init__(self, pipeline, scheduler):
        self.pipeline = pipeline
        self.scheduler = scheduler
        self.denoiser = None  # set by subclasses: the transformer or UNet
        self.vae = getattr(pipeline, "vae", None)

    # -- properties
    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return getattr(self.pipeline, "vae_scale_factor", 8)
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        f = self.vae_scale_factor
        return (self.denoiser.config.in_channels, int(height) // f, int(width) // f)

    # -- what a model family defines
    @abstractmethod
    def encode(self, prompts: list[str]) -> TextEmbeddings:
        """Text embeddings of `prompts` for the denoiser."""

    def unconditional(self, embeddings: TextEmbeddings, negatives: Sequence[str]) -> TextEmbeddings:
        """Rows of the unconditional / negative prediction; hook for SDXL's zero embedding."""
        return embeddings

    @abstractmethod
    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, text: TextEmbeddings) -> torch.Tensor:
        """The model's noise (or velocity) prediction for a batch of latents."""

    def set_timesteps(self, num_steps: int, latent_hw: tuple[int, int]) -> torch.Tensor:
        self.scheduler.set_timesteps(num_steps, device=self.device)
        return self.scheduler.timesteps

    def initial_noise(self, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        generator = torch.Generator("cpu").manual_seed(int(seed))
        noise = randn_tensor((1, *shape), generator=generator, device=self.device, dtype=self.dtype)
        sigma = getattr(self.scheduler, "init_noise_sigma", 1.0)  # flow matching: none
        return noise * sigma if sigma != 1.0 else noise

    def scale_input(self, latents: torch.Tensor, timestep) -> torch.Tensor:
        return latents

    # -- shared
    def guided(self, latents: torch.Tensor, timestep, cond: TextEmbeddings, uncond: TextEmbeddings,
               guidance: Sequence[float]) -> torch.Tensor:
        """Eq. (3)/(4): eps_uncond + w (eps_cond - eps_uncond) per row; w <= 1: eps_cond only.

        Rows are ordered [unconditional of guided rows; conditional of all rows], as the diffusers
        pipelines order them, so that one guided row reproduces the pipeline bit for bit.
        """
        guidance = [float(w) for w in guidance]
        guided = [i for i, w in enumerate(guidance) if w > 1.0]
        n = latents.shape[0]
        if guided:
            gidx = torch.tensor(guided, device=latents.device)
            model_in = torch.cat([latents.index_select(0, gidx), latents])
            text = TextEmbeddings.cat([uncond.rows(gidx), cond])
        else:
            model_in, text = latents, cond
        model_in = self.scale_input(model_in, timestep)
        out = self.forward(model_in, timestep, text)
        if not guided:
            return out
        uncond_out, cond_out = out[: len(guided)], out[len(guided):]
        scales = sorted(set(guidance[i] for i in guided))
        if len(guided) == n and len(scales) == 1:  # the usual chunk: one scale, all rows guided
            return uncond_out + scales[0] * (cond_out - uncond_out)
        result = cond_out.clone()
        for w in scales:
            rows = torch.tensor([k for k, i in enumerate(guided) if guidance[i] == w], device=out.device)
            lanes = gidx.index_select(0, rows)
            u = uncond_out.index_select(0, rows)
            result.index_copy_(0, lanes, u + w * (cond_out.index_select(0, lanes) - u))
        return result

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Final latents -> images in [0, 1], (B, 3, H, W) float32."""
        vae = self.vae
        if vae is None:
            raise UnsupportedPipelineError("the pipeline has no VAE to decode with")
        vae_dtype = next(vae.parameters()).dtype
        upcast = vae_dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        dtype = torch.float32 if upcast else vae_dtype
        z = self.unscale_latents(latents.to(torch.float32))
        if upcast:
            vae.to(torch.float32)
        try:
            image = vae.decode(z.to(vae.device, dtype), return_dict=False)[0]
        finally:
            if upcast:
                vae.to(vae_dtype)
        return (image.float() / 2 + 0.5).clamp(0, 1)

    def unscale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            c = latents.shape[1]
            mean = torch.tensor(mean, device=latents.device).view(1, c, 1, 1)
            std = torch.tensor(std, device=latents.device).view(1, c, 1, 1)
            return latents * std / cfg.scaling_factor + mean
        shift = getattr(cfg, "shift_factor", None) or 0.0
        return latents / cfg.scaling_factor + shift


class SD3Backend(DenoiserBackend):
    """Stable Diffusion 3: SD3Transformer2DModel, FlowMatchEulerDiscreteScheduler, 3 text encoders."""

    family = "sd3"

    def __init__(self, pipeline, max_sequence_length: int = 256):
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = pipeline.scheduler
        if not isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
            raise UnsupportedPipelineError(
                f"SD3 sampling needs FlowMatchEulerDiscreteScheduler, got {type(scheduler).__name__}")
        if scheduler.config.get("stochastic_sampling", False):
            raise UnsupportedPipelineError("stochastic flow-matching sampling is not supported")
        super().__init__(pipeline, FlowMatchEulerDiscreteScheduler.from_config(scheduler.config))
        self.denoiser = pipeline.transformer
        self.max_sequence_length = max_sequence_length

    def encode(self, prompts: list[str]) -> TextEmbeddings:
        hidden, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=self.device,
            do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length)
        return TextEmbeddings(hidden.to(self.dtype), pooled.to(self.dtype))

    def set_timesteps(self, num_steps: int, latent_hw: tuple[int, int]) -> torch.Tensor:
        kwargs = {}
        cfg = self.scheduler.config
        if cfg.get("use_dynamic_shifting", None):  # as StableDiffusion3Pipeline.__call__
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

            p = self.denoiser.config.patch_size
            kwargs["mu"] = calculate_shift((latent_hw[0] // p) * (latent_hw[1] // p),
                                           cfg.get("base_image_seq_len", 256),
                                           cfg.get("max_image_seq_len", 4096),
                                           cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.16))
        self.scheduler.set_timesteps(num_steps, device=self.device, **kwargs)
        return self.scheduler.timesteps

    def forward(self, latents, timestep, text):
        return self.denoiser(hidden_states=latents, timestep=timestep.expand(latents.shape[0]),
                             encoder_hidden_states=text.hidden, pooled_projections=text.pooled,
                             return_dict=False)[0]


class UNetDDIMBackend(DenoiserBackend):
    """SD 1.x / 2.x and SDXL UNets, sampled with DDIM (eta = 0), as EC-Diff does."""

    family = "unet-ddim"

    def __init__(self, pipeline, height: int | None = None, width: int | None = None):
        from diffusers import DDIMScheduler

        super().__init__(pipeline, DDIMScheduler.from_config(pipeline.scheduler.config))
        self.denoiser = pipeline.unet
        if self.denoiser.config.get("time_cond_proj_dim", None) is not None:
            raise UnsupportedPipelineError("guidance-embedding (LCM) UNets are not supported")
        self.is_xl = hasattr(pipeline, "text_encoder_2")
        self._size = (height, width)
        self._time_ids = None

    def encode(self, prompts: list[str]) -> TextEmbeddings:
        if self.is_xl:
            hidden, _, pooled, _ = self.pipeline.encode_prompt(
                prompt=prompts, device=self.device, do_classifier_free_guidance=False)
            return TextEmbeddings(hidden.to(self.dtype), pooled.to(self.dtype))
        hidden, _ = self.pipeline.encode_prompt(prompts, self.device, 1, False)
        return TextEmbeddings(hidden.to(self.dtype))

    def unconditional(self, embeddings: TextEmbeddings, negatives: Sequence[str]) -> TextEmbeddings:
        # SDXL without a negative prompt uses zero embeddings, not the encoded empty prompt.
        if not (self.is_xl and self.pipeline.config.get("force_zeros_for_empty_prompt", False)):
            return embeddings
        keep = torch.tensor([bool(n) for n in negatives], device=embeddings.hidden.device)
        hidden = embeddings.hidden * keep.view(-1, 1, 1).to(embeddings.hidden.dtype)
        pooled = embeddings.pooled * keep.view(-1, 1).to(embeddings.pooled.dtype)
        return TextEmbeddings(hidden, pooled)

    def set_timesteps(self, num_steps: int, latent_hw: tuple[int, int]) -> torch.Tensor:
        f = self.vae_scale_factor
        self._size = (latent_hw[0] * f, latent_hw[1] * f)
        self._time_ids = None
        return super().set_timesteps(num_steps, latent_hw)

    def scale_input(self, latents, timestep):
        return self.scheduler.scale_model_input(latents, timestep)

    def forward(self, latents, timestep, text):
        added = None
        if self.is_xl:
            if self._time_ids is None:
                size = tuple(self._size)
                proj = (int(text.pooled.shape[-1]) if self.pipeline.text_encoder_2 is None
                        else self.pipeline.text_encoder_2.config.projection_dim)
                self._time_ids = self.pipeline._get_add_time_ids(
                    size, (0, 0), size, dtype=self.dtype, text_encoder_projection_dim=proj).to(self.device)
            added = {"text_embeds": text.pooled,
                     "time_ids": self._time_ids.repeat(latents.shape[0], 1)}
        return self.denoiser(latents, timestep, encoder_hidden_states=text.hidden,
                             added_cond_kwargs=added, return_dict=False)[0]


def make_backend(pipeline, max_sequence_length: int = 256) -> DenoiserBackend:
    """The backend for a loaded diffusers pipeline, or `UnsupportedPipelineError`."""
    if isinstance(pipeline, DenoiserBackend):
        return pipeline
    name = type(pipeline).__name__
    if hasattr(pipeline, "transformer") and name.startswith("StableDiffusion3"):
        return SD3Backend(pipeline, max_sequence_length=max_sequence_length)
    if name in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        return UNetDDIMBackend(pipeline)
    raise UnsupportedPipelineError(
        f"unsupported pipeline type {name}: the live sampler drives StableDiffusion3Pipeline, "
        "StableDiffusionPipeline (SD 1.x/2.x) and StableDiffusionXLPipeline")


# ----------------------------------------------------------------------------- the sampler


class _Lane:
    """One latent moving through the timesteps: a cluster's common run or one user."""

    __slots__ = ("latent", "cluster", "user", "start", "es_end", "end", "approximator",
                 "cond_text", "uncond_text", "guidance", "es_calls", "ue_calls", "approximated")

    def __init__(self, latent, cluster, user, start, es_end, end, cond_text, uncond_text, guidance):
        self.latent = latent
        self.cluster, self.user = cluster, user  # user None: the common run
        self.start, self.es_end, self.end = start, es_end, end
        self.approximator: KStepNoiseApproximator | None = None
        self.cond_text, self.uncond_text, self.guidance = cond_text, uncond_text, guidance
        self.es_calls = self.ue_calls = self.approximated = 0


class HISSampler:
    """HIS sampling of whole decision points (all clusters at once) on an ES and a UE model."""

    def __init__(self, es_pipeline, ue_pipeline=None, *, batch_size: int = 8,
                 guidance: Guidance = Guidance(), height: int | None = None,
                 width: int | None = None, max_sequence_length: int = 256, decode_batch_size: int = 2):
        self.es = make_backend(es_pipeline, max_sequence_length)
        if ue_pipeline is None or ue_pipeline is es_pipeline:
            self.ue = self.es
        else:
            self.ue = make_backend(ue_pipeline, max_sequence_length)
            self._check_compatible()
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.decode_batch_size = int(decode_batch_size)  # the VAE at 1024 px needs ~2 GiB per image
        self.guidance = guidance
        sample = self.es.denoiser.config.get("sample_size", 128)
        self.height = int(height or sample * self.es.vae_scale_factor)
        self.width = int(width or sample * self.es.vae_scale_factor)

    def _check_compatible(self) -> None:
        es, ue = self.es, self.ue
        if es.family != ue.family or type(es.scheduler) is not type(ue.scheduler):
            raise UnsupportedPipelineError(
                f"the UE model ({type(ue.pipeline).__name__}) must be of the ES model's family "
                f"({type(es.pipeline).__name__}) to continue its latents on its timesteps")
        if es.denoiser.config.in_channels != ue.denoiser.config.in_channels or \
                es.vae_scale_factor != ue.vae_scale_factor:
            raise UnsupportedPipelineError("the ES and UE models do not share a latent space")
        pe = es.scheduler.config.get("prediction_type", None)
        pu = ue.scheduler.config.get("prediction_type", None)
        if pe != pu:
            raise UnsupportedPipelineError(f"ES predicts {pe!r} but UE predicts {pu!r}")

    # -------------------------------------------------------------------------------------------
    def run(self, clusters: Sequence[ClusterPlan], ecdiff: ECDiffSchedule | None = None,
            guidance: Guidance | None = None) -> SamplerResult:
        """Final latents of every user of every cluster (before the VAE's scaling is undone)."""
        with torch.inference_mode():
            return self._run(list(clusters), ecdiff, guidance or self.guidance)

    def generate(self, clusters: Sequence[ClusterPlan], ecdiff: ECDiffSchedule | None = None,
                 guidance: Guidance | None = None) -> tuple[list[torch.Tensor], SamplerStats]:
        """Decoded images per cluster, (users, 3, H, W) in [0, 1] on the UE's VAE."""
        result = self.run(clusters, ecdiff, guidance)
        return [self.decode(lat) for lat in result.latents], result.stats

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = [self.ue.decode(latents[i:i + self.decode_batch_size])
                   for i in range(0, latents.shape[0], self.decode_batch_size)]
        return torch.cat(out) if out else latents.new_zeros((0, 3, self.height, self.width))

    def _run(self, clusters: list[ClusterPlan], ecdiff: ECDiffSchedule | None,
             guidance: Guidance) -> SamplerResult:
        totals = {u.total_steps for c in clusters for u in c.users}
        if len(totals) > 1:
            raise ValueError(f"all users must have the same x + y + z (total steps), got {sorted(totals)}")
        for c in clusters:
            for u in c.users:
                if min(u.common_steps, u.es_personal_steps, u.ue_steps) < 0:
                    raise ValueError(f"negative step count in {u}")
        stats = SamplerStats(
            common_calls=[0] * len(clusters),
            personal_calls=[[0] * len(c.users) for c in clusters],
            ue_calls=[[0] * len(c.users) for c in clusters],
            approximated=[[0] * len(c.users) for c in clusters])
        latents_out = [None] * len(clusters)
        if not totals:
            return SamplerResult([torch.zeros(0) for _ in clusters], stats)
        total = totals.pop()
        if total < 1:
            raise ValueError("users need at least one denoising step (x + y + z >= 1)")
        shape = self.es.latent_shape(self.height, self.width)
        patch = self.es.denoiser.config.get("patch_size", 1) or 1
        if shape[1] % patch or shape[2] % patch or min(shape[1:]) < 1:
            raise ValueError(f"height x width {self.height}x{self.width} gives a {shape[1]}x{shape[2]} "
                             f"latent, not a multiple of the model's patch size {patch}")
        for c in clusters:
            if c.max_common_steps > total:
                raise ValueError(f"the common run of {c.public_prompt!r} ({c.max_common_steps} steps) "
                                 f"is longer than the {total} total steps")
        timesteps = self.es.set_timesteps(total, shape[1:])
        if len(timesteps) != total:
            raise ValueError(f"scheduler gave {len(timesteps)} timesteps for {total} steps")

        # prompts, encoded once per backend (ES and, if different, UE)
        es_texts = [c.public_prompt for c in clusters if c.max_common_steps > 0]
        es_texts += [""]
        for c in clusters:
            for u in c.users:
                es_texts += [u.personal_prompt, u.negative_prompt]
        es_table = PromptTable(self.es, es_texts)
        ue_table = es_table if self.ue is self.es else PromptTable(
            self.ue, [""] + [t for c in clusters for u in c.users if u.ue_steps > 0
                             for t in (u.personal_prompt, u.negative_prompt)])

        # lanes: the common runs now; users join at their x_n
        final = [[None] * len(c.users) for c in clusters]
        common: dict[int, _Lane] = {}
        noises = {}
        for m, c in enumerate(clusters):
            noises[m] = self.es.initial_noise(c.seed, shape)
            if c.max_common_steps > 0:
                lane = _Lane(noises[m], m, None, 0, c.max_common_steps, c.max_common_steps,
                             c.public_prompt, "", guidance.common)
                if ecdiff is not None:  # every member leaves after a real call (EC-Diff's handoff rule)
                    lane.approximator = KStepNoiseApproximator(ecdiff, 0, c.max_common_steps,
                                                               exits=[u.common_steps for u in c.users])
                common[m] = lane
        users: list[_Lane] = []
        all_users: list[_Lane] = []
        joins: dict[int, list[tuple[int, int]]] = {}
        for m, c in enumerate(clusters):
            for n, u in enumerate(c.users):
                joins.setdefault(u.common_steps, []).append((m, n))

        def join(step: int) -> None:
            for m, n in joins.get(step, []):
                u = clusters[m].users[n]
                base = common[m] if step > 0 else None
                latent = noises[m] if base is None else base.latent
                lane = _Lane(latent.clone(), m, n, step, step + u.es_personal_steps, total,
                             u.personal_prompt, u.negative_prompt, guidance.personal)
                if ecdiff is not None and u.es_personal_steps > 0:
                    carried = None
                    if base is not None and base.approximator is not None:
                        carried = base.approximator.state.clone()
                    lane.approximator = KStepNoiseApproximator(ecdiff, step, u.es_personal_steps, carried)
                all_users.append(lane)
                if lane.start >= lane.end:
                    final[m][n] = lane.latent
                else:
                    users.append(lane)

        for i, t in enumerate(timesteps):
            join(i)
            es_lanes = [lane for lane in common.values() if i < lane.end]
            es_lanes += [lane for lane in users if lane.start <= i < lane.es_end]
            ue_lanes = [lane for lane in users if lane.es_end <= i < lane.end]
            outputs: dict[int, torch.Tensor] = {}
            real_es = []
            for lane in es_lanes:
                a = lane.approximator
                if a is not None and not a.is_real(i - lane.start):
                    outputs[id(lane)] = a.approximate(i - lane.start).to(self.es.dtype)
                    lane.approximated += 1
                else:
                    real_es.append(lane)
            if self.ue is self.es:
                stats.es_forwards += self._predict(self.es, es_table, real_es + ue_lanes, t, outputs)
            else:
                stats.es_forwards += self._predict(self.es, es_table, real_es, t, outputs)
                stats.ue_forwards += self._predict(self.ue, ue_table, ue_lanes, t, outputs)
            for lane in real_es:
                lane.es_calls += 1
                if lane.approximator is not None:
                    lane.approximator.observe(i - lane.start, outputs[id(lane)])
            for lane in ue_lanes:
                lane.ue_calls += 1
            active = es_lanes + ue_lanes
            if active:
                stepped = _scheduler_step(self.es.scheduler,
                                          torch.cat([outputs[id(lane)] for lane in active]), i, t,
                                          torch.cat([lane.latent for lane in active]))
                for k, lane in enumerate(active):
                    lane.latent = stepped[k:k + 1]
            finished = [lane for lane in users if lane.end == i + 1]
            for lane in finished:
                final[lane.cluster][lane.user] = lane.latent
            users = [lane for lane in users if lane.end > i + 1]
        join(total)  # users whose whole generation is common (x_n = T)

        for m, lane in common.items():
            stats.common_calls[m] = lane.es_calls
        for lane in all_users:
            stats.personal_calls[lane.cluster][lane.user] = lane.es_calls
            stats.ue_calls[lane.cluster][lane.user] = lane.ue_calls
            stats.approximated[lane.cluster][lane.user] = lane.approximated
        for m, c in enumerate(clusters):
            latents_out[m] = torch.cat(final[m]) if c.users else noises[m][:0]
        return SamplerResult(latents_out, stats)

    def _predict(self, backend: DenoiserBackend, table: PromptTable, lanes: list[_Lane], timestep,
                 outputs: dict[int, torch.Tensor]) -> int:
        """Guided model outputs of `lanes` at `timestep`, in chunks of `batch_size` images."""
        forwards = 0
        for s in range(0, len(lanes), self.batch_size):
            chunk = lanes[s:s + self.batch_size]
            negatives = [lane.uncond_text for lane in chunk]
            cond = table.rows([lane.cond_text for lane in chunk])
            uncond = backend.unconditional(table.rows(negatives), negatives)
            out = backend.guided(torch.cat([lane.latent for lane in chunk]), timestep, cond, uncond,
                                 [lane.guidance for lane in chunk])
            for k, lane in enumerate(chunk):
                outputs[id(lane)] = out[k:k + 1]
            forwards += 1
        return forwards
