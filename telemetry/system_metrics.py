"""System metrics of a job (CPU, memory, disk, network; GPU when nvidia-ml-py and a GPU are present) in
its MLflow run, sampled by MLflow's own monitor (mlflow.system_metrics) on a background thread.

    with system_metrics(cfg.system_metrics, cfg.tracking.tracking_uri, cfg.tracking.run_id):
        ... the job's work ...

One monitor per node: the process with local rank 0 samples, and on a job spanning several nodes each
node logs under its own prefix (system/node<k>/...). A job shorter than the sampling interval still
logs one sample, taken when it ends, so every job has its system metrics. The sampling settings come
from conf/tracking (`system_metrics:`), through the step config.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from omegaconf import MISSING

from conf import ConfigError

log = logging.getLogger("mimovl.telemetry")


@dataclass
class SystemMetricsConfig:
    """conf/tracking `system_metrics:`: how often a job's machine is sampled and logged."""

    sampling_interval_s: float = MISSING   # seconds between two samples
    samples_before_logging: int = MISSING  # samples averaged into one logged point

    def check(self, where: str) -> None:
        if not self.sampling_interval_s > 0:
            raise ConfigError(f"{where}.sampling_interval_s: must be > 0, got {self.sampling_interval_s}")
        if self.samples_before_logging < 1:
            raise ConfigError(f"{where}.samples_before_logging: must be >= 1, got {self.samples_before_logging}")


def node_id(env: dict[str, str] | os._Environ = os.environ) -> str | None:
    """None on a single node; node<k> on a job over several nodes (k: DeepSpeed's CROSS_RANK, torchrun's
    GROUP_RANK), so each node's metrics have their own names."""
    world, local = int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_SIZE", env.get("LOCAL_WORLD_SIZE", "0")) or 0)
    if not local or world <= local:
        return None
    return f"node{env.get('CROSS_RANK', env.get('GROUP_RANK', '0'))}"


def samples_here(env: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether this process is the one of its node that samples (local rank 0, or a job without ranks)."""
    return int(env.get("LOCAL_RANK", "0")) == 0


@contextmanager
def system_metrics(cfg: SystemMetricsConfig | None, tracking_uri: str | None, run_id: str | None) -> Iterator[None]:
    """Sample the machine into MLflow run `run_id` while the block runs. Nothing when the job has no run
    (run by hand without tracking), no settings (`cfg` None), or is not its node's sampling process."""
    if cfg is None or not run_id or not samples_here():
        yield
        return
    monitor = _monitor(cfg, tracking_uri, run_id)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def _monitor(cfg: SystemMetricsConfig, tracking_uri: str | None, run_id: str):
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class Monitor(SystemMetricsMonitor):
        """MLflow's monitor, with one last sample at the end when the job ended before any was logged."""

        published = 0

        def publish_metrics(self, metrics):
            super().publish_metrics(metrics)
            self.published += 1

        def finish(self):
            super().finish()
            if self.published:
                return
            try:
                self.collect_metrics()
                self.publish_metrics(self.aggregate_metrics())
                self.mlflow_logger.flush()
            except Exception as exc:  # a job's result never depends on its telemetry
                log.warning("system metrics: the final sample of run %s was not logged: %s", run_id, exc)

    return Monitor(run_id, sampling_interval=cfg.sampling_interval_s,
                   samples_before_logging=cfg.samples_before_logging, node_id=node_id(), tracking_uri=tracking_uri)
