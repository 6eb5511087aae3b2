"""Typed config of the orchestration (conf/orchestration/*.yaml) and of MLflow tracking (conf/tracking).

No Prefect, MLflow or torch import: the flow validates these before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from conf import ConfigError


@dataclass
class KindConfig:
    """One step kind: the job module it runs and the code that goes into its step key."""

    module: Optional[str] = MISSING         # null: not available yet
    code: list[str] = MISSING               # folders/files (relative to the repo root) of the job's code
    available_with: Optional[str] = MISSING  # the issue that brings a kind whose module is null


@dataclass
class DataPrepConfig:
    module: str = MISSING
    code: list[str] = MISSING
    split: str = MISSING
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
            if kind.module is None and not kind.available_with:
                raise ConfigError(f"{where}.kinds.{name}: a kind without a module needs available_with")
            if kind.module is not None and not kind.code:
                raise ConfigError(f"{where}.kinds.{name}.code: list the job's code (it enters the step key)")
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
