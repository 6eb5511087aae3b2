"""A small synthetic data set and a builder of resolved step configs for the pretrain job."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conf import compose

DATA_SAMPLES = 600


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    from data.config import load_data_config, load_resize_spec
    from data.synth import generate

    out = tmp_path_factory.mktemp("data") / "synthetic"
    cfg = load_data_config("synthetic")
    generate(out, DATA_SAMPLES, 0, cfg, load_resize_spec(cfg.model))
    return out


@pytest.fixture()
def make_step(dataset, runs_dir, tmp_path):
    """write(stage, name, input_checkpoint=None, overrides=[...]) -> path of a resolved step YAML."""

    def write(stage: str, name: str, input_checkpoint: str | None = None, overrides: list[str] = (),
              work: Path | None = None) -> Path:
        root = compose(["pipeline=smoke", *overrides])
        step = {
            "step": name,
            "step_key": f"test-{name}",
            "model": root.model,
            "stage": root.stages[stage],
            "data": {"uri": str(dataset), "split": "pretrain"},
            "input_checkpoint": input_checkpoint,
            "output_uri": f"file://{tmp_path}/store/{name}",
            "work_dir": str(work or tmp_path / "work" / name),
            "runs_dir": str(runs_dir),
            "storage": root.storage,
            "tracking": {"tracking_uri": None, "run_id": None},
        }
        path = tmp_path / f"{name}.yaml"
        OmegaConf.save(OmegaConf.create(step), path)
        return path

    return write


@pytest.fixture()
def launcher():
    """The local launcher: one plain Python process unless a test asks for the DeepSpeed runner."""
    from tasks.launcher import load_launcher_config

    def make(**overrides):
        return load_launcher_config("local", {"runner": "python", **overrides})

    return make
