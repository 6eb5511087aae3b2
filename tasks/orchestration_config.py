"""Typed config of the orchestration (conf/orchestration/*.yaml) and of MLflow tracking (conf/tracking).

No Prefect, MLflow or torch import: the flow validates these before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from conf import ConfigError
from telemetry.system_metrics import SystemMetricsConfig


OUTPUT_TYPES = ("checkpoint", "artifacts")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ResourcesConfig:
    """Where and on what a step's job runs. A kind's defaults (kinds.<kind>.resources) are overridden key
    by key by a step entry's `resources:`; null: the composed `launcher` section's setting."""

    launcher: Optional[str] = None        # conf/launcher/<name>.yaml; null: the composed `launcher`
    runner: Optional[str] = None          # auto | python | torchrun | deepspeed
    nproc_per_node: Optional[int] = None  # processes per node
    nodes: Optional[int] = None           # nodes (multinode.num_nodes); 1 on a single-node launcher
    device: Optional[str] = None          # auto (cuda when the job's node has one, else cpu) | cpu | cuda

    def check(self, where: str) -> None:
        if self.device is not None and self.device not in DEVICES:
            raise ConfigError(f"{where}.device: one of {list(DEVICES)}, got {self.device!r}")
        for key in ("nproc_per_node", "nodes"):
            value = getattr(self, key)
            if value is not None and not (value >= 1 or value == -1):
                raise ConfigError(f"{where}.{key}: must be >= 1 or -1 (all), got {value}")

    def merged(self, override: ResourcesConfig) -> ResourcesConfig:
        """These settings with every non-null one of `override` in their place."""
        return ResourcesConfig(**{key: getattr(override, key) if getattr(override, key) is not None
                                  else getattr(self, key) for key in self.__dataclass_fields__})


@dataclass
class PrecisionConfig:
    """Where a kind's step config names its precision, and what `auto` stands for on each device."""

    path: str = MISSING                 # dotted path in the step config, e.g. stage.precision
    auto: dict[str, str] = MISSING      # device -> precision, e.g. {cuda: bf16, cpu: fp32}


@dataclass
class KindConfig:
    """One step kind, declared once (tasks/step_kinds.py builds and checks its steps from this)."""

    module: Optional[str] = MISSING          # the job module; null: not available yet
    available_with: Optional[str] = MISSING  # the issue that brings a kind whose module is null
    code: list[str] = MISSING                # folders/files (relative to the repo root) of the job's code
    step_keys: list[str] = MISSING           # a step entry's own keys besides kind, from and resources
    # step config section -> dotted path in the composed config; `{key}` is the step entry's value of
    # key, e.g. stage: stages.{stage}
    config: dict[str, str] = MISSING
    schema: Optional[str] = MISSING          # "module:Class" that validates the step config; null: none
    output: str = MISSING                    # checkpoint | artifacts (a manifested artifact set)
    input: Optional[str] = MISSING           # what the `from:` step must output; null: the kind takes none
    scores: Optional[str] = MISSING          # the output's scores.json-format file the run's score report reads
    split: Optional[str] = MISSING           # the data split the job reads; null: it reads no data
    precision: Optional[PrecisionConfig] = MISSING  # null: the job has no precision setting
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def check(self, where: str) -> None:
        if self.module is None:
            if not self.available_with:
                raise ConfigError(f"{where}: a kind without a module needs available_with")
            return
        if not self.code:
            raise ConfigError(f"{where}.code: list the job's code (it enters the step key)")
        if not self.config:
            raise ConfigError(f"{where}.config: map the step config's sections to the composed config")
        if self.output not in OUTPUT_TYPES:
            raise ConfigError(f"{where}.output: one of {list(OUTPUT_TYPES)}, got {self.output!r}")
        if self.input is not None and self.input not in OUTPUT_TYPES:
            raise ConfigError(f"{where}.input: one of {list(OUTPUT_TYPES)} or null, got {self.input!r}")
        if self.scores is not None and (self.output != "artifacts" or not self.scores or "/" in self.scores):
            raise ConfigError(f"{where}.scores: a file name in the kind's artifact set (output: artifacts) or "
                              f"null, got {self.scores!r} with output {self.output!r}")
        if self.schema is not None and ":" not in self.schema:
            raise ConfigError(f"{where}.schema: expected 'module:Class', got {self.schema!r}")
        if self.precision is not None and set(self.precision.auto) != set(DEVICES) - {"auto"}:
            raise ConfigError(f"{where}.precision.auto: give the precision for each of "
                              f"{sorted(set(DEVICES) - {'auto'})}, got {sorted(self.precision.auto)}")
        self.resources.check(f"{where}.resources")
        if self.resources.device is None:
            raise ConfigError(f"{where}.resources.device: a kind's default device is one of {list(DEVICES)}")


@dataclass
class ClaimsConfig:
    """Claims on step keys (storage.store.try_claim): one flow run works on a key at a time."""

    lease_s: float = MISSING      # a claim not renewed for this long is lost (its owner crashed)
    renew_s: float = MISSING      # how often the running owner renews it
    poll_s: float = MISSING       # how often a waiting run looks again

    def check(self, where: str) -> None:
        for key in ("lease_s", "renew_s", "poll_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{where}.{key}: must be > 0, got {getattr(self, key)}")
        if not self.renew_s < self.lease_s:
            raise ConfigError(f"{where}.renew_s: must be < lease_s ({self.lease_s}), got {self.renew_s}")


@dataclass
class DataPrepConfig:
    module: str = MISSING
    code: list[str] = MISSING
    timeout_s: float = MISSING


@dataclass
class ServicesConfig:
    """The local Prefect server, MLflow server and worker of `make demo` (flows/services.py)."""

    host: str = MISSING
    prefect_port: int = MISSING
    mlflow_port: int = MISSING
    mlflow_workers: int = MISSING
    work_pool: str = MISSING
    deployment: str = MISSING
    worker_query_s: float = MISSING
    start_timeout_s: float = MISSING
    health_poll_s: float = MISSING
    stop_grace_s: float = MISSING
    pids_dir: str = MISSING
    logs_dir: str = MISSING
    prefect_home: str = MISSING

    def check(self, where: str) -> None:
        for key in ("prefect_port", "mlflow_port"):
            if not 1 <= getattr(self, key) <= 65535:
                raise ConfigError(f"{where}.{key}: must be in [1, 65535], got {getattr(self, key)}")
        for key in ("worker_query_s", "start_timeout_s", "health_poll_s", "stop_grace_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{where}.{key}: must be > 0, got {getattr(self, key)}")


@dataclass
class OrchestrationConfig:
    launch_retries: int = MISSING
    launch_retry_delay_s: float = MISSING
    work_dir: str = MISSING
    datasets_dir: str = MISSING
    summaries_dir: str = MISSING
    key_chars: int = MISSING
    failure_lines: int = MISSING
    kinds: dict[str, KindConfig] = MISSING
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)
    data_prep: DataPrepConfig = field(default_factory=DataPrepConfig)
    peak_tflops_per_device: Optional[float] = MISSING
    services: ServicesConfig = field(default_factory=ServicesConfig)

    def check(self, where: str = "orchestration") -> None:
        if self.launch_retries < 0:
            raise ConfigError(f"{where}.launch_retries: must be >= 0, got {self.launch_retries}")
        if self.launch_retry_delay_s < 0:
            raise ConfigError(f"{where}.launch_retry_delay_s: must be >= 0, got {self.launch_retry_delay_s}")
        if not 8 <= self.key_chars <= 64:
            raise ConfigError(f"{where}.key_chars: must be in [8, 64], got {self.key_chars}")
        if self.failure_lines < 1:
            raise ConfigError(f"{where}.failure_lines: must be >= 1, got {self.failure_lines}")
        for name, kind in self.kinds.items():
            kind.check(f"{where}.kinds.{name}")
        self.claims.check(f"{where}.claims")
        if not self.data_prep.timeout_s > 0:
            raise ConfigError(f"{where}.data_prep.timeout_s: must be > 0, got {self.data_prep.timeout_s}")
        self.services.check(f"{where}.services")


@dataclass
class TrackingConfig:
    """conf/tracking/*.yaml: where MLflow records the pipeline runs."""

    tracking_uri: str = MISSING
    artifact_location: Optional[str] = MISSING
    experiment_prefix: str = MISSING
    ui_url: Optional[str] = MISSING
    system_metrics: SystemMetricsConfig = field(default_factory=SystemMetricsConfig)  # of every job's run

    def check(self, where: str = "tracking") -> None:
        self.system_metrics.check(f"{where}.system_metrics")
