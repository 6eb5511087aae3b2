"""tasks/datasets.py: the data set the steps read follows the composed model's processor resize."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from conf import ConfigError, compose, load_group
from tasks.datasets import check_generator_config, data_key, generator_argv
from tasks.launcher import launcher_config
from tasks.orchestration_config import DataPrepConfig


def _resolved(overrides):
    return OmegaConf.to_container(compose(overrides), resolve=True)


def _argv(root, folder):
    prep = DataPrepConfig(**root["orchestration"]["data_prep"])
    return generator_argv(root["data"], prep, folder, launcher_config(root["launcher"]))


@pytest.mark.parametrize("model", ["tiny", "mimovl_7b"])
def test_the_generator_gets_the_composed_models_processor_resize(model, tmp_path, capsys):
    from data.synth import main

    root = _resolved([f"model={model}"])
    check_generator_config(root["data"])  # following the model is not an override the generator misses
    argv = _argv(root, tmp_path / "ds")
    assert argv[argv.index("--model") + 1] == model
    # Run the generator on exactly that command line (in this process) and read what it resized to.
    args = argv[argv.index("-m") + 2:]
    args[args.index("--samples") + 1] = "20"
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == model
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    processor = root["model"]["processor"]
    assert manifest["generator"]["resize"] == {"factor": processor["patch_size"] * processor["merge_size"],
                                               "min_pixels": processor["min_pixels"],
                                               "max_pixels": processor["max_pixels"]}


def test_the_data_key_follows_the_model_and_covers_its_processor(monkeypatch):
    tiny, big = _resolved(["model=tiny"])["data"], _resolved(["model=mimovl_7b"])["data"]
    assert tiny["model"] == "tiny" and big["model"] == "mimovl_7b"
    assert data_key(tiny, "code") != data_key(big, "code")
    assert data_key(tiny, "code") == data_key(_resolved(["model=tiny", "seed=5"])["data"], "code")

    import tasks.datasets as datasets

    def tiny_with_larger_max_pixels(group, name):
        cfg = load_group(group, name)
        if group == "model":
            cfg.processor.max_pixels += 784
        return cfg

    before = data_key(tiny, "code")
    monkeypatch.setattr(datasets, "load_group", tiny_with_larger_max_pixels)
    assert data_key(tiny, "code") != before


def test_overrides_that_cannot_reach_the_generator_are_refused():
    for overrides in (["data.shard_size=7"], ["model=mimovl_7b", "data.canvas.scene=[56,56]"]):
        with pytest.raises(ConfigError, match=r"data\.(shard_size|canvas)"):
            check_generator_config(_resolved(overrides)["data"])
    # data.model is on the generator's command line: choosing another model's coordinates is allowed.
    data = _resolved(["model=tiny", "data.model=mimovl_7b"])["data"]
    check_generator_config(data)
    assert data["model"] == "mimovl_7b"


def test_a_processor_override_that_cannot_reach_the_generator_is_refused():
    root = _resolved(["model.processor.max_pixels=100352"])
    check_generator_config(root["data"])  # the data section alone does not show it
    with pytest.raises(ConfigError, match=r"model\.processor\.max_pixels.*conf/model/tiny\.yaml"):
        check_generator_config(root["data"], root["model"])
    root = _resolved(["model=mimovl_7b", "model.processor.image_mean=[0.5,0.5,0.5]"])
    check_generator_config(root["data"], root["model"])  # normalisation does not move coordinates
    root = _resolved(["model=mimovl_7b"])
    check_generator_config(root["data"], root["model"])
