"""Load an exported checkpoint folder with transformers' Auto classes alone and generate from an image.

    python tests/model/auto_load_check.py FOLDER

Imports nothing from this repository (what lmms-eval, VLMEvalKit or vLLM would do with the folder): the
model through AutoModelForImageTextToText, the tokenizer (with its chat template) through AutoTokenizer, the
image processor through AutoImageProcessor, and the processor AutoProcessor picks for the folder. Where
torchvision is missing (this project's CPU machines: no build matches its torch), AutoProcessor cannot
build Qwen2.5-VL's video processor, so the same processor class is built from the two loaded parts without
one. Prints one JSON line: the classes loaded, the prompt's token count and the generated ids.
"""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer


def load_processor(folder: str):
    if importlib.util.find_spec("torchvision") is not None:
        return AutoProcessor.from_pretrained(folder), "AutoProcessor"
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    from transformers.utils import import_utils  # noqa: F401 (keeps the lazy module loaded)
    import transformers

    model_type = json.load(open(f"{folder}/config.json"))["model_type"]
    cls = getattr(transformers, PROCESSOR_MAPPING_NAMES[model_type])

    class WithoutVideo(cls):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.video_processor = None
            super(cls, self).__init__(image_processor, tokenizer, chat_template=chat_template)  # noqa: UP008
            self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
            self.video_token = "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)

    WithoutVideo.attributes = ["image_processor", "tokenizer"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return WithoutVideo(AutoImageProcessor.from_pretrained(folder), tokenizer,
                        chat_template=tokenizer.chat_template), f"{cls.__name__} without a video processor"


def main(folder: str) -> int:
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor, how = load_processor(folder)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the square?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.fromarray(np.arange(112 * 112 * 3, dtype=np.uint32).reshape(112, 112, 3).astype(np.uint8))
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    print(json.dumps({"model": type(model).__name__, "tokenizer": type(tokenizer).__name__, "processor": how,
                      "chat_template": tokenizer.chat_template is not None, "prompt": prompt,
                      "image_tokens": int((inputs["input_ids"] == processor.image_token_id).sum()),
                      "prompt_tokens": int(inputs["input_ids"].shape[1]),
                      "new_ids": out[0, inputs["input_ids"].shape[1]:].tolist(),
                      "new_text": tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
