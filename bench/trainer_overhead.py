"""Tokens/s of the pretrain job's step loop against a bare PyTorch loop (prints JSON).

Both sides train the same tiny model from the same weights on the same pre-encoded packed rows with the
same AdamW, clipping and LR schedule, in one process. The job side is PretrainTrainer.train_step
(DeepSpeed engine, callbacks, metric logging); the bare side is forward / backward / clip / step.
A third figure runs the job's loop fed by its real data stream (encoding on the prefetch thread).
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from conf import compose, load_group


def _step_config(cfg, tmp: Path, data: Path) -> Path:
    root = compose([f"stages.{cfg.stage}.seq_len={cfg.seq_len}", f"stages.{cfg.stage}.zero_stage={cfg.zero_stage}",
                    f"stages.{cfg.stage}.checkpoint_every=1000000", f"stages.{cfg.stage}.log_every=1000000",
                    f"stages.{cfg.stage}.budget.steps=1000000"])
    step = {"step": "bench", "model": root.model, "stage": root.stages[cfg.stage],
            "data": {"uri": str(data), "split": "pretrain"}, "output_uri": f"file://{tmp}/store/bench",
            "work_dir": str(tmp / "work"), "runs_dir": str(tmp / "runs"), "storage": root.storage}
    path = tmp / "step.yaml"
    OmegaConf.save(OmegaConf.create(step), path)
    return path


def _time(fn, rows, steps) -> float:
    tokens = 0
    start = time.perf_counter()
    for i in range(steps):
        tokens += fn(rows[i % len(rows)])
    return tokens / (time.perf_counter() - start)


def main() -> None:
    cfg = load_group("bench", "trainer_overhead")
    torch.set_num_threads(cfg.torch_threads)
    from data.collator import collate_packed
    from data.config import load_data_config, load_resize_spec
    from data.synth import generate
    from training.distributed import ensure_single_process_env
    from training.mixture import build_row_stream
    from training.pretrain import PretrainTrainer, load_step_config
    from training.schedule import lr_factor

    ensure_single_process_env()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data_cfg = load_data_config("synthetic")
        generate(tmp / "data", cfg.samples, cfg.seed, data_cfg, load_resize_spec(data_cfg.model))
        step_cfg = load_step_config(_step_config(cfg, tmp, tmp / "data"))
        trainer = PretrainTrainer(step_cfg)
        stage = step_cfg.stage
        stream = build_row_stream(step_cfg, trainer.tokenizer, trainer.image_processor, rank=0, world_size=1)
        rows = [stream.next_rows(stage.rows_per_step) for _ in range(cfg.steps)]

        # The bare loop: a model with the same start weights, plain AdamW, the same schedule and clipping.
        from model.build import build_model
        from model.parts import set_trainable

        bare = build_model(step_cfg.model, trainer.tokenizer, runs_dir=step_cfg.runs_dir)
        bare.load_state_dict(trainer.model.state_dict())
        set_trainable(bare, stage.trainable)
        params = [p for p in bare.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=stage.optim.lr, betas=tuple(stage.optim.betas), eps=stage.optim.eps,
                                weight_decay=stage.optim.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 10**6, stage.schedule))
        bare.train()

        def bare_step(packed) -> int:
            batch = collate_packed(packed, stage.seq_len, trainer.tokenizer.pad_token_id)
            loss = bare(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, stage.optim.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            return sum(len(s) for r in packed for s in r)

        def job_step(packed) -> int:
            return trainer.train_step(lambda: packed).tokens

        for _ in range(cfg.warmup_steps):
            bare_step(rows[0])
            job_step(rows[0])
        bare_tps, job_tps = [], []
        for _ in range(cfg.rounds):
            bare_tps.append(_time(bare_step, rows, cfg.steps))
            job_tps.append(_time(job_step, rows, cfg.steps))

        from training.prefetch import Prefetcher

        prefetch = Prefetcher(lambda: stream.next_rows(stage.rows_per_step), stage.packing.prefetch_batches)
        start, tokens = time.perf_counter(), 0
        for _ in range(cfg.steps):
            tokens += trainer.train_step(prefetch.next).tokens
        with_data_tps = tokens / (time.perf_counter() - start)
        prefetch.close()

    bare_median, job_median = statistics.median(bare_tps), statistics.median(job_tps)
    print(json.dumps({
        "bench": "trainer_overhead",
        "stage": cfg.stage, "seq_len": cfg.seq_len, "zero_stage": cfg.zero_stage,
        "torch_threads": cfg.torch_threads, "steps_per_round": cfg.steps, "rounds": cfg.rounds,
        "bare_tokens_per_s": round(bare_median, 1),
        "job_tokens_per_s": round(job_median, 1),
        "ratio": round(job_median / bare_median, 4),
        "target_ratio": 0.90,
        "job_with_data_stream_tokens_per_s": round(with_data_tps, 1),
        "ratio_with_data_stream": round(with_data_tps / bare_median, 4),
        "rounds_bare": [round(x, 1) for x in bare_tps],
        "rounds_job": [round(x, 1) for x in job_tps],
    }, indent=2))


if __name__ == "__main__":
    main()
