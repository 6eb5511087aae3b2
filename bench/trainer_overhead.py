"""Tokens/s of the pretrain job's step loop against a bare PyTorch loop (prints JSON).

Both sides train the same tiny model from the same weights on the same pre-encoded packed rows with the
same AdamW, clipping and LR schedule, in one process. The job side is PretrainJob.train_step as in a real
job: the training engine (DeepSpeed, global token-mean loss) with its callbacks on at the stage's own
log_every and checkpoint_every, metrics logged to an MLflow run on a local SQLite store and resumable
checkpoints (with retention) written to the work folder. The bare side is forward / backward / clip / step.
A third figure runs the job's loop fed by its real data stream (encoding on the prefetch thread).
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from conf import compose, load_group


def _mlflow_run(tmp: Path) -> tuple[str, str]:
    """(tracking URI, run id) of a fresh run on a local SQLite store, as the orchestration gives a job."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("trainer_overhead"))
    return uri, run.info.run_id


def _step_config(cfg, tmp: Path, data: Path) -> Path:
    # The stage's own log_every and checkpoint_every: logging and checkpointing cost what they cost in a job.
    root = compose([f"stages.{cfg.stage}.seq_len={cfg.seq_len}", f"stages.{cfg.stage}.zero_stage={cfg.zero_stage}",
                    f"stages.{cfg.stage}.budget.steps=1000000"])
    tracking_uri, run_id = _mlflow_run(tmp)
    step = {"step": "bench", "model": root.model, "stage": root.stages[cfg.stage],
            "data": {"uri": str(data), "split": "pretrain"}, "output_uri": f"file://{tmp}/store/bench",
            "work_dir": str(tmp / "work"), "runs_dir": str(tmp / "runs"), "storage": root.storage,
            "tracking": {"tracking_uri": tracking_uri, "run_id": run_id}}
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
    os.environ.setdefault("DO_NOT_TRACK", "true")
    from data.collator import collate_packed
    from data.config import load_data_config, load_resize_spec
    from data.synth import generate
    from training.distributed import ensure_single_process_env
    from training.mixture import build_row_stream
    from training.pretrain import PretrainJob, load_step_config
    from training.schedule import lr_factor

    ensure_single_process_env()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data_cfg = load_data_config("synthetic")
        generate(tmp / "data", cfg.samples, cfg.seed, data_cfg, load_resize_spec(data_cfg.model))
        step_cfg = load_step_config(_step_config(cfg, tmp, tmp / "data"))
        trainer = PretrainJob(step_cfg)
        stage = step_cfg.stage
        if stage.grad_accum != 1:
            raise ValueError(f"bench.trainer_overhead: stage {cfg.stage} has grad_accum {stage.grad_accum}; "
                             "the bare loop compares one micro-batch per step")
        stream = build_row_stream(step_cfg, trainer.tokenizer, trainer.image_processor, rank=0, world_size=1)
        rows = [(stream.next_rows(stage.rows_per_step), stream.state_dict()) for _ in range(cfg.steps)]

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

        def bare_step(item) -> int:
            packed, _ = item
            batch = collate_packed(packed, stage.seq_len, trainer.tokenizer.pad_token_id)
            loss = bare(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, stage.optim.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            return sum(len(s) for r in packed for s in r)

        def job_step(item) -> int:
            return trainer.train_step(lambda: item).tokens

        for _ in range(cfg.warmup_steps):
            bare_step(rows[0])
            job_step(rows[0])
        bare_tps, job_tps = [], []
        for _ in range(cfg.rounds):
            bare_tps.append(_time(bare_step, rows, cfg.steps))
            job_tps.append(_time(job_step, rows, cfg.steps))

        from training.prefetch import Prefetcher

        prefetch = Prefetcher(lambda: (stream.next_rows(stage.rows_per_step), stream.state_dict()),
                              stage.packing.prefetch_batches)
        start, tokens = time.perf_counter(), 0
        for _ in range(cfg.steps):
            tokens += trainer.train_step(prefetch.next).tokens
        with_data_tps = tokens / (time.perf_counter() - start)
        prefetch.close()
        checkpoints = trainer.engine.step // stage.checkpoint_every
        logged = len(trainer.metrics.client.get_metric_history(step_cfg.tracking.run_id, "loss"))

    bare_median, job_median = statistics.median(bare_tps), statistics.median(job_tps)
    print(json.dumps({
        "bench": "trainer_overhead",
        "stage": cfg.stage, "seq_len": cfg.seq_len, "zero_stage": cfg.zero_stage,
        "torch_threads": cfg.torch_threads, "steps_per_round": cfg.steps, "rounds": cfg.rounds,
        "log_every": stage.log_every, "checkpoint_every": stage.checkpoint_every,
        "checkpoint_keep": stage.checkpoint_keep, "mlflow": "sqlite",
        "checkpoints_written": checkpoints, "metric_logs": logged,
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
