"""The pre-training job: one stage of the MiMo-VL recipe under DeepSpeed.

    deepspeed [launcher args] --module training.pretrain --config step.yaml --result result.json

In: one resolved step config (training.config.StepConfig). Out: an HF-format checkpoint published to
`output_uri` with its manifest, and result.json. `fit()` resumes from the step's own DeepSpeed checkpoints
in `work_dir` when there are any (model, optimizer, scheduler, data position, RNG), else starts from the
input checkpoint (the previous stage's), else builds the model from config (stage 1).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time

PROCESS_STARTED = time.time()  # the job's wall time (result.json) counts from here: imports included

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from conf import validated
from training.config import StepConfig, check_inputs
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
        from storage.store import open_store

        folder = open_store(cfg.storage).materialize(cfg.input_checkpoint, Path(cfg.work_dir) / "input")
        return load_hf_checkpoint(folder, attn_implementation=cfg.model.attn_implementation)
    tokenizer = load_tokenizer(cfg.model, cfg.runs_dir, cfg.storage)
    model = build_model(cfg.model, tokenizer, runs_dir=cfg.runs_dir, storage=cfg.storage)
    return model, tokenizer, build_image_processor(cfg.model.processor)


def latest_tag(ckpt_dir: Path) -> str | None:
    latest = ckpt_dir / "latest"
    return latest.read_text().strip() if latest.exists() else None


@dataclass
class StepStats:
    step: int
    loss: float
    tokens: int
    samples: int


class MetricsCallback:
    """Every `log_every` steps (rank 0): a progress line for the log and step metrics into the MLflow run."""

    def __init__(self, trainer: PretrainTrainer):
        self.trainer = trainer
        cfg = trainer.cfg
        self.client = None
        if rank() == 0 and cfg.tracking.run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
        self._reset()

    def _reset(self) -> None:
        self.tokens, self.samples, self.start = 0, 0, time.time()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.trainer.cfg.tracking.run_id,
                              metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def on_step(self, stats: StepStats) -> None:
        t = self.trainer
        self.tokens += stats.tokens
        self.samples += stats.samples
        every = t.cfg.stage.log_every
        if stats.step % every and stats.step != t.total_steps:
            return
        elapsed = max(time.time() - self.start, 1e-9)
        tokens_per_s = self.tokens / elapsed
        metrics = {
            "loss": stats.loss,
            "lr": t.scheduler.get_last_lr()[0],
            "grad_norm": float(t.engine.get_global_grad_norm() or 0.0),
            "tokens_per_s": tokens_per_s,
            "samples_per_s": self.samples / elapsed,
        }
        if t.on_gpu and t.cfg.peak_tflops_per_device:
            metrics["mfu"] = 6 * t.n_params * tokens_per_s / (t.cfg.peak_tflops_per_device * 1e12 * world_size())
        if rank() == 0:
            eta = (t.total_steps - stats.step) * elapsed / every
            print(f"[{t.cfg.step}] step {stats.step}/{t.total_steps} loss {stats.loss:.4f} lr {metrics['lr']:.3g} "
                  f"grad_norm {metrics['grad_norm']:.3g} tokens/s {tokens_per_s:.0f} ETA {eta:.0f}s", flush=True)
            self.log(stats.step, metrics)
        self._reset()


class CheckpointCallback:
    """Every `checkpoint_every` steps: a DeepSpeed checkpoint of everything a resume needs."""

    def __init__(self, trainer: PretrainTrainer):
        self.trainer = trainer

    def on_step(self, stats: StepStats) -> None:
        t = self.trainer
        if stats.step % t.cfg.stage.checkpoint_every or stats.step == t.total_steps:
            return
        t.engine.save_checkpoint(str(t.ckpt_dir), tag=f"{CKPT_TAG_PREFIX}{stats.step}", client_state={
            "step": stats.step, "rows_consumed": t.rows_consumed, "tokens_seen": t.tokens_seen,
            "torch_rng": torch.get_rng_state()})
        if rank() == 0:
            print(f"[{t.cfg.step}] checkpoint at step {stats.step}: {t.ckpt_dir / f'{CKPT_TAG_PREFIX}{stats.step}'}",
                  flush=True)


class PretrainTrainer:
    def __init__(self, cfg: StepConfig):
        import deepspeed

        from model.parts import set_trainable
        from training.schedule import lr_factor

        self.cfg = cfg
        self.started = time.time()
        torch.manual_seed(cfg.stage.seed)
        self.on_gpu = torch.cuda.is_available()
        self.bf16 = cfg.stage.precision == "bf16" or (cfg.stage.precision == "auto" and self.on_gpu)
        self.model, self.tokenizer, self.image_processor = load_start_model(cfg)
        self.part_counts = set_trainable(self.model, cfg.stage.trainable)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.total_steps = cfg.stage.total_steps(world_size())
        optim = cfg.stage.optim
        optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=optim.lr,
                                      betas=tuple(optim.betas), eps=optim.eps, weight_decay=optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, self.total_steps, cfg.stage.schedule))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg, self.bf16))
        self.ckpt_dir = Path(cfg.work_dir) / "deepspeed"
        self.step, self.rows_consumed, self.tokens_seen = 0, 0, 0
        self.callbacks = [MetricsCallback(self), CheckpointCallback(self)]

    def resume(self) -> None:
        tag = latest_tag(self.ckpt_dir)
        if not tag:
            return
        _, state = self.engine.load_checkpoint(str(self.ckpt_dir), tag=tag, load_module_strict=False)
        self.step, self.rows_consumed, self.tokens_seen = state["step"], state["rows_consumed"], state["tokens_seen"]
        torch.set_rng_state(state["torch_rng"])
        if rank() == 0:
            print(f"[{self.cfg.step}] resumed from {self.ckpt_dir / tag} at step {self.step}/{self.total_steps}",
                  flush=True)

    def _batch(self, rows) -> dict:
        from data.collator import collate_packed

        batch = collate_packed(rows, self.cfg.stage.seq_len, self.tokenizer.pad_token_id)
        batch = {k: (v.to(self.engine.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if self.bf16 and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
        return batch

    def probe_loss(self, batches: list[dict]) -> float:
        """Mean loss on fixed rows (the same before and after training): did this stage learn?"""
        self.engine.eval()
        with torch.no_grad():
            losses = [self.engine(**batch).loss.item() for batch in batches]
        self.engine.train()
        return sum(losses) / len(losses)

    def train_step(self, next_rows) -> StepStats:
        """One optimizer step over `grad_accum` micro-batches of packed rows, then the callbacks."""
        tokens = samples = 0
        for _ in range(self.cfg.stage.grad_accum):
            rows = next_rows()
            self.rows_consumed += len(rows)
            loss = self.engine(**self._batch(rows)).loss
            self.engine.backward(loss)
            self.engine.step()
            tokens += sum(len(s) for row in rows for s in row) * world_size()
            samples += sum(len(row) for row in rows) * world_size()
        self.step += 1
        self.tokens_seen += tokens
        stats = StepStats(self.step, loss.item(), tokens, samples)
        for callback in self.callbacks:
            callback.on_step(stats)
        return stats

    def fit(self) -> dict:
        from training.mixture import build_row_stream
        from training.prefetch import Prefetcher

        cfg, stage = self.cfg, self.cfg.stage
        self.resume()
        probe_stream = build_row_stream(cfg, self.tokenizer, self.image_processor, rank=rank(),
                                        world_size=world_size(), purpose="probe")
        probe = [self._batch(probe_stream.next_rows(stage.rows_per_step)) for _ in range(stage.probe_batches)]
        probe_start = self.probe_loss(probe) if probe else float("nan")
        stream = build_row_stream(cfg, self.tokenizer, self.image_processor, rank=rank(), world_size=world_size())
        stream.skip(self.rows_consumed)
        prefetch = Prefetcher(lambda: stream.next_rows(stage.rows_per_step), stage.packing.prefetch_batches)
        stats = StepStats(self.step, float("nan"), 0, 0)
        try:
            self.engine.train()
            while self.step < self.total_steps:
                stats = self.train_step(prefetch.next)
        finally:
            prefetch.close()
        probe_end = self.probe_loss(probe) if probe else float("nan")
        result = self.export()
        result.update(tokens_seen=self.tokens_seen, wall_time_s=time.time() - self.started, metrics={
            "final_loss": stats.loss, "probe_loss_start": probe_start, "probe_loss_end": probe_end,
            "steps": self.step, "skipped_samples": stream.skipped,
            **{f"params_trainable_{p}": c["trainable"] for p, c in self.part_counts.items()}})
        self.callbacks[0].log(self.step, {"probe_loss_start": probe_start, "probe_loss_end": probe_end})
        return result

    def export(self) -> dict:
        """Consolidate the weights, write the HF checkpoint and publish it (rank 0)."""
        from model.checkpoint import save_hf_checkpoint

        state_dict = self.engine._zero3_consolidated_16bit_state_dict() if self.cfg.stage.zero_stage == 3 else None
        if rank() != 0:
            return {"status": "ok", "output_uri": self.cfg.output_uri, "output_digest": None}
        from storage.store import open_store

        folder = Path(self.cfg.work_dir) / "export"
        shutil.rmtree(folder, ignore_errors=True)
        save_hf_checkpoint(self.model, self.tokenizer, self.image_processor, folder, state_dict=state_dict)
        manifest = open_store(self.cfg.storage).publish(folder, self.cfg.output_uri, run_id=self.cfg.tracking.run_id,
                                                        step_key=self.cfg.step_key, meta={"step": self.cfg.step},
                                                        overwrite=True)
        return {"status": "ok", "output_uri": self.cfg.output_uri, "output_digest": manifest.digest}


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
    check_inputs(cfg)
    result = PretrainTrainer(cfg).fit()
    result["wall_time_s"] = time.time() - PROCESS_STARTED  # the job's, not only its training's
    if rank() == 0:
        tmp = Path(args.result).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, args.result)
    return 0


if __name__ == "__main__":
    code = main()
    # Everything is written (result.json, checkpoints, the store, MLflow: all synchronous); skip the
    # interpreter's teardown of torch and DeepSpeed, which takes ~2 s on 2 cores and helps no one.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
