import pytest
import torch

from conf import ConfigError, load_group
from model.build import build_model
from model.config import load_model_config, model_config_from
from model.parts import parameter_counts


def test_tiny_model_is_small_and_runs(tiny_model, tokenizer, tiny_cfg):
    total = sum(parameter_counts(tiny_model).values())
    assert 1_000_000 <= total <= 5_000_000
    assert tiny_model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert tiny_model.model.visual.merger.mlp[-1].out_features == tiny_cfg.text.hidden_size


def test_7b_builds_on_meta_with_the_reference_shapes():
    cfg = load_model_config("mimovl_7b")
    model = build_model(cfg, device="meta")
    assert next(model.parameters()).device.type == "meta"
    visual, llm = model.model.visual, model.model.language_model
    assert len(visual.blocks) == 32
    assert visual.blocks[0].attn.qkv.in_features == 1280
    assert visual.blocks[0].attn.num_heads == 16
    assert visual.merger.mlp[0].in_features == 1280 * 4
    assert visual.merger.mlp[-1].out_features == 4096
    assert len(llm.layers) == 36
    attn = llm.layers[0].self_attn
    assert attn.q_proj.out_features == 32 * 128 and attn.k_proj.out_features == 8 * 128
    assert llm.layers[0].mlp.up_proj.out_features == 11008
    assert model.lm_head.out_features == 151680
    counts = parameter_counts(model)
    assert 8.2e9 < sum(counts.values()) < 8.4e9
    # RMSNorm(1280) -> Linear(5120, 5120) -> GELU -> Linear(5120, 4096)
    assert counts["projector"] == 1280 + (5120 * 5120 + 5120) + (5120 * 4096 + 4096)


def test_bad_model_config_names_the_key():
    cfg = load_group("model", "tiny")
    cfg.text.mrope_section = [4, 4, 4]
    with pytest.raises(ConfigError, match="mrope_section"):
        model_config_from(cfg)
    cfg = load_group("model", "tiny")
    cfg.text.hidden_sise = 3
    with pytest.raises(ConfigError, match="hidden_sise"):
        model_config_from(cfg)
    cfg = load_group("model", "tiny")
    cfg.vision.depth = "deep"
    with pytest.raises(ConfigError, match="vision.depth"):
        model_config_from(cfg)


def test_pretrained_without_weights_fails_naming_the_override(tokenizer):
    cfg = load_model_config("mimovl_7b")
    with pytest.raises(ConfigError, match="model.weights.vit="):
        from model.weights import load_pretrained_parts

        load_pretrained_parts(torch.nn.Module(), cfg, "runs")
