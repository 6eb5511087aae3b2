"""HF-format checkpoints: safetensors weights, config, tokenizer and image processor in one folder."""
from __future__ import annotations

from pathlib import Path

import torch

from model.processor import load_image_processor


def save_hf_checkpoint(model, tokenizer, image_processor, folder: str | Path, state_dict=None) -> Path:
    """Write an HF-format checkpoint; `state_dict` overrides the model's own (e.g. consolidated ZeRO-3)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    return folder


def load_hf_checkpoint(folder: str | Path, dtype: torch.dtype | None = None, attn_implementation: str = "sdpa"):
    """(model, tokenizer, image_processor) from an HF-format checkpoint folder."""
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not an HF checkpoint (no config.json)")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        folder, dtype=dtype, attn_implementation=attn_implementation
    )
    return model, AutoTokenizer.from_pretrained(folder), load_image_processor(folder)
