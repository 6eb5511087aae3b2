"""The three trainable parts of the VLM and the one function that freezes or unfreezes them.

In transformers 5.x Qwen2.5-VL the projector (`model.visual.merger`) lives inside the vision tower, so
"vit" means the vision tower *without* the merger.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from model.config import PARTS

PROJECTOR_PREFIX = "model.visual.merger."
VISION_PREFIX = "model.visual."
LLM_PREFIXES = ("model.language_model.", "lm_head.")


def part_of(param_name: str) -> str:
    """Which part (vit | projector | llm) a parameter of Qwen2_5_VLForConditionalGeneration belongs to."""
    if param_name.startswith(PROJECTOR_PREFIX):
        return "projector"
    if param_name.startswith(VISION_PREFIX):
        return "vit"
    if param_name.startswith(LLM_PREFIXES):
        return "llm"
    raise ValueError(f"parameter {param_name!r} belongs to no known part {PARTS}")


def check_parts(parts: Iterable[str]) -> set[str]:
    chosen = set(parts)
    unknown = chosen - set(PARTS)
    if unknown:
        raise ValueError(f"unknown trainable part(s) {sorted(unknown)}; choose from {list(PARTS)}")
    if not chosen:
        raise ValueError(f"no trainable part chosen; choose from {list(PARTS)}")
    return chosen


def set_trainable(model: torch.nn.Module, parts: Iterable[str]) -> dict[str, dict[str, int]]:
    """Train exactly `parts`, freeze the rest; returns {part: {"trainable": n, "frozen": n}} parameter counts."""
    chosen = check_parts(parts)
    counts = {part: {"trainable": 0, "frozen": 0} for part in PARTS}
    for name, param in model.named_parameters():
        part = part_of(name)
        param.requires_grad_(part in chosen)
        counts[part]["trainable" if part in chosen else "frozen"] += param.numel()
    return counts


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Number of parameters in each part (tied weights counted once)."""
    counts = dict.fromkeys(PARTS, 0)
    for name, param in model.named_parameters():
        counts[part_of(name)] += param.numel()
    return counts
