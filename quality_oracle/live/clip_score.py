"""CLIP alignment of generated images with their personal prompts (HIS Eq. 6), batched.

S_CLIP = cos(emb_CLIP(p_per), emb_CLIP(I)): the cosine similarity of the projected text and image
embeddings of a transformers `CLIPModel` (the HIS experiment used ViT-L/14@336px). Images are
preprocessed on the model's device in torch, with the model's image-processor settings (resize
the short side, centre crop, normalise), so no image leaves the GPU; prompts longer than the text
tower's context (77 tokens for OpenAI CLIP) are truncated, as CLIPProcessor does.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(output) -> torch.Tensor:
    # transformers 4.x returns the projected features; 5.x a ModelOutput with them as pooler_output
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class CLIPScorer:
    """Cosine similarity of CLIP image and text embeddings, Eq. (6)."""

    def __init__(self, model, tokenizer, *, resize_to: int | None = None, crop_size: int | None = None,
                 mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD,
                 batch_size: int = 16):
        self.model = model.eval()
        self.tokenizer = tokenizer
        image_size = int(model.config.vision_config.image_size)
        self.crop_size = int(crop_size or image_size)
        self.resize_to = int(resize_to or self.crop_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.batch_size = int(batch_size)
        max_len = getattr(tokenizer, "model_max_length", 77)
        positions = int(model.config.text_config.max_position_embeddings)
        self.max_text_length = min(max_len if max_len and max_len < 10**6 else 77, positions)

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device = "cuda",
                        dtype: torch.dtype = torch.float32, batch_size: int = 16) -> "CLIPScorer":
        """Load a CLIP model, its tokenizer and its image-processor settings from a folder or hub id."""
        from transformers import AutoTokenizer, CLIPModel

        model = CLIPModel.from_pretrained(path).to(device=device, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        settings = _image_settings(path)
        return cls(model, tokenizer, batch_size=batch_size, **settings)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> normalised (B, 3, crop, crop) pixel values."""
        x = images.to(self.device, torch.float32)
        h, w = x.shape[-2:]
        short = min(h, w)
        if short != self.resize_to:
            scale = self.resize_to / short
            size = (max(self.resize_to, round(h * scale)), max(self.resize_to, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp(0, 1)
        h, w = x.shape[-2:]
        top, left = (h - self.crop_size) // 2, (w - self.crop_size) // 2
        x = x[..., top:top + self.crop_size, left:left + self.crop_size]
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x.to(self.dtype)

    @torch.inference_mode()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        out = [_features(self.model.get_image_features(pixel_values=self.preprocess(images[i:i + self.batch_size])))
               for i in range(0, images.shape[0], self.batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1)

    @torch.inference_mode()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(list(prompts[i:i + self.batch_size]), padding=True, truncation=True,
                                    max_length=self.max_text_length, return_tensors="pt").to(self.device)
            out.append(_features(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                              attention_mask=tokens["attention_mask"])))
        return F.normalize(torch.cat(out).float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
        """Eq. (6) for each (image, prompt) pair: float64 array (B,)."""
        if images.shape[0] != len(prompts):
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        if not len(prompts):
            return np.zeros(0)
        unique = list(dict.fromkeys(prompts))
        text = self.text_embeddings(unique)
        rows = torch.tensor([unique.index(p) for p in prompts], device=text.device)
        image = self.image_embeddings(images)
        return (image * text.index_select(0, rows)).sum(-1).double().cpu().numpy()


def _image_settings(path: str) -> dict:
    """resize_to / crop_size / mean / std from a preprocessor_config.json, if there is one."""
    config = None
    local = Path(path).expanduser() / "preprocessor_config.json"
    if local.is_file():
        config = json.loads(local.read_text())
    else:
        try:
            from huggingface_hub import hf_hub_download

            config = json.loads(Path(hf_hub_download(path, "preprocessor_config.json")).read_text())
        except Exception:  # no processor config: the model's image size and OpenAI statistics
            config = None
    if not config:
        return {}
    size, crop = config.get("size"), config.get("crop_size")
    resize_to = size.get("shortest_edge") if isinstance(size, dict) else size
    crop_size = (crop.get("height") if isinstance(crop, dict) else crop) or resize_to
    return {"resize_to": resize_to, "crop_size": crop_size,
            "mean": config.get("image_mean", OPENAI_CLIP_MEAN),
            "std": config.get("image_std", OPENAI_CLIP_STD)}
