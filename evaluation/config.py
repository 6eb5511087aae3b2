"""Typed configuration of the eval job: the `eval:` section (conf/eval/<name>.yaml) and the resolved step
config an `evaluate` step's job receives (evaluation.run).

The orchestration validates the step config with `StepConfig` at planning (conf/orchestration
`kinds.evaluate.schema`), so a typo, a wrong type, an unknown benchmark or a gate on a benchmark the suite
does not score fails before any job starts, naming the key.

Suite names: `synthetic` stands for every `synthetic_<task>` benchmark of the data set's eval split (the
held-out suite evaluation.synthetic_suite writes); `synthetic_<task>` names one of them; a public name
(evaluation.benchmarks.ADAPTERS: mmmu, mmbench, ...) needs its data folder in `benchmarks:` (a folder, or
an s3:// prefix downloaded once per node into `<runs_dir>/<download_dir>`).

Gates: `gates: {<step>: {<benchmark>: <minimum score>}}` for any evaluation step of a pipeline. A step's
config keeps only its own step's entry (StepConfig.check normalises it), so changing one step's gate changes
only that step's key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from conf import REPO_ROOT, ConfigError
from evaluation.benchmarks import ADAPTERS, SYNTHETIC_PREFIX
from evaluation.compare import CompareConfig
from evaluation.generation_config import GenerationConfig
from evaluation.scoring_config import ScoringConfig
from model.config import ModelConfig
from telemetry.system_metrics import SystemMetricsConfig

SYNTHETIC_SUITE = "synthetic"  # every synthetic_<task> of the data set's eval split
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class EvalConfig:
    """conf/eval/<name>.yaml, composed as `eval:`."""

    name: str = MISSING
    suite: list[str] = MISSING                 # benchmark names, `synthetic` for the whole synthetic suite
    benchmarks: dict[str, str] = MISSING       # public benchmark -> its data folder or s3:// prefix
    max_samples: int | None = MISSING          # items per benchmark at most (the first ones); null: all
    precision: str = MISSING                   # auto (bf16 on cuda, fp32 on cpu) | fp32 | bf16
    download_dir: str = MISSING                # under runs_dir: s3:// benchmark folders, downloaded once per node
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    gates: dict[str, dict[str, float]] = MISSING   # step -> benchmark -> minimum score in [0, 1]
    compare: CompareConfig = field(default_factory=CompareConfig)  # evaluation.compare's (not read by the job)

    def check(self, where: str) -> None:
        def fail(key: str, why: str) -> None:
            raise ConfigError(f"{where}.{key}: {why}")

        if not self.suite:
            fail("suite", "no benchmark to score")
        if len(set(self.suite)) != len(self.suite):
            fail("suite", f"a benchmark is named twice: {list(self.suite)}")
        for i, name in enumerate(self.suite):
            if name == SYNTHETIC_SUITE or name.startswith(SYNTHETIC_PREFIX):
                continue
            if name not in ADAPTERS:
                fail(f"suite[{i}]", f"unknown benchmark {name!r}; known: {SYNTHETIC_SUITE}, "
                                    f"{SYNTHETIC_PREFIX}<task>, {', '.join(sorted(ADAPTERS))}")
            if name not in self.benchmarks:
                fail("benchmarks", f"no data folder for {name!r} (benchmarks.{name}: a folder or s3:// prefix "
                                   "in the layout its adapter documents)")
        for name, folder in self.benchmarks.items():
            if name not in self.suite:
                fail(f"benchmarks.{name}", f"a data folder for a benchmark the suite does not score "
                                           f"(suite: {list(self.suite)})")
            if not folder:
                fail(f"benchmarks.{name}", "empty folder")
        if self.max_samples is not None and self.max_samples < 1:
            fail("max_samples", f"must be >= 1 or null (all), got {self.max_samples}")
        if self.precision not in PRECISIONS:
            fail("precision", f"one of {list(PRECISIONS)}, got {self.precision!r}")
        self.generation.check(f"{where}.generation")
        self.compare.check(f"{where}.compare")
        for step, minimums in self.gates.items():
            for name, minimum in minimums.items():
                if not self.scores(name):
                    fail(f"gates.{step}.{name}", f"the suite does not score {name!r} (suite: {list(self.suite)})")
                if not 0 <= minimum <= 1:
                    fail(f"gates.{step}.{name}", f"a minimum score in [0, 1], got {minimum}")

    def scores(self, name: str) -> bool:
        """Whether the suite can hold benchmark `name` (synthetic_<task>: when the data set has the task)."""
        return name in self.suite or (name.startswith(SYNTHETIC_PREFIX) and SYNTHETIC_SUITE in self.suite)

    def public_folder(self, name: str) -> str:
        """A public benchmark's data location: a relative folder is relative to the repository root."""
        folder = self.benchmarks[name]
        if "://" in folder or Path(folder).is_absolute():
            return folder
        return str((REPO_ROOT / folder).resolve())


@dataclass
class DataRef:
    uri: str = MISSING            # the data set (folder or s3:// prefix holding manifest.json)
    split: str = MISSING          # the split the synthetic suite is written from (eval)


@dataclass
class TrackingRef:
    tracking_uri: str | None = None
    run_id: str | None = None     # the step's MLflow run: scores, the predictions table, system metrics


@dataclass
class StepConfig:
    """Everything an eval job needs; written by the orchestrator (or by hand) as one YAML file."""

    step: str = MISSING
    step_key: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    data: DataRef = field(default_factory=DataRef)
    input_checkpoint: str = MISSING       # store URI of the checkpoint to evaluate
    output_uri: str = MISSING             # store URI the artifact set (scores, predictions) is published to
    work_dir: str = MISSING               # step-local folder: the suite, predictions, scores before publishing
    runs_dir: str = MISSING
    storage: Any = None                   # conf/storage section (the store's own schema validates it)
    tracking: TrackingRef = field(default_factory=TrackingRef)
    system_metrics: SystemMetricsConfig | None = None  # conf/tracking's sampling; null: none (a run by hand)

    def check(self, where: str) -> None:
        self.model.check(f"{where}: model")
        self.eval.check(f"{where}: eval")
        self.scoring.check(f"{where}: scoring")
        if self.system_metrics is not None:
            self.system_metrics.check(f"{where}: system_metrics")
        # Only this step's gate stays in its config (and so in its key).
        self.eval.gates = {self.step: dict(self.eval.gates[self.step])} if self.eval.gates.get(self.step) else {}

    @property
    def gate(self) -> dict[str, float]:
        """This step's minimum score per benchmark (empty: no gate)."""
        return dict(self.eval.gates.get(self.step, {}))
