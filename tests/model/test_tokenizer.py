from model.tokenizer import SPECIAL_TOKENS, THINK_TOKENS, load_tokenizer


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
