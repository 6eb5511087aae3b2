"""The Bradley-Terry reward model: a VLM backbone with a scalar head; reward = sigmoid(score).

The model reads the chat (user prompt, assistant response) through the VLM's decoder and scores the
hidden state of the last token with a linear head. Trained with the Bradley-Terry loss
-log sigmoid(score(chosen) - score(rejected)) (bradley_terry_loss; training it is another job's work).

A scorer folder is an HF checkpoint of the Qwen2.5-VL backbone (config.json, safetensors, tokenizer)
plus score_head.safetensors and reward_model.json, so a reward model can start from any VLM checkpoint
of the pipeline. With preference.checkpoint null, a fresh one is built from conf/model/<model>.yaml
(the tiny profile runs the whole path end to end; its scores are untrained).

This is the only rewards module that imports torch; the router imports it when a preference item comes.
Scores are text-only for now: images referenced by a prompt are not fed to the vision tower.
"""
from __future__ import annotations

import json
import logging
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


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean -log sigmoid(chosen - rejected) over preference pairs."""
    return -torch.nn.functional.logsigmoid(chosen - rejected).mean()


def build_reward_model(model_name: str, head_seed: int, runs_dir: str | Path) -> tuple[BradleyTerryRewardModel, Any]:
    """A fresh reward model and its tokenizer from conf/model/<model_name>.yaml."""
    from model.build import build_model
    from model.config import load_model_config
    from model.tokenizer import load_tokenizer

    model_cfg = load_model_config(model_name)
    tokenizer = load_tokenizer(model_cfg, runs_dir)
    return BradleyTerryRewardModel(build_model(model_cfg, tokenizer), head_seed), tokenizer


def save_reward_model(model: BradleyTerryRewardModel, tokenizer: Any, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.vlm.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in model.score_head.state_dict().items()}, folder / HEAD_FILE)
    (folder / META_FILE).write_text(json.dumps({"kind": KIND, "head": HEAD_FILE}, indent=2) + "\n")
    return folder


def load_reward_model(folder: str | Path) -> tuple[BradleyTerryRewardModel, Any]:
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not a reward model folder (no {META_FILE}); "
                                f"write one with rewards.preference.save_reward_model")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != KIND:
        raise ValueError(f"{meta_path}: kind must be '{KIND}', got {meta.get('kind')!r}")
    vlm = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    model = BradleyTerryRewardModel(vlm, head_seed=0)
    model.score_head.load_state_dict(load_file(folder / meta["head"]))
    return model, AutoTokenizer.from_pretrained(folder)


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
            model, tokenizer = load_reward_model(cfg.checkpoint)
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
