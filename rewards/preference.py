"""The Bradley-Terry reward model: a VLM backbone with a scalar head; reward = sigmoid(score).

The model reads the chat (user prompt, assistant response) through the VLM's decoder and scores the
hidden state of the last token with a linear head. Trained with the Bradley-Terry loss
-log sigmoid(score(chosen) - score(rejected)) (bradley_terry_loss; training it is another job's work).

A reward-model folder is an HF checkpoint of the Qwen2.5-VL backbone (config.json, safetensors, tokenizer,
and for a multimodal model the image processor) plus score_head.safetensors and reward_model.json
({"kind": "bradley-terry", "head": ..., "modality": "text" | "multimodal"}), so a reward model can start from
any VLM checkpoint of the pipeline. A text-only model reads the chat's text; a multimodal one also feeds the
prompt's images to the vision tower. With preference.checkpoint null, a fresh one is built from conf/model/<model>.yaml
(the tiny profile runs the whole path end to end; its scores are untrained).

This is the only rewards module that imports torch; the router imports it when a preference item comes.
Scores are text-only for now: images referenced by a prompt are not fed to the vision tower.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rewards.config import PreferenceConfig

log = logging.getLogger(__name__)

HEAD_FILE = "score_head.safetensors"
META_FILE = "reward_model.json"
KIND = "bradley-terry"
MODALITIES = ("text", "multimodal")


@dataclass
class LoadedRewardModel:
    """What load_reward_model reads from a folder; `image_processor` is None for a text-only model."""

    model: BradleyTerryRewardModel
    tokenizer: Any
    image_processor: Any | None
    modality: str


class BradleyTerryRewardModel(torch.nn.Module):
    def __init__(self, vlm: Any, head_seed: int) -> None:
        """`vlm`: a Qwen2_5_VLForConditionalGeneration; its lm_head is unused."""
        super().__init__()
        self.vlm = vlm
        hidden = vlm.config.text_config.hidden_size
        generator = torch.Generator().manual_seed(head_seed)
        self.score_head = torch.nn.Linear(hidden, 1, dtype=vlm.dtype)
        with torch.no_grad():
            std = vlm.config.text_config.initializer_range
            self.score_head.weight.copy_(torch.randn(self.score_head.weight.shape, generator=generator) * std)
            self.score_head.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **vision: torch.Tensor) -> torch.Tensor:
        """Scores of shape (batch,) for right-padded `input_ids`."""
        hidden = self.vlm.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                **vision).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        return self.score_head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last]).squeeze(-1)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Mean -log sigmoid(chosen - rejected - margin) over preference pairs (margin 0: the plain Bradley-Terry
    loss; a positive margin asks the chosen score to lead by at least that much)."""
    return -torch.nn.functional.logsigmoid(chosen - rejected - margin).mean()


def build_reward_model(model_name: str, head_seed: int, runs_dir: str | Path) -> tuple[BradleyTerryRewardModel, Any]:
    """A fresh reward model and its tokenizer from conf/model/<model_name>.yaml."""
    from model.build import build_model
    from model.config import load_model_config
    from model.tokenizer import load_tokenizer

    model_cfg = load_model_config(model_name)
    tokenizer = load_tokenizer(model_cfg, runs_dir)
    return BradleyTerryRewardModel(build_model(model_cfg, tokenizer), head_seed), tokenizer


def save_reward_model(model: BradleyTerryRewardModel, tokenizer: Any, folder: str | Path, *,
                      modality: str = "text", image_processor: Any | None = None,
                      state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a reward-model folder. A multimodal model needs its image processor. `state_dict` (keys of the
    BradleyTerryRewardModel: vlm.* and score_head.*) overrides the module's own, e.g. consolidated ZeRO-3 weights."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if modality == "multimodal" and image_processor is None:
        raise ValueError("a multimodal reward model needs its image_processor saved with it")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone = head = None
    if state_dict is not None:
        backbone = {k[len("vlm."):]: v for k, v in state_dict.items() if k.startswith("vlm.")}
        head = {k[len("score_head."):]: v for k, v in state_dict.items() if k.startswith("score_head.")}
    model.vlm.save_pretrained(folder, state_dict=backbone, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if image_processor is not None:
        image_processor.save_pretrained(folder)
    head = head if head is not None else model.score_head.state_dict()
    save_file({k: v.detach().cpu().contiguous() for k, v in head.items()}, folder / HEAD_FILE)
    meta = {"kind": KIND, "head": HEAD_FILE, "modality": modality}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def read_reward_model_meta(folder: str | Path) -> dict[str, Any]:
    """reward_model.json of a folder, checked; a folder written before modalities existed is text-only."""
    meta_path = Path(folder) / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not a reward model folder (no {META_FILE}); "
                                f"write one with rewards.preference.save_reward_model")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise ValueError(f"{meta_path}: not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise ValueError(f"{meta_path}: kind must be '{KIND}', got {meta.get('kind') if isinstance(meta, dict) else meta!r}")
    meta.setdefault("modality", "text")
    if meta["modality"] not in MODALITIES:
        raise ValueError(f"{meta_path}: modality must be one of {MODALITIES}, got {meta['modality']!r}")
    return meta


def load_reward_model(folder: str | Path) -> LoadedRewardModel:
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    folder = Path(folder)
    meta = read_reward_model_meta(folder)
    vlm = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    model = BradleyTerryRewardModel(vlm, head_seed=0)
    model.score_head.load_state_dict(load_file(folder / meta["head"]))
    image_processor = None
    if meta["modality"] == "multimodal":
        from model.processor import load_image_processor

        image_processor = load_image_processor(folder)
    return LoadedRewardModel(model, AutoTokenizer.from_pretrained(folder), image_processor, meta["modality"])


class PreferenceScorer:
    """Rewards in (0, 1) for (prompt, response) pairs: sigmoid of the reward model's score."""

    def __init__(self, model: BradleyTerryRewardModel, tokenizer: Any, max_length: int, batch_size: int,
                 device: str) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        # The end of an input is what is kept; cutting the text first to (max_length + 2) of the vocabulary's
        # longest tokens keeps at least max_length tokens and spares tokenising megabytes.
        longest = max(len(token.encode("utf-8", "surrogatepass")) for token in tokenizer.get_vocab())
        self._keep_chars = (max_length + 2) * longest

    @classmethod
    def from_config(cls, cfg: PreferenceConfig) -> PreferenceScorer:
        if cfg.checkpoint:
            loaded = load_reward_model(cfg.checkpoint)
            model, tokenizer = loaded.model, loaded.tokenizer
            log.info("preference model loaded from %s", cfg.checkpoint)
        else:
            model, tokenizer = build_reward_model(cfg.model, cfg.init_seed, cfg.runs_dir)
            log.info("preference model built untrained from conf/model/%s.yaml", cfg.model)
        return cls(model, tokenizer, cfg.max_length, cfg.batch_size, cfg.device)

    def _texts(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        texts = []
        for prompt, response in pairs:
            chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            texts.append(self.tokenizer.apply_chat_template(chat, tokenize=False)[-self._keep_chars:])
        return texts

    @torch.inference_mode()
    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        rewards: list[float] = []
        for begin in range(0, len(pairs), self.batch_size):
            texts = self._texts(pairs[begin:begin + self.batch_size])
            self.tokenizer.truncation_side = "left"
            self.tokenizer.padding_side = "right"
            batch = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True,
                                   return_tensors="pt", add_special_tokens=False)
            scores = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            rewards.extend(torch.sigmoid(scores.float()).tolist())
        return rewards
