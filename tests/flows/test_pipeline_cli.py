"""`python -m flows.pipeline PIPELINE [OVERRIDE ...]`: the flow without a deployment or worker, against
the project's local Prefect server, which the command starts when none runs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conf import REPO_ROOT
from flows.services import LocalServices
from storage.net import free_port

pytestmark = pytest.mark.slow


def test_the_flow_module_runs_a_pipeline_on_its_own(tmp_path):
    settings = [f"runs_dir={tmp_path}", f"orchestration.services.prefect_port={free_port()}"]
    services = LocalServices.from_config(settings)
    args = [*settings, f"storage.root=file://{tmp_path}/store", "launcher.runner=python",
            "orchestration.kinds.pretrain.module=tests.flows.fake_pretrain",
            "orchestration.kinds.pretrain.code=[tests/flows/fake_pretrain.py]",
            # the fake pretrain job publishes no HF checkpoint to evaluate: this test runs the training chain
            "~pipeline.steps.eval1", "~pipeline.steps.eval2", "~pipeline.steps.eval3", "~pipeline.steps.eval4"]
    try:
        proc = subprocess.run([sys.executable, "-m", "flows.pipeline", "smoke", *args], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"Prefect server {services.prefect_url}: started" in proc.stdout
        assert services.pid("prefect-server") is not None  # left running for the UI, like make demo-services
        (summary_path,) = (tmp_path / "pipelines").glob("*.json")
        summary = json.loads(summary_path.read_text())
        assert summary["status"] == "completed"
        assert [s["status"] for s in summary["steps"]] == ["ran"] * 4
        assert f"pipeline smoke: completed in" in proc.stdout  # the summary it prints

        again = subprocess.run([sys.executable, "-m", "flows.pipeline", "smoke", *args], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"Prefect server {services.prefect_url}: already running" in again.stdout
    finally:
        services.stop_all()
    assert services.pid("prefect-server") is None


def test_a_config_error_exits_2_naming_the_key(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flows.pipeline", "smoke", "stages.stage1_projector_warmup.optim.lrr=1",
                           f"runs_dir={tmp_path}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "lrr" in proc.stderr
