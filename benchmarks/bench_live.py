"""Throughput of the live HIS sampler: SD3-medium architecture, random weights, bf16, 1024x1024.

    python benchmarks/bench_live.py                  # GPU: the full-size model
    python benchmarks/bench_live.py --device cpu --tiny   # CPU smoke run with a tiny model

What it times (under torch.inference_mode, after a warm-up of each configuration):

* one denoising step at 1 and 8 images per batch (classifier-free guidance doubles the rows) and
  one 28-step image; images/s of 8 independent generations batched together;
* a cluster of 8 users with x = 14 of T = 28 (y = 14, z = 0): HIS (one common run at batch 1,
  then 8 personal runs at batch 8) against 8 independent generations; compute ratio
  T * 8 / (x + 8 (T - x)) = 224 / 126 = 1.78;
* EC-Diff on the ES steps at the EC-Diff paper's SD settings (p = 7, k = 2, alpha = 0.3; two real
  calls after the prompt switch): real model calls and wall time, for HIS and independent;
* the VAE decode (SD3 VAE architecture) and a CLIP ViT-L/14@336 score, separately.

Random weights time the same as trained ones. The text encoders are not in the timed loop, so
prompts map to random embeddings of SD3's shapes (333 tokens x 4096, pooled 2048). The model is
SD3-medium's transformer config (24 layers, hidden 1536, patch 2, 16 latent channels, joint
attention 4096, caption projection 1536, pooled 2048, pos_embed_max_size 192). Prints one summary
line at the end.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from quality_oracle.ecdiff import real_calls  # noqa: E402
from quality_oracle.base import ECDiffSchedule  # noqa: E402
from quality_oracle.live.sampler import (ClusterPlan, DenoiserBackend, Guidance, HISSampler,  # noqa: E402
                                         SD3Backend, TextEmbeddings, UserPlan)

SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
SD3_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
               layers_per_block=2, latent_channels=16, norm_num_groups=32, sample_size=1024,
               scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
TINY = dict(sample_size=32, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
            pooled_projection_dim=64, out_channels=4, pos_embed_max_size=16)
TINY_VAE = dict(in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1, latent_channels=4,
                norm_num_groups=1, sample_size=32, use_quant_conv=False, use_post_quant_conv=False,
                shift_factor=0.0609, scaling_factor=1.5035)


class RandomTextSD3Backend(SD3Backend):
    """SD3 backend whose prompts map to fixed random embeddings of SD3's shapes (no text encoders)."""

    def __init__(self, transformer, vae, scheduler, text_tokens: int):
        from diffusers import FlowMatchEulerDiscreteScheduler

        DenoiserBackend.__init__(self, SimpleNamespace(vae=vae),
                                 FlowMatchEulerDiscreteScheduler.from_config(scheduler.config))
        self.denoiser = transformer
        self.text_tokens = text_tokens

    def encode(self, prompts):
        cfg = self.denoiser.config
        hidden, pooled = [], []
        for p in prompts:
            g = torch.Generator("cpu").manual_seed(int(hashlib.sha1(p.encode()).hexdigest()[:8], 16))
            hidden.append(torch.randn(self.text_tokens, cfg.joint_attention_dim, generator=g))
            pooled.append(torch.randn(cfg.pooled_projection_dim, generator=g))
        return TextEmbeddings(torch.stack(hidden).to(self.device, self.dtype),
                              torch.stack(pooled).to(self.device, self.dtype))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` runs after one warm-up run, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def oracle_smoke(device: str, dtype: str) -> str:
    """LiveDiffusionOracle end to end on `device` with tiny saved models: load, EC-Diff, cache hit."""
    import tempfile

    import numpy as np

    from quality_oracle.base import QualityRequest
    from quality_oracle.live import tiny_models as tiny
    from quality_oracle.live.oracle import LiveDiffusionOracle

    with tempfile.TemporaryDirectory() as tmp:
        tiny.tiny_sd3_pipeline().save_pretrained(f"{tmp}/sd3")
        tiny.save_tiny_clip(Path(tmp) / "clip")
        options = {"es_model": f"{tmp}/sd3", "clip_model": f"{tmp}/clip", "device": device, "dtype": dtype,
                   "height": 32, "width": 32, "max_sequence_length": 32, "cache_dir": f"{tmp}/cache"}
        request = QualityRequest(
            common_steps=np.array([6, 3, 0, 5]), es_personal_steps=np.array([3, 6, 8, 4]),
            ue_steps=np.array([1, 1, 2, 1]), similarity=np.zeros(4), cluster=np.array([0, 0, 1, 1]),
            sim_npi=True, approximated_es_steps=np.zeros(4, dtype=int),
            personal_prompts=["a grey cat", "a black cat", "a brown dog", "a small dog"],
            public_prompts=["a cat", "a dog"], negative_prompts=["a white cat", "", "a black dog", "a big dog"],
            ecdiff=ECDiffSchedule(pre_inference_calls=3, approx_steps=2, smoothing=0.3, reinit_calls=2))
        oracle = LiveDiffusionOracle(options)
        first = oracle.evaluate(request)
        again = LiveDiffusionOracle(options)
        second = again.evaluate(request)
        assert np.array_equal(first, second) and again.generated == 0 and np.isfinite(first).all()
        return f"oracle smoke on {device} ({dtype}): scores {np.round(first, 4).tolist()}, cache hit OK"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny model at 32x32 (CPU smoke run)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--size", type=int, help="image side in pixels (1024; tiny: 32)")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--common", type=int, default=14)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-clip", action="store_true")
    p.add_argument("--oracle-smoke", action="store_true",
                   help="first run LiveDiffusionOracle end to end with tiny saved models on --device")
    args = p.parse_args(argv)
    if args.oracle_smoke:
        print(oracle_smoke(args.device, args.dtype), flush=True)

    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available; run with --device cpu --tiny")
    if device.type == "cpu":
        torch.set_num_threads(1)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    size = args.size or (32 if args.tiny else 1024)
    T, N, x = args.steps, args.users, args.common
    name = "tiny SD3" if args.tiny else "SD3-medium arch (random)"
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {dev_name}; torch {torch.__version__}; {name}, {args.dtype}, {size}x{size}, {T} steps", flush=True)

    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        transformer = SD3Transformer2DModel(**(TINY if args.tiny else SD3_MEDIUM)).to(dtype).eval()
        vae = AutoencoderKL(**(TINY_VAE if args.tiny else SD3_VAE)).to(dtype).eval()
    params = sum(q.numel() for q in transformer.parameters())
    backend = RandomTextSD3Backend(transformer, vae, FlowMatchEulerDiscreteScheduler(shift=3.0),
                                   text_tokens=16 if args.tiny else 333)
    sampler = HISSampler(backend, batch_size=N, height=size, width=size, guidance=Guidance(2.0, 8.0))
    print(f"built transformer ({params / 1e9:.3f} B parameters) and VAE in {time.perf_counter() - t0:.1f} s",
          flush=True)

    with torch.inference_mode():
        # -- one denoising step
        shape = backend.latent_shape(size, size)
        timesteps = backend.set_timesteps(T, shape[1:])
        step_ms = {}
        for batch in (1, N):
            lat = torch.randn(batch, *shape, device=device, dtype=dtype)
            text = backend.encode([f"prompt {i}" for i in range(batch)])
            neg = backend.encode([""] * batch)
            sec, _ = timed(lambda: backend.guided(lat, timesteps[0], text, neg, [8.0] * batch), device,
                           3 * args.repeats)
            step_ms[batch] = 1000 * sec
            print(f"one step, {batch} image(s) with CFG ({2 * batch} rows): {step_ms[batch]:.1f} ms", flush=True)

        # -- one image, and N independent images
        one = [ClusterPlan("public", (UserPlan("a cat", "", 0, T, 0),), seed=0)]
        t_one, _ = timed(lambda: sampler.run(one), device, args.repeats)
        print(f"one image, {T} steps: {t_one:.3f} s ({t_one / T * 1000:.1f} ms/step)", flush=True)

        personal = [f"personal prompt {n}" for n in range(N)]
        negatives = [f"negative prompt {n}" for n in range(N)]
        independent = [ClusterPlan("public", tuple(UserPlan(personal[n], negatives[n], 0, T, 0)
                                                   for n in range(N)), seed=1)]
        his = [ClusterPlan("public", tuple(UserPlan(personal[n], negatives[n], x, T - x, 0)
                                           for n in range(N)), seed=1)]
        t_ind, r_ind = timed(lambda: sampler.run(independent), device, args.repeats)
        t_his, r_his = timed(lambda: sampler.run(his), device, args.repeats)
        ratio = t_ind / t_his
        compute = T * N / (x + N * (T - x))
        print(f"{N} independent images: {t_ind:.3f} s ({N / t_ind:.2f} images/s)", flush=True)
        print(f"HIS cluster of {N} users, x = {x}: {t_his:.3f} s ({N / t_his:.2f} images/s); "
              f"independent / HIS = {ratio:.2f}x (compute ratio {T * N}/{x + N * (T - x)} = {compute:.2f})", flush=True)

        # -- EC-Diff on the ES steps
        sched = ECDiffSchedule(pre_inference_calls=7, approx_steps=2, smoothing=0.3, reinit_calls=2)
        t_his_ec, r_his_ec = timed(lambda: sampler.run(his, ecdiff=sched), device, args.repeats)
        t_ind_ec, r_ind_ec = timed(lambda: sampler.run(independent, ecdiff=sched), device, args.repeats)

        def calls(result):
            return sum(result.stats.common_calls) + sum(sum(u) for u in result.stats.personal_calls)

        expect_his = int(real_calls(0, x, 7, 2, 2)) + N * int(real_calls(x, T - x, 7, 2, 2))
        assert calls(r_his_ec) == expect_his, (calls(r_his_ec), expect_his)
        print(f"EC-Diff (p=7, k=2, alpha=0.3, reinit 2) on the ES: HIS {calls(r_his)} -> {calls(r_his_ec)} "
              f"per-image model calls ({r_his.stats.es_forwards} -> {r_his_ec.stats.es_forwards} batched forwards), "
              f"{t_his:.3f} -> {t_his_ec:.3f} s ({t_his / t_his_ec:.2f}x); independent {calls(r_ind)} -> "
              f"{calls(r_ind_ec)} calls, {t_ind:.3f} -> {t_ind_ec:.3f} s ({t_ind / t_ind_ec:.2f}x); "
              f"HIS+EC-Diff vs independent {t_ind / t_his_ec:.2f}x", flush=True)

        # -- VAE decode and CLIP
        lat1 = r_his.latents[0][:1]
        t_vae1, _ = timed(lambda: backend.decode(lat1), device, args.repeats)
        t_vaeN, images = timed(lambda: sampler.decode(r_his.latents[0]), device, args.repeats)
        print(f"VAE decode: {t_vae1 * 1000:.1f} ms (1 image), {t_vaeN * 1000:.1f} ms ({N} images, "
              f"{sampler.decode_batch_size} at a time)", flush=True)
        t_clip = float("nan")
        if not args.no_clip:
            from transformers import CLIPConfig, CLIPModel

            from quality_oracle.live.clip_score import CLIPScorer
            from quality_oracle.live.tiny_models import clip_tokenizer, tiny_clip

            if args.tiny:
                model, tok = tiny_clip()
                model = model.to(device)
            else:  # ViT-L/14@336px architecture, random weights
                config = CLIPConfig(
                    text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                     num_hidden_layers=12, projection_dim=768, vocab_size=49408,
                                     bos_token_id=0, eos_token_id=1, pad_token_id=1),
                    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                       num_hidden_layers=24, image_size=336, patch_size=14, projection_dim=768),
                    projection_dim=768)
                with torch.device(device):
                    model = CLIPModel(config).eval()
                tok = clip_tokenizer()
            scorer = CLIPScorer(model, tok, batch_size=N)
            t_clip, scores = timed(lambda: scorer.score(images, personal), device, args.repeats)
            print(f"CLIP score of {N} images (float32, resize + forward): {t_clip * 1000:.1f} ms", flush=True)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        if device.type == "cuda":
            print(f"peak GPU memory: {peak:.1f} GiB", flush=True)

    print(f"SUMMARY bench_live [{dev_name}, {name}, {args.dtype}, {size}px, {T} steps]: "
          f"step {step_ms[1]:.1f} ms (1 img) / {step_ms[N]:.1f} ms ({N} img); one image {t_one:.2f} s; "
          f"{N} independent {t_ind:.2f} s ({N / t_ind:.2f} img/s); HIS x={x} {t_his:.2f} s -> "
          f"{ratio:.2f}x (compute {compute:.2f}x); EC-Diff p7k2a0.3 HIS {t_his_ec:.2f} s "
          f"({t_his / t_his_ec:.2f}x more, calls {calls(r_his)}->{calls(r_his_ec)}), independent "
          f"{t_ind_ec:.2f} s ({t_ind / t_ind_ec:.2f}x); VAE {t_vae1 * 1000:.0f} ms; CLIP({N}) {t_clip * 1000:.0f} ms",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
