"""The training engine the job programs share (pre-training now, GRPO later).

A DeepSpeed engine built from a TrainingConfig (optimizer, schedule and every DeepSpeed setting come from
conf/), an optimizer step over micro-batches with the loss as a global token mean (training/losses.py),
checkpoints that hold everything a resume needs (model, optimizer, scheduler, the job's own state and
every rank's RNG), strict module loading on resume, retention of the last `checkpoint_keep` checkpoints,
and callbacks (metrics logging, checkpointing) that run after each step. What a job feeds it (its data,
its probe, its export) stays in the job.
"""
from __future__ import annotations

import logging
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from training.config import TrainingConfig
from training.distributed import rank, world_size
from training.losses import all_reduce_sum, backward_scale, batch_label_tokens, lm_batch_loss_sum

log = logging.getLogger("mimovl.engine")

TAG_PREFIX = "step"
RANK_STATE_DIR = "rank_state"   # inside a tag folder: one file per rank (its RNG and the job's per-rank state)


class CheckpointMismatch(RuntimeError):
    """A checkpoint that does not fit the run resuming from it (other tensors, another world size)."""


@dataclass
class StepStats:
    step: int
    loss: float              # global token mean of the step (all micro-batches, all ranks)
    tokens: int              # over all ranks
    samples: int             # over all ranks
    label_tokens: int        # over all ranks: the loss's denominator
    rank_loss_sum: float     # this rank's share of the numerator
    rank_label_tokens: int   # this rank's share of the denominator


class Callback(Protocol):
    def on_step(self, engine: TrainingEngine, stats: StepStats) -> None: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)   # CUDA too


def rng_state() -> dict[str, Any]:
    """This process's RNG states, in types torch.load(weights_only=True) reads back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        if "cuda" not in state:
            raise CheckpointMismatch("the checkpoint was written without CUDA; its RNG has no CUDA state to restore")
        torch.cuda.set_rng_state(state["cuda"])


def uses_bf16(precision: str) -> bool:
    return precision == "bf16" or (precision == "auto" and torch.cuda.is_available())


def deepspeed_config(cfg: TrainingConfig, bf16: bool) -> dict[str, Any]:
    """The DeepSpeed config: the typed fields for what they own, `cfg.deepspeed` for everything else."""
    return {
        **cfg.deepspeed,
        "train_micro_batch_size_per_gpu": cfg.rows_per_step,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": bf16},
    }


def checkpoint_tags(ckpt_dir: Path) -> list[str]:
    """The engine's checkpoint tags in `ckpt_dir`, oldest first."""
    found = []
    for path in ckpt_dir.glob(f"{TAG_PREFIX}*"):
        match = re.fullmatch(rf"{TAG_PREFIX}(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path.name))
    return [tag for _, tag in sorted(found)]


def latest_tag(ckpt_dir: Path) -> str | None:
    latest = ckpt_dir / "latest"
    return latest.read_text().strip() if latest.exists() else None


def param_groups(model: torch.nn.Module, lr: float, lr_scale: dict[str, float]) -> list[dict]:
    """The trainable parameters as AdamW groups: one per model part at lr * lr_scale[part] when lr_scale names
    any part (parts by model.parts.part_of), else one group at lr."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not lr_scale:
        return [{"params": [p for _, p in trainable], "lr": lr, "lr_scale": 1.0}]
    from model.parts import part_of

    by_part: dict[str, list[torch.nn.Parameter]] = {}
    for name, p in trainable:
        by_part.setdefault(part_of(name), []).append(p)
    return [{"params": params, "lr": lr * lr_scale.get(part, 1.0), "lr_scale": lr_scale.get(part, 1.0), "part": part}
            for part, params in by_part.items()]


class TrainingEngine:
    """`model` under DeepSpeed with AdamW and the LR schedule of `cfg`, for `total_steps` optimizer steps.

    `name` prefixes the engine's log lines; checkpoints go to `ckpt_dir` under tags step<N>.
    """

    def __init__(self, model: torch.nn.Module, cfg: TrainingConfig, *, total_steps: int, ckpt_dir: Path,
                 name: str):
        import deepspeed

        from training.schedule import lr_factor

        self.cfg, self.total_steps, self.ckpt_dir, self.name = cfg, total_steps, Path(ckpt_dir), name
        self.module = model
        self.bf16 = uses_bf16(cfg.precision)
        self.n_params = sum(p.numel() for p in model.parameters())
        optim = cfg.optim
        self.base_optimizer = torch.optim.AdamW(
            param_groups(model, optim.lr, optim.lr_scale), lr=optim.lr, betas=tuple(optim.betas),
            eps=optim.eps, weight_decay=optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.base_optimizer, lambda s: lr_factor(s, total_steps, cfg.schedule))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=self.base_optimizer, lr_scheduler=scheduler,
            config=deepspeed_config(cfg, self.bf16))
        self.step = 0
        self.callbacks: list[Callback] = []

    @property
    def device(self) -> torch.device:
        return self.engine.device

    def to_device(self, batch: dict) -> dict:
        batch = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if self.bf16 and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
        return batch

    def train_step(self, micro_batches: Sequence[dict], *, tokens: int, samples: int,
                   loss_sum: Callable[[Any, dict], torch.Tensor] = lm_batch_loss_sum,
                   count: Callable[[dict], int] = batch_label_tokens) -> StepStats:
        """One optimizer step over this rank's `grad_accum` micro-batches (model inputs on the device).

        `loss_sum(model, batch)` is a micro-batch's summed token loss and `count(batch)` its tokens; the
        step's loss is the sum over all micro-batches and ranks divided by their total count, which is
        all-reduced before the first backward. `tokens` and `samples` are this rank's, for throughput.
        """
        if len(micro_batches) != self.cfg.grad_accum:
            raise ValueError(f"{len(micro_batches)} micro-batches for grad_accum {self.cfg.grad_accum}")
        counts = [count(batch) for batch in micro_batches]
        step_labels, step_tokens, step_samples = all_reduce_sum([sum(counts), tokens, samples])
        scale = backward_scale(int(step_labels), self.cfg.grad_accum, world_size())
        rank_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        for batch in micro_batches:
            loss = loss_sum(self.engine, batch)
            self.engine.backward(loss * scale)
            self.engine.step()
            rank_sum += loss.detach()
        rank_loss_sum = float(rank_sum)
        (global_sum,) = all_reduce_sum([rank_loss_sum])
        self.step += 1
        stats = StepStats(self.step, global_sum / step_labels, int(step_tokens), int(step_samples),
                          int(step_labels), rank_loss_sum, sum(counts))
        for callback in self.callbacks:
            callback.on_step(self, stats)
        return stats

    def mean_loss(self, batches: Sequence[dict], loss_sum: Callable[[Any, dict], torch.Tensor] = lm_batch_loss_sum,
                  count: Callable[[dict], int] = batch_label_tokens) -> float:
        """The global token mean of the loss over `batches` (of every rank), without training."""
        self.engine.eval()
        with torch.no_grad():
            total = sum(float(loss_sum(self.engine, batch)) for batch in batches)
        self.engine.train()
        summed, tokens = all_reduce_sum([total, sum(count(b) for b in batches)])
        if tokens <= 0:
            raise ValueError("no label token in the batches (on any rank): their loss is undefined")
        return summed / tokens

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0] / self.base_optimizer.param_groups[0]["lr_scale"]

    def grad_norm(self) -> float:
        return float(self.engine.get_global_grad_norm() or 0.0)

    # -- checkpoints ------------------------------------------------------------------------------------

    def save_checkpoint(self, shared: dict[str, Any], own: dict[str, Any]) -> Path:
        """A checkpoint of the model, optimizer and scheduler, `shared` (the same on every rank; saved once)
        and `own` (this rank's) plus this rank's RNG; then only the last `checkpoint_keep` are kept."""
        tag = f"{TAG_PREFIX}{self.step}"
        rank_dir = self.ckpt_dir / tag / RANK_STATE_DIR
        rank_dir.mkdir(parents=True, exist_ok=True)
        # Written before DeepSpeed's save, which writes `latest` last: a tag that `latest` names is complete.
        torch.save({"world_size": world_size(), "rng": rng_state(), "own": own}, rank_dir / f"rank{rank()}.pt")
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state={"step": self.step, **shared})
        if rank() == 0:
            self._prune()
            print(f"[{self.name}] checkpoint at step {self.step}: {self.ckpt_dir / tag}", flush=True)
        return self.ckpt_dir / tag

    def _prune(self) -> None:
        tags = checkpoint_tags(self.ckpt_dir)
        keep = set(tags[-self.cfg.checkpoint_keep:]) | {latest_tag(self.ckpt_dir)}
        for tag in tags:
            if tag not in keep:
                shutil.rmtree(self.ckpt_dir / tag, ignore_errors=True)

    def resume(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Restore the latest checkpoint (strictly: every tensor of the model, no other) and this rank's RNG;
        (shared, own) as saved, or None when there is none."""
        tag = latest_tag(self.ckpt_dir)
        if not tag:
            return None
        folder = self.ckpt_dir / tag
        rank_file = folder / RANK_STATE_DIR / f"rank{rank()}.pt"
        if not rank_file.exists():
            raise CheckpointMismatch(f"{folder}: no state for rank {rank()} ({rank_file} is missing); was it written "
                                     f"with another world size than {world_size()}?")
        saved = torch.load(rank_file, weights_only=True)
        if saved["world_size"] != world_size():
            raise CheckpointMismatch(f"{folder} was written by {saved['world_size']} ranks, this run has "
                                     f"{world_size()}")
        try:
            _, shared = self.engine.load_checkpoint(str(self.ckpt_dir), tag=tag, load_module_strict=True)
        except RuntimeError as exc:
            if "state_dict" not in str(exc):
                raise
            raise CheckpointMismatch(f"{folder}: the checkpoint's module does not match the model: {exc}") from exc
        if shared is None:
            raise CheckpointMismatch(f"{folder}: DeepSpeed found no checkpoint to load there")
        set_rng_state(saved["rng"])
        self.step = shared["step"]
        if rank() == 0:
            print(f"[{self.name}] resumed from {folder} at step {self.step}/{self.total_steps}", flush=True)
        return shared, saved["own"]

    def consolidated_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Under ZeRO-3 the full weights gathered on rank 0 (every rank must call it); None otherwise (the
        module holds them)."""
        return self.engine._zero3_consolidated_16bit_state_dict() if self.cfg.zero_stage == 3 else None


class MetricsCallback:
    """Every `log_every` steps and at the last (rank 0): a progress line and step metrics into the MLflow run."""

    def __init__(self, *, tracking_uri: str | None, run_id: str | None, peak_tflops_per_device: float | None):
        self.run_id, self.peak_tflops = run_id, peak_tflops_per_device
        self.client = None
        if rank() == 0 and run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=tracking_uri)
        self._reset()

    def _reset(self) -> None:
        self.tokens, self.samples, self.start = 0, 0, time.time()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def on_step(self, engine: TrainingEngine, stats: StepStats) -> None:
        self.tokens += stats.tokens
        self.samples += stats.samples
        every = engine.cfg.log_every
        if stats.step % every and stats.step != engine.total_steps:
            return
        if rank() == 0:
            elapsed = max(time.time() - self.start, 1e-9)
            tokens_per_s = self.tokens / elapsed
            metrics = {"loss": stats.loss, "lr": engine.lr(), "grad_norm": engine.grad_norm(),
                       "tokens_per_s": tokens_per_s, "samples_per_s": self.samples / elapsed}
            if torch.cuda.is_available() and self.peak_tflops:
                metrics["mfu"] = 6 * engine.n_params * tokens_per_s / (self.peak_tflops * 1e12 * world_size())
            eta = (engine.total_steps - stats.step) * elapsed / every
            print(f"[{engine.name}] step {stats.step}/{engine.total_steps} loss {stats.loss:.4f} "
                  f"lr {metrics['lr']:.3g} grad_norm {metrics['grad_norm']:.3g} tokens/s {tokens_per_s:.0f} "
                  f"ETA {eta:.0f}s", flush=True)
            self.log(stats.step, metrics)
        self._reset()


class CheckpointCallback:
    """Every `checkpoint_every` steps but the last (the job exports that one): a resumable checkpoint of the
    engine with the job's state, `state() -> (shared, own)` at that moment."""

    def __init__(self, state: Callable[[], tuple[dict[str, Any], dict[str, Any]]]):
        self.state = state

    def on_step(self, engine: TrainingEngine, stats: StepStats) -> None:
        if stats.step % engine.cfg.checkpoint_every or stats.step == engine.total_steps:
            return
        engine.save_checkpoint(*self.state())
