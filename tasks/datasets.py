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
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from conf import REPO_ROOT, ConfigError, load_group
from tasks.cache_keys import canonical_json, sha256_text
from tasks.launcher import LaunchError
from tasks.orchestration_config import DataPrepConfig

log = logging.getLogger("mimovl.datasets")

MANIFEST_NAME = "manifest.json"
# The generator reads conf/data/<name>.yaml itself and takes these three from its command line.
COMMAND_LINE_KEYS = ("samples", "seed", "model")
TAIL_LINES = 30


class DataPrepFailed(RuntimeError):
    """The generator ran and failed (deterministic: not retried); the message carries its last lines."""


@dataclass(frozen=True)
class DataSet:
    name: str
    uri: str      # absolute folder holding manifest.json
    digest: str   # the data manifest's digest
    key: str      # sha256 of what produced it
    split: str    # the split the steps read
    generated: bool  # False when an earlier run's folder was reused
    wall_time_s: float = 0.0  # the generator's process, start to exit; 0 when reused


def check_generator_config(data: Mapping[str, Any]) -> None:
    """The generator reads conf/data/<name>.yaml from disk, so an override of any key but
    COMMAND_LINE_KEYS would silently not reach it: refuse it, naming the keys."""
    name = data.get("name")
    on_disk = OmegaConf.to_container(load_group("data", str(name)), resolve=True)
    differing = sorted(key for key in set(on_disk) | set(data)
                       if key not in COMMAND_LINE_KEYS and on_disk.get(key) != data.get(key))
    if differing:
        raise ConfigError(f"data: override(s) of {['data.' + k for k in differing]} cannot reach the generator "
                          f"(it reads conf/data/{name}.yaml; only data.{'/'.join(COMMAND_LINE_KEYS)} are passed "
                          f"on its command line): edit the file or add a new conf/data/<name>.yaml")


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


def prepare_dataset(data: Mapping[str, Any], prep: DataPrepConfig, datasets_dir: Path, key_chars: int,
                    code_version: str, on_line: Callable[[str], None] | None = None,
                    python: str | None = None) -> DataSet:
    """The data set of `data` (the composed `data:` section), generated unless already there."""
    check_generator_config(data)
    key = data_key(data, code_version)
    folder = dataset_folder(datasets_dir, data, key, key_chars).resolve()
    digest = read_digest(folder)
    if digest is not None:
        log.info("data set %s already prepared (digest %s)", folder, digest[:12])
        return DataSet(str(data["name"]), str(folder), digest, key, prep.split, generated=False)
    folder.parent.mkdir(parents=True, exist_ok=True)
    argv = [python or sys.executable, "-u", "-m", prep.module, "--out", str(folder), "--config", str(data["name"]),
            "--samples", str(data["samples"]), "--seed", str(data["seed"]), "--model", str(data["model"])]
    started = time.monotonic()
    run_streamed(argv, prep.timeout_s, on_line)
    wall_time_s = time.monotonic() - started
    digest = read_digest(folder)
    if digest is None:
        raise DataPrepFailed(f"{prep.module} exited 0 but wrote no {folder / MANIFEST_NAME}")
    return DataSet(str(data["name"]), str(folder), digest, key, prep.split, generated=True, wall_time_s=wall_time_s)


def run_streamed(argv: list[str], timeout_s: float, on_line: Callable[[str], None] | None) -> None:
    """Run `argv` in the repository root, passing each output line to `on_line`; raise on failure."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
                                start_new_session=True)
    except OSError as exc:
        raise LaunchError(f"cannot start {argv[0]}: {exc}") from exc
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    started = time.monotonic()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\r\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if returncode != 0:
        why = f"timed out after {timeout_s} s" if time.monotonic() - started >= timeout_s else f"exit code {returncode}"
        raise DataPrepFailed(f"data preparation failed ({why}): {' '.join(argv)}\n--- last lines ---\n"
                             + "\n".join(tail))
