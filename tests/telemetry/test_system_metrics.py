"""System metrics of a job in its MLflow run: MLflow's monitor, one per node, at least one sample per job."""
from __future__ import annotations

import threading
import time

import pytest

from conf import ConfigError, validated
from telemetry.system_metrics import SystemMetricsConfig, node_id, samples_here, system_metrics

MACHINE = ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes")


@pytest.fixture()
def run(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("telemetry")).info.run_id
    return client, uri, run_id


def monitors() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]


def test_a_job_shorter_than_the_interval_still_logs_one_sample(run):
    client, uri, run_id = run
    with system_metrics(SystemMetricsConfig(sampling_interval_s=60, samples_before_logging=1), uri, run_id):
        assert len(monitors()) == 1
    assert monitors() == []
    logged = client.get_run(run_id).data.metrics
    assert set(MACHINE) <= set(logged)
    assert [m.step for m in client.get_metric_history(run_id, MACHINE[0])] == [0]


def test_a_longer_job_is_sampled_at_the_interval(run):
    client, uri, run_id = run
    with system_metrics(SystemMetricsConfig(sampling_interval_s=0.05, samples_before_logging=1), uri, run_id):
        deadline = time.monotonic() + 60
        while len(client.get_metric_history(run_id, MACHINE[1])) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    steps = [m.step for m in client.get_metric_history(run_id, MACHINE[1])]
    assert len(steps) >= 3 and steps == sorted(set(steps))  # one point per logging step, in order


def test_no_run_or_no_settings_or_another_local_rank_samples_nothing(run, monkeypatch):
    client, uri, run_id = run
    cfg = SystemMetricsConfig(sampling_interval_s=60, samples_before_logging=1)
    for args in ((cfg, uri, None), (None, uri, run_id)):
        with system_metrics(*args):
            assert monitors() == []
    monkeypatch.setenv("LOCAL_RANK", "1")
    with system_metrics(cfg, uri, run_id):
        assert monitors() == []
    assert client.get_run(run_id).data.metrics == {}


def test_one_sampler_per_node_named_by_node_on_several_nodes():
    assert node_id({}) is None
    assert node_id({"WORLD_SIZE": "8", "LOCAL_SIZE": "8", "CROSS_RANK": "0"}) is None      # one node
    assert node_id({"WORLD_SIZE": "16", "LOCAL_SIZE": "8", "CROSS_RANK": "1"}) == "node1"  # deepspeed runner
    assert node_id({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"}) == "node1"  # torchrun
    assert samples_here({}) and samples_here({"LOCAL_RANK": "0"}) and not samples_here({"LOCAL_RANK": "3"})


@pytest.mark.parametrize("values, key", [
    ({"sampling_interval_s": 0, "samples_before_logging": 1}, "sampling_interval_s"),
    ({"sampling_interval_s": 1, "samples_before_logging": 0}, "samples_before_logging"),
])
def test_bad_settings_fail_naming_the_key(values, key):
    with pytest.raises(ConfigError, match=f"tracking.system_metrics.{key}"):
        validated(SystemMetricsConfig, values, "tracking.system_metrics")
