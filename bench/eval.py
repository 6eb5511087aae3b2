"""Generated tokens/s of the evaluation Generator against a bare HF `generate` loop (prints JSON).

Both sides decode the same prompts (the synthetic eval split) with the same tiny model (built from config,
randomly initialised) in the same batches, greedily, in one process. The Generator side is
`Generator.generate` end to end: rendering the chat prompts, decoding the images, image processing,
left padding, `model.generate`, cutting at <|im_end|> and detokenising. The bare side is only
`model.generate` on the model inputs the Generator built for those batches, prepared before the clock
starts. Tokens count up to and including each row's <|im_end|> (all of max_new_tokens when it never
comes), on both sides alike.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from conf import compose, load_group


def eval_prompts(data: Path, n: int) -> list[list[dict]]:
    """The user turns of the first `n` eval-split samples, image references replaced by their images."""
    from data.reader import SampleReader

    prompts = []
    for record in SampleReader(str(data), split="eval"):
        images = iter(record.images)
        parts = [{"type": "image", "image": next(images)} if part["type"] == "image" else dict(part)
                 for part in record.sample.messages[0]["content"]]
        prompts.append(parts)
        if len(prompts) == n:
            break
    return prompts


def main() -> None:
    cfg = load_group("bench", "eval")
    torch.set_num_threads(cfg.torch_threads)
    from data.config import load_data_config, load_resize_spec
    from data.synth import generate
    from evaluation.generate import Generator
    from evaluation.generation_config import generation_config_from
    from model.build import build_model
    from model.config import model_config_from
    from model.processor import build_image_processor
    from model.tokenizer import load_tokenizer

    root = compose([])
    model_cfg = model_config_from(root.model)
    gen_cfg = generation_config_from(root.eval.generation)
    with tempfile.TemporaryDirectory() as tmp:
        data_cfg = load_data_config("synthetic")
        generate(Path(tmp) / "data", cfg.samples, cfg.seed, data_cfg, load_resize_spec(data_cfg.model))
        prompts = eval_prompts(Path(tmp) / "data", cfg.prompts)
        tokenizer = load_tokenizer(model_cfg, Path(tmp) / "runs")
    model = build_model(model_cfg, tokenizer).eval()
    generator = Generator(model, tokenizer, build_image_processor(model_cfg.processor), gen_cfg)

    # The bare loop's inputs: the batches the Generator forms (its length order), built ahead of time.
    encoded = [generator.encode(p, gen_cfg.thinking) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i].input_ids), i))
    batches = [generator._batch([encoded[i] for i in order[s:s + gen_cfg.batch_size]])
               for s in range(0, len(order), gen_cfg.batch_size)]
    hf_config = generator.hf_generation_config()
    eos = generator.eos_token_id

    def bare() -> int:
        tokens = 0
        with torch.inference_mode():
            for batch in batches:
                out = model.generate(**batch, generation_config=hf_config)[:, batch["input_ids"].shape[1]:]
                for row in out.tolist():
                    tokens += row.index(eos) + 1 if eos in row else len(row)
        return tokens

    def ours() -> int:
        return sum(g.new_tokens for g in generator.generate(prompts))

    bare(), ours()   # warm-up: first-call allocations and lazy imports
    rounds = {"generator": [], "bare": []}
    tokens = {}
    for _ in range(cfg.rounds):
        for name, fn in (("generator", ours), ("bare", bare)):
            start = time.perf_counter()
            tokens[name] = fn()
            rounds[name].append(tokens[name] / (time.perf_counter() - start))
    generator_tps, bare_tps = statistics.median(rounds["generator"]), statistics.median(rounds["bare"])
    print(json.dumps({
        "bench": "eval",
        "prompts": len(prompts),
        "batch_size": gen_cfg.batch_size,
        "max_new_tokens": gen_cfg.max_new_tokens,
        "thinking": gen_cfg.thinking,
        "torch_threads": cfg.torch_threads,
        "generated_tokens": tokens,
        "generator_tokens_per_s": round(generator_tps, 1),
        "bare_generate_tokens_per_s": round(bare_tps, 1),
        "ratio": round(generator_tps / bare_tps, 3),
        "target_ratio": 0.90,
        "rounds_tokens_per_s": {k: [round(v, 1) for v in vs] for k, vs in rounds.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
