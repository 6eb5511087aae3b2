"""Typed stage configuration (conf/stage/*.yaml) and the resolved step config a job receives.

No torch import: the orchestrator validates these before any job starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from conf import ConfigError
from model.config import PARTS, ModelConfig
from telemetry.system_metrics import SystemMetricsConfig

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class OptimConfig:
    name: str = MISSING
    lr: float = MISSING
    betas: list[float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING
    grad_clip: float = MISSING
    # per model part (vit | projector | llm): its learning rate is lr times this; a part not named: 1
    lr_scale: dict[str, float] = MISSING


@dataclass
class ScheduleConfig:
    kind: str = MISSING
    warmup_steps: int = MISSING
    min_lr_ratio: float = MISSING


@dataclass
class BudgetConfig:
    steps: int | None = None
    tokens: int | None = None


@dataclass
class PackingConfig:
    buffer_size: int = MISSING
    min_fill: float = MISSING
    prefetch_batches: int = MISSING   # batches encoded and packed ahead, on a background thread


# DeepSpeed keys that come from the typed fields above (one place each), never from `deepspeed:`.
DERIVED_DEEPSPEED_KEYS = {
    "train_micro_batch_size_per_gpu": "rows_per_step",
    "train_batch_size": "rows_per_step x grad_accum x world size",
    "gradient_accumulation_steps": "grad_accum",
    "gradient_clipping": "optim.grad_clip",
    "zero_optimization": "zero_stage",
    "bf16": "precision",
    "fp16": "precision",
    "optimizer": "optim",
    "scheduler": "schedule",
}


@dataclass
class TrainingConfig:
    """What the training engine (training/engine.py) needs: batch, optimizer, schedule, DeepSpeed, checkpoints.

    A pre-training stage extends it; so can any other job that trains on the engine (e.g. GRPO).
    """

    rows_per_step: int = MISSING    # micro-batch per rank
    grad_accum: int = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    zero_stage: int = MISSING
    precision: str = MISSING
    deepspeed: dict[str, Any] = MISSING   # DeepSpeed settings that no field above gives (steps_per_print, ...)
    checkpoint_every: int = MISSING
    checkpoint_keep: int = MISSING        # DeepSpeed checkpoints kept in the work folder (the last K)
    log_every: int = MISSING
    seed: int = MISSING

    def check(self, where: str) -> None:
        def fail(key: str, why: str) -> None:
            raise ConfigError(f"{where}: {key}: {why}")

        if not self.optim.lr > 0:
            fail("optim.lr", f"must be > 0, got {self.optim.lr}")
        if self.optim.name != "adamw":
            fail("optim.name", f"only 'adamw' is supported, got {self.optim.name!r}")
        if len(self.optim.betas) != 2 or not all(0 <= b < 1 for b in self.optim.betas):
            fail("optim.betas", f"two numbers in [0, 1), got {list(self.optim.betas)}")
        if self.optim.weight_decay < 0 or self.optim.grad_clip <= 0 or self.optim.eps <= 0:
            fail("optim", "weight_decay must be >= 0, grad_clip and eps > 0")
        for part, scale in self.optim.lr_scale.items():
            if part not in PARTS:
                fail(f"optim.lr_scale.{part}", f"not a model part; choose from {list(PARTS)}")
            if not scale > 0:
                fail(f"optim.lr_scale.{part}", f"must be > 0, got {scale}")
        if self.schedule.kind not in SCHEDULES:
            fail("schedule.kind", f"one of {list(SCHEDULES)}, got {self.schedule.kind!r}")
        if self.schedule.warmup_steps < 0 or not 0 <= self.schedule.min_lr_ratio <= 1:
            fail("schedule", "warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        for key in ("rows_per_step", "grad_accum", "checkpoint_every", "checkpoint_keep", "log_every"):
            if getattr(self, key) <= 0:
                fail(key, f"must be > 0, got {getattr(self, key)}")
        if self.zero_stage not in (0, 1, 2, 3):
            fail("zero_stage", f"0, 1, 2 or 3, got {self.zero_stage}")
        if self.precision not in PRECISIONS:
            fail("precision", f"one of {list(PRECISIONS)}, got {self.precision!r}")
        for key in sorted(set(self.deepspeed) & set(DERIVED_DEEPSPEED_KEYS)):
            fail(f"deepspeed.{key}", f"comes from {DERIVED_DEEPSPEED_KEYS[key]}; set that instead")


@dataclass
class StageConfig(TrainingConfig):
    name: str = MISSING
    trainable: list[str] = MISSING
    mixture: dict[str, float] = MISSING
    seq_len: int = MISSING
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    packing: PackingConfig = field(default_factory=PackingConfig)
    probe_batches: int = MISSING   # fixed batches whose loss is measured before and after the stage
    probe_split: str = MISSING     # the data split they come from (held out: "heldout")

    def check(self, where: str) -> None:
        def fail(key: str, why: str) -> None:
            raise ConfigError(f"{where}: {key}: {why}")

        unknown = sorted(set(self.trainable) - set(PARTS))
        if unknown:
            fail("trainable", f"unknown part(s) {unknown}; choose from {list(PARTS)}")
        if not self.trainable:
            fail("trainable", "no part to train")
        if not self.mixture:
            fail("mixture", "empty data mixture")
        for source, weight in self.mixture.items():
            if not weight >= 0:
                fail(f"mixture.{source}", f"weight must be >= 0 (0 leaves the source out), got {weight}")
        if not self.drawn_mixture():
            fail("mixture", f"every weight is 0: nothing to draw ({dict(self.mixture)})")
        super().check(where)
        if (self.budget.steps is None) == (self.budget.tokens is None):
            fail("budget", "set exactly one of budget.steps and budget.tokens")
        for key in ("steps", "tokens"):
            value = getattr(self.budget, key)
            if value is not None and value <= 0:
                fail(f"budget.{key}", f"must be > 0, got {value}")
        if self.seq_len <= 0:
            fail("seq_len", f"must be > 0, got {self.seq_len}")
        if not 0 <= self.packing.min_fill <= 1 or self.packing.buffer_size <= 0 or self.packing.prefetch_batches <= 0:
            fail("packing", "min_fill in [0, 1], buffer_size > 0 and prefetch_batches > 0")
        if self.probe_batches < 0:
            fail("probe_batches", f"must be >= 0, got {self.probe_batches}")

    def drawn_mixture(self) -> dict[str, float]:
        """The sources the stage draws from: those of weight > 0. A profile leaves a source of the stage file out
        with weight 0 (Hydra merges mappings key by key, so an override cannot delete a key)."""
        return {source: weight for source, weight in self.mixture.items() if weight > 0}

    def total_steps(self, world_size: int) -> int:
        if self.budget.steps is not None:
            return self.budget.steps
        tokens_per_step = self.seq_len * self.rows_per_step * self.grad_accum * world_size
        return max(1, -(-self.budget.tokens // tokens_per_step))


@dataclass
class DataRef:
    uri: str = MISSING            # folder or s3:// prefix of the data set (holding manifest.json)
    split: str = MISSING          # pretrain | rl | eval


@dataclass
class TrackingRef:
    tracking_uri: str | None = None
    run_id: str | None = None     # the step's MLflow run; rank 0 logs into it


@dataclass
class StepConfig:
    """Everything a pretrain job needs; written by the orchestrator (or by hand) as one YAML file."""

    step: str = MISSING
    step_key: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    data: DataRef = field(default_factory=DataRef)
    input_checkpoint: str | None = None   # store URI; null: build from model.init (stage 1)
    output_uri: str = MISSING             # store URI the exported checkpoint is published to
    work_dir: str = MISSING               # step-local folder: DeepSpeed checkpoints for resume, logs
    runs_dir: str = MISSING
    storage: Any = None                   # conf/storage section (the store's own schema validates it)
    tracking: TrackingRef = field(default_factory=TrackingRef)
    peak_tflops_per_device: float | None = None   # for the MFU estimate on GPU (conf/launcher)
    system_metrics: SystemMetricsConfig | None = None  # conf/tracking's sampling; null: none (a run by hand)

    def check(self, where: str) -> None:
        self.model.check(f"{where}: model")
        self.stage.check(f"{where}: stage")
        if self.system_metrics is not None:
            self.system_metrics.check(f"{where}: system_metrics")


def check_inputs(cfg: StepConfig) -> None:
    """Fail before any training when an input is missing: the input checkpoint, or the data set."""
    from storage.files import join
    from storage.store import open_store

    if cfg.input_checkpoint and not open_store(cfg.storage).exists(cfg.input_checkpoint):
        raise ConfigError(f"input_checkpoint: no checkpoint at {cfg.input_checkpoint} (no manifest.json there)")
    storage = data_storage(cfg)
    if not storage.list(join(cfg.data.uri, cfg.data.split), ".jsonl"):
        raise ConfigError(f"data.uri: no *.jsonl shards in {cfg.data.uri} split {cfg.data.split!r}")
    check_mixture_sources(cfg, storage)


def check_mixture_sources(cfg: StepConfig, storage) -> None:
    """Every source of the stage's mixture has samples in the training split and in the probe split (the data
    set's manifest counts them per split and task): fails before the model is built, naming the sources."""
    from data.manifest import load_manifest

    splits = load_manifest(cfg.data.uri, storage).get("splits", {})
    wanted = sorted(cfg.stage.drawn_mixture())
    checks = [("stage.mixture", cfg.data.split)]
    if cfg.stage.probe_batches:
        checks.append(("stage.probe_split", cfg.stage.probe_split))
    for key, split in checks:
        tasks = (splits.get(split) or {}).get("tasks") or {}
        missing = [task for task in wanted if not tasks.get(task)]
        if missing:
            raise ConfigError(f"{key}: split {split!r} of {cfg.data.uri}: stage.mixture names source(s) {missing} "
                              f"with no sample there; it has {sorted(t for t, n in tasks.items() if n)}")


def data_storage(cfg: StepConfig):
    """Access to the data set's files with the step's storage config: its S3 client settings and the
    retries of a transiently failing read (storage.read_retry)."""
    from storage.files import Storage

    if cfg.storage is None:
        raise ConfigError("storage: the step config needs the conf/storage section to read its data")
    return Storage(cfg.storage, where="storage")
