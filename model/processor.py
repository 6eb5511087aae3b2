"""Qwen2.5-VL image processing at native resolution, built from config (no hub, no torchvision)."""
from __future__ import annotations

from model.config import ProcessorConfig


def build_image_processor(cfg: ProcessorConfig):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        min_pixels=cfg.min_pixels,
        max_pixels=cfg.max_pixels,
        patch_size=cfg.patch_size,
        temporal_patch_size=cfg.temporal_patch_size,
        merge_size=cfg.merge_size,
        image_mean=list(cfg.image_mean),
        image_std=list(cfg.image_std),
    )


def load_image_processor(folder):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil.from_pretrained(str(folder))


def resized_size(height: int, width: int, cfg: ProcessorConfig) -> tuple[int, int]:
    """(height, width) of an image after the processor's resize: what localisation coordinates refer to."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    return smart_resize(height, width, factor=cfg.patch_size * cfg.merge_size,
                        min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)


def image_token_count(grid_thw, merge_size: int) -> int:
    """LLM placeholder tokens for one image of patch grid (t, h, w)."""
    t, h, w = (int(x) for x in grid_thw)
    return t * h * w // (merge_size * merge_size)
