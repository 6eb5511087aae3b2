"""Build the VLM from a ModelConfig: random init (tiny) or ViT + LLM weights with a fresh projector (7B)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from data.chat_format import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START
from model.config import ModelConfig
from model.parts import parameter_counts

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_hf_config(cfg: ModelConfig, tokenizer=None):
    """The transformers Qwen2_5_VLConfig of `cfg`; token ids come from `tokenizer` when given."""
    from transformers import Qwen2_5_VLConfig

    v, t = cfg.vision, cfg.text
    token_ids = {}
    if tokenizer is not None:
        if len(tokenizer) > t.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens but model text.vocab_size is {t.vocab_size}")
        ids = tokenizer.convert_tokens_to_ids([IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END])
        token_ids = dict(zip(["image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"], ids))
        token_ids["pad_token_id"] = tokenizer.pad_token_id
        token_ids["eos_token_id"] = tokenizer.eos_token_id
        token_ids["bos_token_id"] = tokenizer.bos_token_id
    text_ids = {k: token_ids[k] for k in ("pad_token_id", "eos_token_id", "bos_token_id") if k in token_ids}
    return Qwen2_5_VLConfig(
        vision_config=dict(
            depth=v.depth,
            hidden_size=v.hidden_size,
            intermediate_size=v.intermediate_size,
            num_heads=v.num_heads,
            patch_size=v.patch_size,
            spatial_merge_size=v.spatial_merge_size,
            temporal_patch_size=v.temporal_patch_size,
            window_size=v.window_size,
            fullatt_block_indexes=list(v.fullatt_block_indexes),
            tokens_per_second=v.tokens_per_second,
            hidden_act=v.hidden_act,
            in_channels=v.in_channels,
            out_hidden_size=t.hidden_size,
            initializer_range=t.initializer_range,
        ),
        text_config=dict(
            vocab_size=t.vocab_size,
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_hidden_layers=t.num_hidden_layers,
            num_attention_heads=t.num_attention_heads,
            num_key_value_heads=t.num_key_value_heads,
            hidden_act=t.hidden_act,
            max_position_embeddings=t.max_position_embeddings,
            rms_norm_eps=t.rms_norm_eps,
            initializer_range=t.initializer_range,
            rope_parameters={"rope_type": "default", "rope_theta": t.rope_theta, "mrope_section": list(t.mrope_section)},
            **text_ids,
        ),
        tie_word_embeddings=t.tie_word_embeddings,
        **{k: v for k, v in token_ids.items() if k not in text_ids},
    )


def build_model(cfg: ModelConfig, tokenizer=None, *, device: str | torch.device | None = None,
                runs_dir: str | Path = "runs", storage=None):
    """A Qwen2_5_VLForConditionalGeneration for `cfg`.

    device="meta" builds shapes only (no memory). init.source=scratch: random init under init.seed.
    init.source=pretrained: ViT and LLM weights from cfg.weights, projector randomly initialised.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    hf_config = build_hf_config(cfg, tokenizer)
    hf_config._attn_implementation = cfg.attn_implementation
    dtype = DTYPES[cfg.dtype]
    if str(device) == "meta":
        with torch.device("meta"):
            return Qwen2_5_VLForConditionalGeneration(hf_config).to(dtype)
    torch.manual_seed(cfg.init.seed)
    model = Qwen2_5_VLForConditionalGeneration(hf_config).to(dtype)
    if cfg.init.source == "pretrained":
        from model.weights import load_pretrained_parts

        load_pretrained_parts(model, cfg, runs_dir, storage)
    if device is not None:
        model = model.to(device)
    log.info("built %s (%s): %s parameters per part", cfg.name, cfg.init.source, parameter_counts(model))
    return model
