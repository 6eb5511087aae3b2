"""Batched greedy generation for evaluation, with prompts rendered exactly as training renders samples.

A prompt is a user turn as content parts ({"type": "image", "image": bytes | Path | PIL.Image},
{"type": "text", "text": ...}; evaluation.benchmarks.base.Item.prompt). It is rendered with the chat
format training uses (data.collator.render_chat), followed by the assistant header and, with thinking
off, the empty think block every non-reasoning training answer starts with (data.synth_tasks.THINK_OFF:
the recipe's no-think form); with thinking on the assistant turn is left open and the model writes its
own <think> block. Image placeholders are expanded to one token per merged patch, as the collator does.

Decoding is HF `generate`: greedy, KV cache, left padding, stopping at <|im_end|>. Qwen2.5-VL computes
the M-RoPE positions of the prompt only when it is given `mm_token_type_ids` (without them it silently
uses 1D positions for image tokens, unlike training); they are passed here. Prompts are sorted by
length before batching, so a batch holds prompts of similar length (less padding, similar answers).
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from evaluation.generation_config import GenerationConfig
from data.chat_format import IM_END, IM_START, IMAGE_PAD
from data.collator import render_chat
from data.synth_tasks import THINK_OFF

# Token type ids Qwen2.5-VL's get_rope_index reads: text 0, image 1.
TEXT_TYPE, IMAGE_TYPE = 0, 1


@dataclass(frozen=True)
class Generation:
    text: str         # the generated continuation, decoded without special tokens (<|im_end|> not included)
    new_tokens: int   # tokens generated, the stopping <|im_end|> included
    prompt: str       # the rendered chat text the model continued (image placeholders not expanded)


@dataclass
class EncodedPrompt:
    text: str
    input_ids: list[int]              # image placeholders expanded
    images: list[Image.Image]


def as_image(ref: Any) -> Image.Image:
    """An RGB image from encoded bytes, a file path or a PIL image."""
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, (bytes, bytearray)):
        with Image.open(io.BytesIO(ref)) as image:
            return image.convert("RGB")
    if isinstance(ref, (str, Path)):
        with Image.open(ref) as image:
            return image.convert("RGB")
    raise TypeError(f"an image part holds {type(ref).__name__}; expected bytes, a path or a PIL image")


def render_prompt(parts: Sequence[dict], thinking: bool) -> str:
    """The chat text of one user turn and the opened assistant turn, as the model was trained on it."""
    text, _ = render_chat([{"role": "user", "content": list(parts)}])
    return f"{text}{IM_START}assistant\n" + ("" if thinking else THINK_OFF)


class Generator:
    """Greedy answers of `model` for prompts, `cfg.batch_size` at a time."""

    def __init__(self, model, tokenizer, image_processor, cfg: GenerationConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.cfg = cfg
        self.merge_size = int(image_processor.merge_size)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.eos_token_id = tokenizer.convert_tokens_to_ids(IM_END)
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: left padding needs one")
        self.pad_token_id = tokenizer.pad_token_id

    def encode(self, parts: Sequence[dict], thinking: bool) -> EncodedPrompt:
        for i, part in enumerate(parts):
            if part.get("type") not in ("image", "text"):
                raise ValueError(f"prompt part {i} has type {part.get('type')!r}; expected 'image' or 'text'")
        text = render_prompt(parts, thinking)
        images = [as_image(part["image"]) for part in parts if part["type"] == "image"]
        return EncodedPrompt(text, self.tokenizer(text, add_special_tokens=False)["input_ids"], images)

    def _batch(self, prompts: Sequence[EncodedPrompt]) -> dict[str, torch.Tensor]:
        """Left-padded model inputs; image placeholders expanded to each image's merged-patch count."""
        images = [image for p in prompts for image in p.images]
        kwargs: dict[str, torch.Tensor] = {}
        counts: list[int] = []
        if images:
            processed = self.image_processor(images=images, return_tensors="pt")
            kwargs["pixel_values"] = processed["pixel_values"]
            kwargs["image_grid_thw"] = processed["image_grid_thw"]
            counts = [int(t * h * w) // self.merge_size ** 2 for t, h, w in processed["image_grid_thw"].tolist()]
        rows, image = [], 0
        for p in prompts:
            ids: list[int] = []
            for token in p.input_ids:
                if token == self.image_token_id:
                    ids.extend([token] * counts[image])
                    image += 1
                else:
                    ids.append(token)
            rows.append(ids)
        if image != len(images):
            raise ValueError(f"{image} image placeholders in the rendered prompts but {len(images)} images")
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, width - len(ids):] = 1
        mm_token_type_ids = torch.where(input_ids == self.image_token_id, IMAGE_TYPE, TEXT_TYPE).to(torch.int32)
        mm_token_type_ids = mm_token_type_ids.masked_fill(attention_mask == 0, TEXT_TYPE)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "mm_token_type_ids": mm_token_type_ids,
                 **kwargs}
        return {k: v.to(self.model.device) for k, v in batch.items()}

    def hf_generation_config(self):
        from transformers import GenerationConfig as HFGenerationConfig

        return HFGenerationConfig(do_sample=False, num_beams=1, max_new_tokens=self.cfg.max_new_tokens,
                                  eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id, use_cache=True)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[dict]], thinking: bool | None = None) -> list[Generation]:
        """One greedy answer per prompt, in prompt order."""
        thinking = self.cfg.thinking if thinking is None else thinking
        encoded = [self.encode(parts, thinking) for parts in prompts]
        # Longest first: the first batch shows at once whether the longest prompts fit in memory.
        order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i].input_ids), i))
        results: list[Generation | None] = [None] * len(encoded)
        was_training = self.model.training
        self.model.eval()
        generation_config = self.hf_generation_config()
        try:
            for start in range(0, len(order), self.cfg.batch_size):
                chunk = order[start:start + self.cfg.batch_size]
                batch = self._batch([encoded[i] for i in chunk])
                out = self.model.generate(**batch, generation_config=generation_config)
                new = out[:, batch["input_ids"].shape[1]:].tolist()
                for i, tokens in zip(chunk, new):
                    # A row that stopped is padded after its <|im_end|>; one that did not ran to max_new_tokens.
                    if self.eos_token_id in tokens:
                        tokens = tokens[:tokens.index(self.eos_token_id) + 1]
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                    results[i] = Generation(text=text, new_tokens=len(tokens), prompt=encoded[i].text)
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]
