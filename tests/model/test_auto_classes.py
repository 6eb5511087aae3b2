"""An exported checkpoint is a plain transformers folder: Auto classes load it alone and generate exactly
what this project's own generation path does (what lmms-eval, VLMEvalKit and vLLM rely on)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CHECK = Path(__file__).with_name("auto_load_check.py")


def test_an_exported_checkpoint_loads_with_auto_classes_and_generates_like_the_project(
        tiny_model, tokenizer, image_processor, tmp_path):
    from evaluation.generate import Generator, render_prompt
    from evaluation.generation_config import GenerationConfig
    from model.checkpoint import save_hf_checkpoint

    folder = save_hf_checkpoint(tiny_model, tokenizer, image_processor, tmp_path / "export")
    # A process that imports nothing of this repository, run outside it, on the folder alone.
    done = subprocess.run([sys.executable, str(CHECK), str(folder)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    auto = json.loads(done.stdout.strip().splitlines()[-1])
    assert auto["model"] == "Qwen2_5_VLForConditionalGeneration" and auto["chat_template"]
    assert auto["processor"].startswith("Qwen2_5_VLProcessor") or auto["processor"] == "AutoProcessor"

    parts = [{"type": "image", "image": Image.fromarray(
        np.arange(112 * 112 * 3, dtype=np.uint32).reshape(112, 112, 3).astype(np.uint8))},
        {"type": "text", "text": "What colour is the square?"}]
    assert auto["prompt"] == render_prompt(parts, thinking=True)   # the chat template is the training format
    assert auto["image_tokens"] == 16                                # 112x112 -> 4x4 merged patches
    ours = Generator(tiny_model, tokenizer, image_processor, GenerationConfig(1, len(auto["new_ids"]), True))
    generation = ours.generate([parts])[0]
    assert generation.text == auto["new_text"]
    assert generation.new_tokens == len(auto["new_ids"]) and len(auto["new_ids"]) >= 1
    source = CHECK.read_text()
    assert not any(f"{word} {pkg}" in source for word in ("import", "from")
                   for pkg in ("model", "data", "evaluation", "training", "conf"))   # the folder alone
