"""Packing efficiency of the synthetic pre-training mixture (prints JSON).

packing_efficiency: real tokens / all tokens of the packed rows the training stream emits.
naive_padding_efficiency: the same samples, in the same order, padded per batch of `naive_batch`.
samples_per_s: samples read, encoded (tokenised, image-processed) and packed per second.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from conf import compose, load_group


def main() -> None:
    cfg = load_group("bench", "packing")
    torch.set_num_threads(cfg.torch_threads)
    from data.collator import Packer, SampleEncoder
    from data.config import load_data_config, load_resize_spec
    from data.synth import generate
    from model.config import model_config_from
    from model.processor import build_image_processor
    from model.tokenizer import load_tokenizer
    from training.config import StageConfig
    from training.mixture import RowStream, read_pools
    from conf import validated

    root = compose([])
    model_cfg = model_config_from(root.model)
    stage = validated(StageConfig, root.stages[cfg.stage], f"stages.{cfg.stage}")
    with tempfile.TemporaryDirectory() as tmp:
        data_cfg = load_data_config("synthetic")
        generate(Path(tmp) / "data", cfg.samples, cfg.seed, data_cfg, load_resize_spec(data_cfg.model))
        tokenizer = load_tokenizer(model_cfg, Path(tmp) / "runs")
        processor = build_image_processor(model_cfg.processor)
        encoder = SampleEncoder(tokenizer, processor, model_cfg.processor.merge_size)
        reader, pools = read_pools(str(Path(tmp) / "data"), "pretrain", sorted(stage.mixture))
        results = {}
        for seq_len in cfg.seq_lens:
            packer = Packer(seq_len=seq_len, buffer_size=stage.packing.buffer_size, min_fill=stage.packing.min_fill)
            stream = RowStream(pools, dict(stage.mixture), seed=stage.seed, purpose="train", rank=0, world_size=1,
                               split="pretrain", reader=reader, encoder=encoder, packer=packer)
            start = time.perf_counter()
            rows = stream.next_rows(cfg.rows[seq_len])
            seconds = time.perf_counter() - start
            lengths = [len(s) for row in rows for s in row]
            naive_total = sum(
                len(batch) * max(batch)
                for batch in (lengths[i:i + cfg.naive_batch] for i in range(0, len(lengths), cfg.naive_batch))
            )
            results[str(seq_len)] = {
                "rows": len(rows),
                "samples": len(lengths),
                "mean_sample_tokens": sum(lengths) / len(lengths),
                "packing_efficiency": round(sum(lengths) / (len(rows) * seq_len), 4),
                "naive_padding_efficiency": round(sum(lengths) / naive_total, 4),
                "samples_per_s": round(len(lengths) / seconds, 1),
                "skipped_samples": stream.skipped,
            }
    print(json.dumps({
        "bench": "packing",
        "mixture_of": cfg.stage,
        "naive_batch": cfg.naive_batch,
        "torch_threads": cfg.torch_threads,
        "target_packing_efficiency": 0.97,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
