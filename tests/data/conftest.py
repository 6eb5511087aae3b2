"""Fixtures of the data tests: the synthetic config and one small data set generated per session."""
from __future__ import annotations

import pytest

from data.config import load_data_config, load_resize_spec

DATASET_SAMPLES = 600
DATASET_SEED = 0


@pytest.fixture(scope="session")
def synth_cfg():
    return load_data_config("synthetic")


@pytest.fixture(scope="session")
def resize_spec(synth_cfg):
    return load_resize_spec(synth_cfg.model)


@pytest.fixture(scope="session")
def synth_ctx(synth_cfg, resize_spec):
    from data.synth_tasks import TaskContext

    return TaskContext(synth_cfg, resize_spec)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory, synth_cfg, resize_spec):
    """A generated data set; tests must not modify it (copy it first)."""
    from data.synth import generate

    out = tmp_path_factory.mktemp("synthetic") / "ds"
    generate(out, DATASET_SAMPLES, DATASET_SEED, synth_cfg, resize_spec)
    return out
