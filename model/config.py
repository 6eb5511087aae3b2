"""Typed model configuration (conf/model/*.yaml). No torch import: orchestration reads it too."""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from conf import ConfigError, load_group, validated

PARTS = ("vit", "projector", "llm")


@dataclass
class InitConfig:
    source: str = MISSING  # scratch | pretrained
    seed: int = MISSING


@dataclass
class WeightsConfig:
    vit: str | None = None  # folder or s3:// prefix holding a Qwen2.5-ViT
    llm: str | None = None  # folder or s3:// prefix holding a MiMo-7B-Base-shaped causal LM


@dataclass
class TokenizerConfig:
    source: str = MISSING  # train | load
    corpus_samples: int = MISSING
    min_frequency: int = MISSING
    seed: int = MISSING


@dataclass
class VisionConfig:
    depth: int = MISSING
    hidden_size: int = MISSING
    intermediate_size: int = MISSING
    num_heads: int = MISSING
    patch_size: int = MISSING
    spatial_merge_size: int = MISSING
    temporal_patch_size: int = MISSING
    window_size: int = MISSING
    fullatt_block_indexes: list[int] = MISSING
    tokens_per_second: int = MISSING
    hidden_act: str = MISSING
    in_channels: int = MISSING


@dataclass
class TextConfig:
    vocab_size: int = MISSING
    hidden_size: int = MISSING
    intermediate_size: int = MISSING
    num_hidden_layers: int = MISSING
    num_attention_heads: int = MISSING
    num_key_value_heads: int = MISSING
    hidden_act: str = MISSING
    max_position_embeddings: int = MISSING
    rms_norm_eps: float = MISSING
    rope_theta: float = MISSING
    mrope_section: list[int] = MISSING
    tie_word_embeddings: bool = MISSING
    initializer_range: float = MISSING


@dataclass
class ProcessorConfig:
    patch_size: int = MISSING
    merge_size: int = MISSING
    temporal_patch_size: int = MISSING
    min_pixels: int = MISSING
    max_pixels: int = MISSING
    image_mean: list[float] = MISSING
    image_std: list[float] = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    dtype: str = MISSING
    attn_implementation: str = MISSING
    init: InitConfig = field(default_factory=InitConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)

    def check(self, where: str) -> None:
        if self.init.source not in ("scratch", "pretrained"):
            raise ConfigError(f"{where}: init.source must be 'scratch' or 'pretrained', got {self.init.source!r}")
        if self.tokenizer.source not in ("train", "load"):
            raise ConfigError(f"{where}: tokenizer.source must be 'train' or 'load', got {self.tokenizer.source!r}")
        head_dim = self.text.hidden_size // self.text.num_attention_heads
        if sum(self.text.mrope_section) * 2 != head_dim:
            raise ConfigError(
                f"{where}: text.mrope_section {list(self.text.mrope_section)} must sum to head_dim/2 = {head_dim // 2}"
            )
        if self.text.num_attention_heads % self.text.num_key_value_heads:
            raise ConfigError(f"{where}: text.num_attention_heads must be a multiple of text.num_key_value_heads")
        if self.vision.patch_size != self.processor.patch_size or self.vision.spatial_merge_size != self.processor.merge_size:
            raise ConfigError(f"{where}: processor.patch_size/merge_size must match vision.patch_size/spatial_merge_size")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"{where}: dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


def require_weights(cfg: ModelConfig, part: str) -> str:
    """The weights URI of `part` (vit | llm), or a ConfigError saying which override sets it."""
    uri = getattr(cfg.weights, part)
    if not uri:
        raise ConfigError(
            f"model {cfg.name}: weights.{part} is not set; pass model.weights.{part}=/path/or/s3://uri "
            f"(init.source={cfg.init.source}, tokenizer.source={cfg.tokenizer.source})"
        )
    return uri


def model_config_from(cfg, where: str = "model") -> ModelConfig:
    """Validate a `model:` config section (a DictConfig or dict) into a ModelConfig."""
    return validated(ModelConfig, cfg, where)


def load_model_config(name: str) -> ModelConfig:
    """Read and validate conf/model/<name>.yaml."""
    return model_config_from(load_group("model", name), where=f"conf/model/{name}.yaml")
