"""Data preparation: the data set the pipeline's steps read, generated once per data config.

The synthetic generator runs as a subprocess (`python -m data.synth --out DIR ...`, it imports
transformers; orchestration never imports job code) into runs/datasets/<name>-<key>, where the key is
the sha256 of the data config and the generator's code. A folder with a manifest.json is a finished data
set (the generator writes the manifest last and renames its folder into place): it is reused as is.
Its manifest digest enters every step key.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from conf import REPO_ROOT, ConfigError, load_group
from data.config import load_data_group
from tasks.cache_keys import canonical_json, sha256_text
from tasks.launcher import JobCommand, LauncherConfig, RunningJob
from tasks.orchestration_config import DataPrepConfig

log = logging.getLogger("mimovl.datasets")

MANIFEST_NAME = "manifest.json"
# The generator reads conf/data/<name>.yaml itself and takes these three from its command line.
COMMAND_LINE_KEYS = ("samples", "seed", "model")


class DataPrepFailed(RuntimeError):
    """The generator exited 0 but left no usable data set (deterministic: not retried)."""


@dataclass(frozen=True)
class DataSet:
    name: str
    uri: str      # absolute folder holding manifest.json
    digest: str   # the data manifest's digest
    key: str      # sha256 of what produced it
    generated: bool  # False when an earlier run's folder was reused
    wall_time_s: float = 0.0  # the generator's process, start to exit; 0 when reused


# The processor keys the generator's resize reads (data/config.py load_resize_spec).
RESIZE_KEYS = ("patch_size", "merge_size", "min_pixels", "max_pixels")


def check_generator_config(data: Mapping[str, Any], model: Mapping[str, Any] | None = None) -> None:
    """The generator reads conf/data/<name>.yaml from disk (resolved against conf/model/<data.model>.yaml),
    so an override of any key but COMMAND_LINE_KEYS would silently not reach it: refuse it, naming the keys.
    With `model` (the composed `model:` section), an override of that model's processor resize is refused
    too: the generator reads it from conf/model/<data.model>.yaml, so its coordinates would refer to
    another resize than the model's."""
    name = data.get("name")
    on_disk = OmegaConf.to_container(load_data_group(str(name), str(data.get("model"))))
    differing = sorted(key for key in set(on_disk) | set(data)
                       if key not in COMMAND_LINE_KEYS and on_disk.get(key) != data.get(key))
    if differing:
        raise ConfigError(f"data: override(s) of {['data.' + k for k in differing]} cannot reach the generator "
                          f"(it reads conf/data/{name}.yaml; only data.{'/'.join(COMMAND_LINE_KEYS)} are passed "
                          f"on its command line): edit the file or add a new conf/data/<name>.yaml")
    if model is None or model.get("name") != data.get("model"):
        return
    disk_processor = load_group("model", str(data["model"])).get("processor") or {}
    processor = model.get("processor") or {}
    differing = [key for key in RESIZE_KEYS if processor.get(key) != disk_processor.get(key)]
    if differing:
        raise ConfigError(f"model: override(s) of {['model.processor.' + k for k in differing]} cannot reach the "
                          f"data generator (it reads the resize from conf/model/{data['model']}.yaml, so the "
                          f"data's coordinates would not match the model's images): add a new "
                          f"conf/model/<name>.yaml instead")


def data_key(data: Mapping[str, Any], code_version: str) -> str:
    """sha256 of the data config, the processor resize the generator reads (conf/model/<data.model>.yaml)
    and the generator's code."""
    model = load_group("model", str(data["model"]))
    processor = OmegaConf.to_container(model.processor, resolve=True) if "processor" in model else None
    return sha256_text(canonical_json({"format": "mimovl-data-key/1", "data": dict(data), "processor": processor,
                                       "code_version": code_version}))


def dataset_folder(datasets_dir: Path, data: Mapping[str, Any], key: str, key_chars: int) -> Path:
    return datasets_dir / f"{data['name']}-{key[:key_chars]}"


def read_digest(folder: Path) -> str | None:
    """The digest of a finished data set in `folder`, or None when there is none."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    digest = manifest.get("digest")
    if not isinstance(digest, str) or not digest:
        raise DataPrepFailed(f"{path}: manifest has no digest")
    return digest


def generator_argv(data: Mapping[str, Any], prep: DataPrepConfig, folder: Path, launcher: LauncherConfig) -> list[str]:
    """The generator's command line: COMMAND_LINE_KEYS from the composed `data:` section (data.model is the
    composed model, whose processor resize the coordinates refer to). `--reuse`: a concurrent generator of
    the same data set that finishes first leaves its folder, and this one ends using it."""
    return [launcher.python or sys.executable, "-u", "-m", prep.module, "--out", str(folder),
            "--config", str(data["name"]), "--samples", str(data["samples"]), "--seed", str(data["seed"]),
            "--model", str(data["model"]), "--reuse"]


def prepare_dataset(data: Mapping[str, Any], prep: DataPrepConfig, datasets_dir: Path, key_chars: int,
                    code_version: str, launcher: LauncherConfig,
                    on_line: Callable[[str], None] | None = None) -> DataSet:
    """The data set of `data` (the composed `data:` section), generated unless already there.
    The generator runs with `launcher`'s interpreter, kill grace and tail length; its failure is
    tasks.launcher's LaunchError (could not start) or JobFailed (ran and failed, with its last lines)."""
    check_generator_config(data)
    key = data_key(data, code_version)
    folder = dataset_folder(datasets_dir, data, key, key_chars).resolve()
    digest = read_digest(folder)
    if digest is not None:
        log.info("data set %s already prepared (digest %s)", folder, digest[:12])
        return DataSet(str(data["name"]), str(folder), digest, key, generated=False)
    folder.parent.mkdir(parents=True, exist_ok=True)
    argv = generator_argv(data, prep, folder, launcher)
    # A job without result.json: streamed, timed out, and stopped with the flow run like the steps' jobs.
    generator = RunningJob(launcher, JobCommand(argv, {"PYTHONUNBUFFERED": "1"}), None, log_path=None,
                           timeout_s=prep.timeout_s, on_line=on_line, cwd=REPO_ROOT)
    wall_time_s = generator.wait_exit()
    digest = read_digest(folder)
    if digest is None:
        raise DataPrepFailed(f"{prep.module} exited 0 but wrote no {folder / MANIFEST_NAME}")
    return DataSet(str(data["name"]), str(folder), digest, key, generated=True, wall_time_s=wall_time_s)
