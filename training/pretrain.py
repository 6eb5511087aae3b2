"""The pre-training job: one stage of the MiMo-VL recipe under DeepSpeed.

    deepspeed [launcher args] --module training.pretrain --config step.yaml --result result.json

In: one resolved step config (training.config.StepConfig). Out: an HF-format checkpoint published to
`output_uri` with its manifest, and result.json. Every `checkpoint_every` steps a DeepSpeed checkpoint is
saved in `work_dir`; started again with the same work_dir the job resumes from the latest one (model,
optimizer, scheduler, data position, RNG) and ends in the same state as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from conf import validated
from training.config import StepConfig
from training.distributed import ensure_single_process_env, rank, world_size

log = logging.getLogger("mimovl.pretrain")

CKPT_TAG_PREFIX = "step"


def load_step_config(path: str | Path) -> StepConfig:
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"step config {path} does not exist")
    return validated(StepConfig, OmegaConf.load(path), where=str(path))


def deepspeed_config(cfg: StepConfig, bf16: bool) -> dict:
    stage = cfg.stage
    return {
        "train_micro_batch_size_per_gpu": stage.rows_per_step,
        "gradient_accumulation_steps": stage.grad_accum,
        "gradient_clipping": stage.optim.grad_clip,
        "zero_optimization": {"stage": stage.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 1 << 30,
        "zero_allow_untested_optimizer": True,
    }


def load_start_model(cfg: StepConfig):
    """(model, tokenizer, image_processor): the input checkpoint, else a model built from model.init."""
    from model.build import build_model
    from model.checkpoint import load_hf_checkpoint
    from model.processor import build_image_processor
    from model.tokenizer import load_tokenizer

    if cfg.input_checkpoint:
        from tasks.store import open_store

        folder = open_store(cfg.storage).materialize(cfg.input_checkpoint, Path(cfg.work_dir) / "input")
        model, tokenizer, processor = load_hf_checkpoint(folder, attn_implementation=cfg.model.attn_implementation)
        return model, tokenizer, processor
    tokenizer = load_tokenizer(cfg.model, cfg.runs_dir, cfg.storage)
    model = build_model(cfg.model, tokenizer, runs_dir=cfg.runs_dir, storage=cfg.storage)
    return model, tokenizer, build_image_processor(cfg.model.processor)


def latest_tag(ckpt_dir: Path) -> str | None:
    latest = ckpt_dir / "latest"
    return latest.read_text().strip() if latest.exists() else None


class MetricsSink:
    """Rank 0's step metrics into the step's MLflow run (when one is named) and the log."""

    def __init__(self, cfg: StepConfig):
        self.client = None
        self.run_id = cfg.tracking.run_id
        if rank() == 0 and self.run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def train(cfg: StepConfig) -> dict:
    import deepspeed

    from data.collator import collate_packed
    from model.parts import set_trainable
    from training.mixture import build_row_stream
    from training.schedule import lr_factor

    started = time.time()
    torch.manual_seed(cfg.stage.seed)
    on_gpu = torch.cuda.is_available()
    bf16 = cfg.stage.precision == "bf16" or (cfg.stage.precision == "auto" and on_gpu)
    model, tokenizer, image_processor = load_start_model(cfg)
    part_counts = set_trainable(model, cfg.stage.trainable)
    total_steps = cfg.stage.total_steps(world_size())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = cfg.stage.optim
    optimizer = torch.optim.AdamW(trainable, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                                  weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg.stage.schedule))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg, bf16)
    )
    work_dir = Path(cfg.work_dir)
    ckpt_dir = work_dir / "deepspeed"
    start_step, rows_consumed = 0, 0
    if latest_tag(ckpt_dir):
        _, client_state = engine.load_checkpoint(str(ckpt_dir), load_module_strict=False)
        start_step, rows_consumed = client_state["step"], client_state["rows_consumed"]
        torch.set_rng_state(client_state["torch_rng"])
        log.info("resumed from %s at step %d/%d", ckpt_dir / latest_tag(ckpt_dir), start_step, total_steps)

    rows = build_row_stream(cfg, tokenizer, image_processor, rank=rank(), world_size=world_size())
    rows.skip(rows_consumed)
    sink = MetricsSink(cfg)
    if rank() == 0:
        sink.log(start_step, {f"params_trainable_{p}": c["trainable"] for p, c in part_counts.items()})
    pad_id = tokenizer.pad_token_id
    tokens_seen = 0
    window_tokens, window_samples, window_start = 0, 0, time.time()
    loss_value = float("nan")
    engine.train()
    for step in range(start_step, total_steps):
        for _ in range(cfg.stage.grad_accum):
            packed = rows.next_rows(cfg.stage.rows_per_step)
            batch = collate_packed(packed, cfg.stage.seq_len, pad_id)
            batch = {k: (v.to(engine.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            if bf16 and "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            n_tokens = sum(len(s) for row in packed for s in row)
            tokens_seen += n_tokens * world_size()
            window_tokens += n_tokens * world_size()
            window_samples += sum(len(row) for row in packed) * world_size()
        loss_value = loss.item()
        done = step + 1
        if done % cfg.stage.log_every == 0 or done == total_steps:
            elapsed = max(time.time() - window_start, 1e-9)
            tps = window_tokens / elapsed
            metrics = {
                "loss": loss_value,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(engine.get_global_grad_norm() or 0.0),
                "tokens_per_s": tps,
                "samples_per_s": window_samples / elapsed,
            }
            if on_gpu and cfg.peak_tflops_per_device:
                n_params = sum(p.numel() for p in model.parameters())
                metrics["mfu"] = 6 * n_params * tps / (cfg.peak_tflops_per_device * 1e12 * world_size())
            if rank() == 0:
                eta = (total_steps - done) * elapsed / max(1, cfg.stage.log_every)
                print(f"[{cfg.step}] step {done}/{total_steps} loss {loss_value:.4f} lr {metrics['lr']:.3g} "
                      f"grad_norm {metrics['grad_norm']:.3g} tokens/s {tps:.0f} ETA {eta:.0f}s", flush=True)
                sink.log(done, metrics)
            window_tokens, window_samples, window_start = 0, 0, time.time()
        if done % cfg.stage.checkpoint_every == 0 and done < total_steps:
            engine.save_checkpoint(str(ckpt_dir), tag=f"{CKPT_TAG_PREFIX}{done}", client_state={
                "step": done, "rows_consumed": rows.consumed, "torch_rng": torch.get_rng_state()})
    result = export(cfg, engine, model, tokenizer, image_processor)
    result.update(tokens_seen=tokens_seen, wall_time_s=time.time() - started,
                  metrics={"final_loss": loss_value, "steps": total_steps, "skipped_samples": rows.skipped})
    return result


def export(cfg: StepConfig, engine, model, tokenizer, image_processor) -> dict:
    """Consolidate the weights, write the HF checkpoint and publish it (rank 0)."""
    from model.checkpoint import save_hf_checkpoint

    state_dict = None
    if cfg.stage.zero_stage == 3:
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    if rank() != 0:
        return {"status": "ok", "output_uri": cfg.output_uri, "output_digest": None}
    from tasks.store import open_store

    folder = Path(cfg.work_dir) / "export"
    shutil.rmtree(folder, ignore_errors=True)
    save_hf_checkpoint(model, tokenizer, image_processor, folder, state_dict=state_dict)
    manifest = open_store(cfg.storage).publish(folder, cfg.output_uri, run_id=cfg.tracking.run_id,
                                               step_key=cfg.step_key, meta={"step": cfg.step})
    return {"status": "ok", "output_uri": cfg.output_uri, "output_digest": manifest.digest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="resolved step config (YAML)")
    parser.add_argument("--result", required=True, help="where to write result.json")
    parser.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed runner")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    ensure_single_process_env()
    cfg = load_step_config(args.config)
    result = train(cfg)
    if rank() == 0:
        tmp = Path(args.result).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
