"""The pre-training job: one stage of the MiMo-VL recipe under DeepSpeed.

    deepspeed [launcher args] --module training.pretrain --config step.yaml --result result.json

In: one resolved step config (training.config.StepConfig). Out: an HF-format checkpoint published to
`output_uri` with its manifest, and result.json (with `resumed` and each rank's own counts). The job is
the stage's data stream, probe and export around the shared training engine (training/engine.py):
`fit()` measures the probe loss on fixed batches of `stage.probe_split` with the start weights, then
resumes from the step's own checkpoints in `work_dir` when there are any (model, optimizer, scheduler,
data stream position, every rank's RNG), else trains from the input checkpoint (the previous stage's),
else from a model built from config (stage 1).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time

PROCESS_STARTED = time.time()  # the job's wall time (result.json) counts from here: imports included

from pathlib import Path  # noqa: E402

from conf import validated
from storage.durable import write_atomically
from telemetry.system_metrics import system_metrics
from training.config import StepConfig, check_inputs
from training.distributed import ensure_single_process_env, rank, world_size

log = logging.getLogger("mimovl.pretrain")


def load_step_config(path: str | Path) -> StepConfig:
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"step config {path} does not exist")
    return validated(StepConfig, OmegaConf.load(path), where=str(path))


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


def gather_ranks(own: dict) -> list[dict]:
    """Every rank's `own` on every rank, in rank order."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [own]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, own)
    return out


class PretrainJob:
    """One stage: its data stream and probe on the training engine, then the export."""

    def __init__(self, cfg: StepConfig):
        from model.parts import set_trainable
        from training.engine import CheckpointCallback, MetricsCallback, TrainingEngine, seed_everything

        self.cfg = cfg
        self.started = time.time()
        seed_everything(cfg.stage.seed)   # before the model is built: every rank builds the same one
        self.model, self.tokenizer, self.image_processor = load_start_model(cfg)
        self.part_counts = set_trainable(self.model, cfg.stage.trainable)
        self.engine = TrainingEngine(self.model, cfg.stage, total_steps=cfg.stage.total_steps(world_size()),
                                     ckpt_dir=Path(cfg.work_dir) / "deepspeed", name=cfg.step)
        self.metrics = MetricsCallback(tracking_uri=cfg.tracking.tracking_uri, run_id=cfg.tracking.run_id,
                                       peak_tflops_per_device=cfg.peak_tflops_per_device)
        self.engine.callbacks = [self, self.metrics, CheckpointCallback(self.checkpoint_state)]
        self.tokens_seen = 0                        # all ranks
        self.rank = {"rows_consumed": 0, "tokens": 0, "label_tokens": 0}   # this rank's own counts
        self.last_step = {"loss_sum": math.nan, "label_tokens": 0}        # this rank's share of the last step
        self.stream_state: dict | None = None       # of the last batch a step consumed

    def on_step(self, engine, stats) -> None:
        """Runs first after each step (before the checkpoint callback), so a checkpoint counts this step."""
        self.tokens_seen += stats.tokens
        self.rank["label_tokens"] += stats.rank_label_tokens
        self.last_step = {"loss_sum": stats.rank_loss_sum, "label_tokens": stats.rank_label_tokens}

    def checkpoint_state(self) -> tuple[dict, dict]:
        return {"tokens_seen": self.tokens_seen}, {**self.rank, "stream": self.stream_state}

    def _batch(self, rows) -> dict:
        from data.collator import collate_packed

        return self.engine.to_device(collate_packed(rows, self.cfg.stage.seq_len, self.tokenizer.pad_token_id))

    def probe_batches(self) -> list[dict]:
        """Fixed batches of the held-out split (the same for every run of this step): did this stage learn?"""
        from training.losses import batch_label_tokens
        from training.mixture import build_row_stream

        cfg, stage = self.cfg, self.cfg.stage
        if not stage.probe_batches:
            return []
        split = stage.probe_split
        stream = build_row_stream(cfg, self.tokenizer, self.image_processor, rank=rank(), world_size=world_size(),
                                  split=split, purpose="probe")
        # training.config.check_mixture_sources has checked that the split holds every source of the mixture.
        batches = [self._batch(stream.next_rows(stage.rows_per_step)) for _ in range(stage.probe_batches)]
        if not sum(batch_label_tokens(b) for b in batches):
            raise ValueError(f"stage.probe_split: the rows of split {split!r} of {cfg.data.uri} carry no label token "
                             "(its samples are prompts without an assistant answer): no loss to probe")
        return batches

    def resume(self, stream) -> bool:
        restored = self.engine.resume()
        if restored is None:
            return False
        shared, own = restored
        self.tokens_seen = shared["tokens_seen"]
        self.rank = {key: own[key] for key in self.rank}
        self.stream_state = own["stream"]
        stream.load_state_dict(self.stream_state)
        return True

    def train_step(self, next_rows):
        """One optimizer step over `grad_accum` micro-batches of packed rows, each with the stream state after it."""
        batches, tokens, samples = [], 0, 0
        for _ in range(self.cfg.stage.grad_accum):
            rows, self.stream_state = next_rows()
            batches.append(self._batch(rows))
            tokens += sum(len(s) for row in rows for s in row)
            samples += sum(len(row) for row in rows)
            self.rank["rows_consumed"] += len(rows)
        self.rank["tokens"] += tokens
        return self.engine.train_step(batches, tokens=tokens, samples=samples)

    def fit(self) -> dict:
        from training.engine import StepStats
        from training.mixture import build_row_stream
        from training.prefetch import Prefetcher

        cfg, stage, engine = self.cfg, self.cfg.stage, self.engine
        probe = self.probe_batches()
        probe_start = engine.mean_loss(probe) if probe else float("nan")   # start weights: before any resume
        stream = build_row_stream(cfg, self.tokenizer, self.image_processor, rank=rank(), world_size=world_size())
        resumed = self.resume(stream)
        prefetch = Prefetcher(lambda: (stream.next_rows(stage.rows_per_step), stream.state_dict()),
                              stage.packing.prefetch_batches)
        stats = StepStats(engine.step, float("nan"), 0, 0, 0, math.nan, 0)
        try:
            engine.engine.train()
            while engine.step < engine.total_steps:
                stats = self.train_step(prefetch.next)
        finally:
            prefetch.close()
        probe_end = engine.mean_loss(probe) if probe else float("nan")
        ranks = gather_ranks({"rank": rank(), **self.rank, "skipped_samples": stream.skipped,
                              "last_step_loss_sum": self.last_step["loss_sum"],
                              "last_step_label_tokens": self.last_step["label_tokens"]})
        result = self.export()
        result.update(resumed=resumed, tokens_seen=self.tokens_seen, wall_time_s=time.time() - self.started,
                      ranks=ranks, metrics={
                          "final_loss": stats.loss, "probe_loss_start": probe_start, "probe_loss_end": probe_end,
                          "steps": engine.step, "skipped_samples": sum(r["skipped_samples"] for r in ranks),
                          **{f"params_trainable_{p}": c["trainable"] for p, c in self.part_counts.items()}})
        self.metrics.log(engine.step, {"probe_loss_start": probe_start, "probe_loss_end": probe_end})
        return result

    def export(self) -> dict:
        """Consolidate the weights, write the HF checkpoint and publish it (rank 0)."""
        from model.checkpoint import save_hf_checkpoint

        state_dict = self.engine.consolidated_state_dict()
        if rank() != 0:
            return {"status": "ok", "output_uri": self.cfg.output_uri, "output_digest": None}
        from storage.store import open_store

        folder = Path(self.cfg.work_dir) / "export"
        shutil.rmtree(folder, ignore_errors=True)
        save_hf_checkpoint(self.model, self.tokenizer, self.image_processor, folder, state_dict=state_dict)
        manifest = open_store(self.cfg.storage).publish(folder, self.cfg.output_uri, run_id=self.cfg.tracking.run_id,
                                                        step_key=self.cfg.step_key, meta={"step": self.cfg.step})
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
    with system_metrics(cfg.system_metrics, cfg.tracking.tracking_uri, cfg.tracking.run_id):
        result = PretrainJob(cfg).fit()
    result["wall_time_s"] = time.time() - PROCESS_STARTED  # the job's, not only its training's
    if rank() == 0:
        write_atomically(Path(args.result), json.dumps(result, indent=2).encode())
    return 0


if __name__ == "__main__":
    code = main()
    # Everything is written (result.json, checkpoints, the store, MLflow: all synchronous); skip the
    # interpreter's teardown of torch and DeepSpeed, which takes ~2 s on 2 cores and helps no one.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
