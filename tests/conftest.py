"""Shared fixtures: the tiny model config, its tokenizer and image processor, built once per session."""
from __future__ import annotations

import os

import pytest
import torch

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
