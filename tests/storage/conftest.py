"""A file:// and an s3:// (moto on 127.0.0.1) store, with their config as JSON for child processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conf import REPO_ROOT, load_group
from storage.store import CheckpointStore, open_store

# Short leases and lock settings for the tests; the shipped values live in conf/storage/*.yaml.
TEST_PUBLISH_LOCK = {"lease_s": 5.0, "renew_every_s": 1.0, "poll_s": 0.05}


@dataclass
class StoreUnderTest:
    store: CheckpointStore
    config_json: str

    def uri(self, *parts: str) -> str:
        return self.store.uri(*parts)


def make_store(cfg) -> StoreUnderTest:
    cfg.publish_lock = TEST_PUBLISH_LOCK
    return StoreUnderTest(open_store(cfg), json.dumps(OmegaConf.to_container(cfg)))


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path) -> StoreUnderTest:
    if request.param == "local":
        cfg = load_group("storage", "local")
        cfg.root = f"file://{tmp_path / 'store'}"
        return make_store(cfg)
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    cfg = load_group("storage", "s3")
    cfg.root = f"s3://{bucket}/store"
    cfg.s3.endpoint_url = endpoint
    return make_store(cfg)


def start_worker(command: str, store: StoreUnderTest, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.storage.workers", command, "--store", store.config_json, *args],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def finish(proc: subprocess.Popen, timeout_s: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def barrier_dir(tmp_path: Path, name: str) -> Path:
    return tmp_path / "barriers" / name
