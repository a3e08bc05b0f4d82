"""Tiny, randomly initialised diffusers / transformers models: smoke runs of the live oracle without weights.

Nothing here is downloaded: tokenizers are built from an in-memory character vocabulary and every
model from a small config, the way diffusers' own fast tests build theirs (but without the
``hf-internal-testing`` hub repositories). All builders are deterministic (``torch.manual_seed``).
Used by the benchmark's ``--tiny`` and ``--oracle-smoke`` runs and by the tests; the images they
make are noise, so their scores say nothing about quality.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch

_CHARS = list(string.ascii_lowercase + string.digits + ".,!?-'")


def clip_tokenizer(max_length: int = 77):
    """A character-level CLIP BPE tokenizer (no merges): bos 0, eos/pad 1."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in _CHARS:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer(max_length: int = 64):
    """A character-level T5 (unigram) tokenizer: pad 0, eos 1, unk 2."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    vocab += [(ch, -1.0) for ch in _CHARS]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def _clip_text_config(hidden: int = 32, projection: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden,
                          intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4,
                          num_hidden_layers=2, vocab_size=len(_CHARS) * 2 + 2, hidden_act="gelu",
                          projection_dim=projection, max_position_embeddings=77)


def tiny_sd3_components(seed: int = 0, transformer_seed: int | None = None) -> dict:
    """Components of a tiny StableDiffusion3Pipeline: 32x32 latents (vae scale 1), patch 2."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed if transformer_seed is None else transformer_seed)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2,
                                        caption_projection_dim=16, joint_attention_dim=32,
                                        pooled_projection_dim=64, out_channels=4,
                                        pos_embed_max_size=16)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(_clip_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config())
    t5 = T5EncoderModel(T5Config(vocab_size=len(_CHARS) + 4, d_model=32, d_kv=8, d_ff=37,
                                 num_layers=1, num_heads=4, relative_attention_num_buckets=8,
                                 pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,),
                        layers_per_block=1, latent_channels=4, norm_num_groups=1,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                        scaling_factor=1.5035)
    return {"scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0), "text_encoder": text_encoder,
            "text_encoder_2": text_encoder_2, "text_encoder_3": t5.eval(),
            "tokenizer": clip_tokenizer(), "tokenizer_2": clip_tokenizer(),
            "tokenizer_3": t5_tokenizer(), "transformer": transformer.eval(), "vae": vae.eval()}


def tiny_sd3_pipeline(seed: int = 0, transformer_seed: int | None = None):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**tiny_sd3_components(seed, transformer_seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_sd_vae():
    """The tiny 4-channel-latent VAE of the SD 1.x and SDXL test pipelines (32x32 images)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(4,), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                         norm_num_groups=1, layers_per_block=1, sample_size=32)


def _sd_ddim_scheduler(**extra):
    """The DDIM scheduler of the SD 1.x and SDXL pipelines (their scaled-linear betas)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, **extra)


def tiny_sd_pipeline(seed: int = 0):
    """A tiny StableDiffusionPipeline (SD 1.x layout) with a DDIM scheduler: 32x32 latents."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=32,
                                in_channels=4, out_channels=4, norm_num_groups=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=32, attention_head_dim=4)
    vae = _tiny_sd_vae()
    text_encoder = CLIPTextModel(_clip_text_config())
    scheduler = _sd_ddim_scheduler()
    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=text_encoder.eval(),
                                   tokenizer=clip_tokenizer(), unet=unet.eval(), scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(seed: int = 0):
    """A tiny StableDiffusionXLPipeline (two text encoders, text_time conditioning), DDIM."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=32,
                                in_channels=4, out_channels=4, norm_num_groups=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                attention_head_dim=(2, 4), use_linear_projection=True,
                                addition_embed_type="text_time", addition_time_embed_dim=4,
                                transformer_layers_per_block=(1, 1),
                                projection_class_embeddings_input_dim=4 * 6 + 32,
                                cross_attention_dim=64)
    vae = _tiny_sd_vae()
    text_encoder = CLIPTextModel(_clip_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config())
    scheduler = _sd_ddim_scheduler(timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae.eval(), text_encoder=text_encoder.eval(),
                                     text_encoder_2=text_encoder_2.eval(), tokenizer=clip_tokenizer(),
                                     tokenizer_2=clip_tokenizer(), unet=unet.eval(),
                                     scheduler=scheduler, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_clip(seed: int = 0):
    """A tiny CLIPModel (16x16 images, patch 4) and its tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                              num_hidden_layers=2, image_size=16, patch_size=4, projection_dim=24)
    text = _clip_text_config(projection=24).to_dict()
    config = CLIPConfig(text_config=text, vision_config=vision.to_dict(), projection_dim=24)
    return CLIPModel(config).eval(), clip_tokenizer()


def save_tiny_clip(path: Path, seed: int = 0) -> Path:
    """Save a tiny CLIP model, tokenizer and a 16 px image-processor config into `path`."""
    import json

    model, tokenizer = tiny_clip(seed)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True,
        "size": {"shortest_edge": 16}, "do_center_crop": True,
        "crop_size": {"height": 16, "width": 16}, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3}))
    return path
