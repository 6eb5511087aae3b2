"""Tokenizer: a byte-level BPE trained on synthetic text (tiny profile) or the one saved with the LLM weights.

The trained tokenizer follows Qwen2's recipe (NFC normalizer, Qwen2's pre-tokenizer regex, byte-level
alphabet) and carries the ChatML and vision special tokens, so the same chat template and collator serve
both profiles.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from model.config import ModelConfig, require_weights

log = logging.getLogger(__name__)

# Qwen2's pre-tokenizer split pattern (tokenizer.json of the Qwen2 family).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]
# Reasoning markers stay visible when decoding with skip_special_tokens=True, as in Qwen2 / MiMo.
THINK_TOKENS = ["<think>", "</think>"]

# ChatML with Qwen2.5-VL's image placeholders; `content` is a string or a list of {type: text|image} parts.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int):
    """Train a Qwen2-style byte-level BPE on `texts`; returns a PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(THINK_TOKENS),
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 20,
    )
    tokenizer.add_tokens(THINK_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tokenizer_cache_dir(cfg: ModelConfig, corpus: list[str], runs_dir: Path) -> Path:
    """Where the tokenizer trained on `corpus` with this config is cached: keyed by all that shapes it."""
    h = hashlib.sha256()
    h.update(json.dumps([cfg.text.vocab_size, cfg.tokenizer.min_frequency, QWEN2_SPLIT_PATTERN, CHAT_TEMPLATE]).encode())
    for text in corpus:
        h.update(text.encode())
        h.update(b"\0")
    return Path(runs_dir) / "tokenizers" / f"{cfg.name}-{h.hexdigest()[:16]}"


def load_tokenizer(cfg: ModelConfig, runs_dir: str | Path, storage=None):
    """The tokenizer of this model config: trained once and cached under runs/, or loaded from the weights."""
    from transformers import AutoTokenizer

    if cfg.tokenizer.source == "load":
        from model.weights import local_weights_dir

        folder = local_weights_dir(require_weights(cfg, "llm"), runs_dir, storage)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(f"tokenizer in {folder} lacks the special tokens {missing}")
        if tokenizer.chat_template is None:
            tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    from data.config import load_data_config
    from data.synth import synthetic_text

    corpus = list(synthetic_text(load_data_config("synthetic"), cfg.tokenizer.corpus_samples, cfg.tokenizer.seed))
    cache = tokenizer_cache_dir(cfg, corpus, Path(runs_dir))
    if not (cache / "tokenizer.json").exists():
        log.info("training a %d-token BPE tokenizer on %d synthetic texts", cfg.text.vocab_size, len(corpus))
        tokenizer = train_tokenizer(corpus, cfg.text.vocab_size, cfg.tokenizer.min_frequency)
        # Several ranks may train at once: each writes its own folder and the first rename wins.
        tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(cache)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(cache)
