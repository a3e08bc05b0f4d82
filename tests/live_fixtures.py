"""Tiny, randomly initialised diffusers / transformers models for the live-oracle tests.

They live in the library (`quality_oracle.live.tiny_models`), where the benchmark's smoke runs use
them too; this module keeps the tests' ``from tests import live_fixtures`` short.
"""
from quality_oracle.live.tiny_models import (clip_tokenizer, save_tiny_clip, t5_tokenizer, tiny_clip,  # noqa: F401
                                             tiny_sd3_components, tiny_sd3_pipeline, tiny_sd_pipeline,
                                             tiny_sdxl_pipeline)
