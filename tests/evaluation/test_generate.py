"""Batched greedy generation on the tiny model: left padding, stopping, budgets, prompt forms, training format."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image, ImageDraw

from data.chat_format import IM_END
from data.collator import collate_packed
from data.synth_tasks import THINK_OFF
from evaluation.generate import Generator, render_prompt
from evaluation.generation_config import GenerationConfig, generation_config_from

MAX_NEW = 6


def picture(size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(image).rectangle((10, 10, size[0] // 2, size[1] // 2), fill=colour)
    return image


def prompts() -> list[list[dict]]:
    """Prompts of different lengths: images of three sizes, two images, none."""
    return [
        [{"type": "image", "image": picture((112, 112), (220, 40, 40))}, {"type": "text", "text": "What colour?"}],
        [{"type": "text", "text": "How many apples does Alice have if she buys 3 and eats 1?"}],
        [{"type": "image", "image": picture((224, 168), (40, 80, 220))}, {"type": "text", "text": "Value of bar A?"}],
        [{"type": "text", "text": "Picture 1:"}, {"type": "image", "image": picture((112, 112), (40, 170, 60))},
         {"type": "text", "text": "Picture 2:"}, {"type": "image", "image": picture((168, 56), (0, 0, 0))},
         {"type": "text", "text": "Describe each picture."}],
        [{"type": "image", "image": picture((168, 56), (120, 20, 20))}, {"type": "text", "text": "Read it."}],
    ]


def generator(model, tokenizer, image_processor, batch_size=8, max_new_tokens=MAX_NEW, thinking=False):
    return Generator(model, tokenizer, image_processor, GenerationConfig(batch_size, max_new_tokens, thinking))


class LogitsBias:
    """A forward hook on lm_head: adds `bias(call, row)` (a {token: value} dict) to the last position's logits."""

    def __init__(self, bias):
        self.bias, self.calls = bias, 0

    def __call__(self, module, args, logits):
        logits = logits.clone()
        for row in range(logits.shape[0]):
            for token, value in self.bias(self.calls, row).items():
                logits[row, -1, token] += value
        self.calls += 1
        return logits


@pytest.fixture()
def lively_model(tiny_model):
    """The tiny model with larger random weights: at the init scale every prompt gets the same greedy tokens."""
    generator_ = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in tiny_model.parameters():
            param.add_(torch.randn(param.shape, generator=generator_) * 0.2)
    return tiny_model


def test_batched_output_equals_one_by_one(lively_model, tokenizer, image_processor):
    one = generator(lively_model, tokenizer, image_processor, batch_size=1).generate(prompts())
    batched = generator(lively_model, tokenizer, image_processor, batch_size=3).generate(prompts())
    assert [(g.text, g.new_tokens, g.prompt) for g in batched] == [(g.text, g.new_tokens, g.prompt) for g in one]
    assert len({g.text for g in one}) > 1   # the prompts (and their images) do change the answers


def test_first_token_logits_match_the_training_forward(lively_model, tokenizer, image_processor, encoder):
    """The eval prompt is a token prefix of the training sample, and under left padding in a batch the model sees
    it as training did (packed rows with the collator's M-RoPE positions): same logits at the answer's start."""
    tiny_model = lively_model
    gen = generator(tiny_model, tokenizer, image_processor)
    answer = THINK_OFF + "red"
    messages = [{"role": "user", "content": prompts()[0]}, {"role": "assistant", "content": answer}]
    images = [prompts()[0][0]["image"]]
    sample = encoder.encode("s", messages, images)
    encoded = [gen.encode(p, thinking=False) for p in (prompts()[3], prompts()[0])]   # prompt 0 gets left-padded
    batch = gen._batch(encoded)
    n = int(batch["attention_mask"][1].sum())
    assert batch["attention_mask"][1, 0] == 0
    assert batch["input_ids"][1, -n:].tolist() == sample.input_ids[:n].tolist()
    assert sample.input_ids[n:].tolist() == tokenizer("red" + IM_END + "\n", add_special_tokens=False)["input_ids"]

    tiny_model.eval()
    with torch.no_grad():
        out = tiny_model.generate(**batch, generation_config=gen.hf_generation_config(), max_new_tokens=1,
                                  output_logits=True, return_dict_in_generate=True)
        train = collate_packed([[sample]], len(sample), tokenizer.pad_token_id)
        train_logits = tiny_model(**{k: v for k, v in train.items() if k != "labels"}).logits
    torch.testing.assert_close(out.logits[0][1], train_logits[0, n - 1], atol=1e-4, rtol=1e-4)


def test_stops_at_im_end_row_by_row(tiny_model, tokenizer, image_processor):
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    # Row r of a batch ends at step r: rows stop at different times, the batch when the last one has.
    hook = LogitsBias(lambda call, row: {im_end: 1e4} if call >= row else {im_end: -1e4})
    handle = tiny_model.lm_head.register_forward_hook(hook)
    try:
        out = generator(tiny_model, tokenizer, image_processor, batch_size=5, max_new_tokens=20).generate(prompts())
    finally:
        handle.remove()
    assert sorted(g.new_tokens for g in out) == [1, 2, 3, 4, 5]
    assert hook.calls == 5
    for g in out:
        assert IM_END not in g.text
        assert len(tokenizer(g.text, add_special_tokens=False)["input_ids"]) <= g.new_tokens - 1


def test_max_new_tokens_is_respected(tiny_model, tokenizer, image_processor):
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    handle = tiny_model.lm_head.register_forward_hook(LogitsBias(lambda call, row: {im_end: -1e4}))
    try:
        out = generator(tiny_model, tokenizer, image_processor, batch_size=2, max_new_tokens=4).generate(prompts())
    finally:
        handle.remove()
    assert [g.new_tokens for g in out] == [4] * len(prompts())


def test_thinking_forms(tiny_model, tokenizer, image_processor):
    parts = prompts()[1]
    off = render_prompt(parts, thinking=False)
    on = render_prompt(parts, thinking=True)
    assert on == "<|im_start|>user\n" + parts[0]["text"] + "<|im_end|>\n<|im_start|>assistant\n"
    assert off == on + "<think>\n</think>\n"
    default_off = generator(tiny_model, tokenizer, image_processor, max_new_tokens=1, thinking=False)
    default_on = generator(tiny_model, tokenizer, image_processor, max_new_tokens=1, thinking=True)
    assert default_off.generate([parts])[0].prompt == off
    assert default_on.generate([parts])[0].prompt == on
    assert default_off.generate([parts], thinking=True)[0].prompt == on
    assert default_on.generate([parts], thinking=False)[0].prompt == off


def test_image_bytes_paths_and_pil_give_the_same_answer(lively_model, tokenizer, image_processor, tmp_path):
    image = picture((112, 112), (245, 130, 20))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path = tmp_path / "x.png"
    path.write_bytes(buffer.getvalue())
    text = {"type": "text", "text": "What colour?"}
    forms = [[{"type": "image", "image": ref}, text] for ref in (image, buffer.getvalue(), path)]
    out = generator(lively_model, tokenizer, image_processor).generate(forms)
    assert len({(g.text, g.new_tokens) for g in out}) == 1


def test_bad_parts_and_config_fail_naming_the_problem(tiny_model, tokenizer, image_processor):
    from conf import ConfigError

    gen = generator(tiny_model, tokenizer, image_processor)
    with pytest.raises(ValueError, match="part 1 has type 'video'"):
        gen.generate([[{"type": "text", "text": "x"}, {"type": "video", "video": b""}]])
    with pytest.raises(ConfigError, match="batch_size"):
        generation_config_from({"batch_size": 0, "max_new_tokens": 4, "thinking": False})
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generation_config_from({"batch_size": 1, "thinking": False})


def test_the_shipped_generation_config_validates():
    from conf import compose

    cfg = generation_config_from(compose([]).eval.generation)
    assert cfg.batch_size >= 1 and cfg.max_new_tokens >= 1 and isinstance(cfg.thinking, bool)
