import model.tokenizer as tokenizer_module
from data.chat_format import SPECIAL_TOKENS, THINK_TOKENS
from model.tokenizer import code_digest, load_tokenizer, tokenizer_cache_key


def test_special_tokens_are_single_tokens(tokenizer):
    for token in SPECIAL_TOKENS + THINK_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token
    assert len(tokenizer) <= 4096


def test_chat_text_round_trips_exactly(tokenizer):
    messages = [
        {"role": "user", "content": [{"type": "image", "image": "a.png"},
                                      {"type": "text", "text": "How many circles? Ünïcödé, 12+7=19, \\boxed{x}"}]},
        {"role": "assistant", "content": "<think>\nCount them: 1, 2, 3.\n</think>\n\\boxed{3}"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many")
    assert text.endswith("\\boxed{3}<|im_end|>\n")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_tokenizer_is_trained_once_and_cached(tiny_cfg, tokenizer, runs_dir):
    cached = list((runs_dir / "tokenizers").iterdir())
    again = load_tokenizer(tiny_cfg, runs_dir)
    assert list((runs_dir / "tokenizers").iterdir()) == cached
    assert again.get_vocab() == tokenizer.get_vocab()


def test_training_is_deterministic(tiny_cfg, tokenizer, tmp_path):
    other = load_tokenizer(tiny_cfg, tmp_path)
    assert other.get_vocab() == tokenizer.get_vocab()


CORPUS = ["a small corpus", "of two texts"]


def test_the_cache_key_changes_with_the_special_tokens(tiny_cfg, monkeypatch):
    before = tokenizer_cache_key(tiny_cfg, CORPUS)
    assert tokenizer_cache_key(tiny_cfg, CORPUS) == before
    monkeypatch.setattr(tokenizer_module, "SPECIAL_TOKENS", SPECIAL_TOKENS + ["<|object_ref_start|>"])
    assert tokenizer_cache_key(tiny_cfg, CORPUS) != before
    monkeypatch.setattr(tokenizer_module, "SPECIAL_TOKENS", SPECIAL_TOKENS)
    monkeypatch.setattr(tokenizer_module, "THINK_TOKENS", ["<thinking>", "</thinking>"])
    assert tokenizer_cache_key(tiny_cfg, CORPUS) != before


def test_the_cache_key_changes_with_the_training_and_corpus_code(tiny_cfg, monkeypatch, tmp_path):
    assert {"model.tokenizer", "data.chat_format", "data.synth", "data.synth_tasks"} <= set(
        tokenizer_module.TOKENIZER_CODE)
    probe = tmp_path / "tokenizer_code_probe.py"
    probe.write_text("VERSION = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(tokenizer_module, "TOKENIZER_CODE", tokenizer_module.TOKENIZER_CODE + ("tokenizer_code_probe",))
    before = tokenizer_cache_key(tiny_cfg, CORPUS)
    probe.write_text("VERSION = 2\n")
    assert tokenizer_cache_key(tiny_cfg, CORPUS) != before
    assert code_digest(["data.chat_format"]) != code_digest(["data.synth"])


def test_the_cache_key_changes_with_the_corpus(tiny_cfg):
    assert tokenizer_cache_key(tiny_cfg, CORPUS) != tokenizer_cache_key(tiny_cfg, CORPUS[:1])
