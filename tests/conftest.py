"""Shared fixtures: the tiny model config, its tokenizer and image processor, built once per session."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import torch

from storage.net import free_port

os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def tiny_cfg():
    from model.config import load_model_config

    return load_model_config("tiny")


@pytest.fixture(scope="session")
def tokenizer(tiny_cfg, runs_dir):
    from model.tokenizer import load_tokenizer

    return load_tokenizer(tiny_cfg, runs_dir)


@pytest.fixture(scope="session")
def image_processor(tiny_cfg):
    from model.processor import build_image_processor

    return build_image_processor(tiny_cfg.processor)


@pytest.fixture(scope="session")
def encoder(tokenizer, image_processor, tiny_cfg):
    from data.collator import SampleEncoder

    return SampleEncoder(tokenizer, image_processor, tiny_cfg.processor.merge_size)


@pytest.fixture()
def tiny_model(tiny_cfg, tokenizer):
    from model.build import build_model

    return build_model(tiny_cfg, tokenizer)


# A real S3 HTTP endpoint (moto's server) on 127.0.0.1, for the store, the reader and weight loading.



@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of an S3-compatible server (moto) running for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Dummy credentials through the standard chain (env vars); no ~/.aws files, no instance metadata."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_bucket(s3_server: str, s3_credentials: None) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return name
