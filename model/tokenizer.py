"""Tokenizer: a byte-level BPE trained on synthetic text (tiny profile) or the one saved with the LLM weights.

The trained tokenizer follows Qwen2's recipe (NFC normalizer, Qwen2's pre-tokenizer regex, byte-level
alphabet) and carries the ChatML and vision special tokens of data/chat_format.py, so the same chat template
and collator serve both profiles.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from data.chat_format import CHAT_TEMPLATE, END_OF_TEXT, IM_END, SPECIAL_TOKENS, THINK_TOKENS
from model.config import ModelConfig, require_weights

log = logging.getLogger(__name__)

# Qwen2's pre-tokenizer split pattern (tokenizer.json of the Qwen2 family).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
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


# The modules whose code shapes the trained tokenizer: its trainer, the chat format and the generator of
# its training corpus (the corpus texts themselves are hashed too, but a change in how the BPE is trained
# does not show in them).
TOKENIZER_CODE = ("model.tokenizer", "data.chat_format", "data.synth", "data.synth_tasks", "data.config",
                  "data.render", "data.schema")


def code_digest(modules: Iterable[str]) -> str:
    """sha256 over the source files of `modules` (dotted names), in the given order."""
    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise ValueError(f"TOKENIZER_CODE names {name!r}, which has no source file")
        h.update(name.encode() + b"\0" + Path(spec.origin).read_bytes() + b"\0")
    return h.hexdigest()


def tokenizer_cache_key(cfg: ModelConfig, corpus: list[str]) -> str:
    """sha256 of all that shapes the trained tokenizer: the config, the special tokens, the chat template,
    the pre-tokenizer, the training code (TOKENIZER_CODE), the `tokenizers` version and the corpus."""
    import tokenizers

    h = hashlib.sha256()
    h.update(json.dumps({
        "vocab_size": cfg.text.vocab_size, "min_frequency": cfg.tokenizer.min_frequency,
        "special_tokens": SPECIAL_TOKENS, "think_tokens": THINK_TOKENS, "eos": IM_END, "pad": END_OF_TEXT,
        "split_pattern": QWEN2_SPLIT_PATTERN, "chat_template": CHAT_TEMPLATE,
        "code": code_digest(TOKENIZER_CODE), "tokenizers": tokenizers.__version__,
    }, sort_keys=True).encode())
    for text in corpus:
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()


def tokenizer_cache_dir(cfg: ModelConfig, corpus: list[str], runs_dir: Path) -> Path:
    """Where the tokenizer trained on `corpus` with this config is cached: keyed by all that shapes it."""
    return Path(runs_dir) / "tokenizers" / f"{cfg.name}-{tokenizer_cache_key(cfg, corpus)[:16]}"


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

    from data.config import ResizeSpec, load_data_config
    from data.synth import synthetic_text

    # The corpus's coordinates refer to this model's own processor resize.
    resize = ResizeSpec(factor=cfg.processor.patch_size * cfg.processor.merge_size,
                        min_pixels=cfg.processor.min_pixels, max_pixels=cfg.processor.max_pixels)
    data_cfg = load_data_config("synthetic", model=cfg.name)
    corpus = list(synthetic_text(data_cfg, cfg.tokenizer.corpus_samples, cfg.tokenizer.seed, resize))
    cache = tokenizer_cache_dir(cfg, corpus, Path(runs_dir))
    if not (cache / "tokenizer.json").exists():
        log.info("training a %d-token BPE tokenizer on %d synthetic texts", cfg.text.vocab_size, len(corpus))
        tokenizer = train_tokenizer(corpus, cfg.text.vocab_size, cfg.tokenizer.min_frequency)
        # Several ranks may train at once: each writes its own folder and the first rename wins.
        tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(cache)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(cache)
