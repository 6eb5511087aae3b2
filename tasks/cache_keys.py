"""Step keys and code versions: what makes a step's output what it is (DESIGN.md, "Caching, reruns").

    step key = sha256(resolved step config minus LEFT_OUT, the resources that change the output (world
                      size, device, precision), input digest, data manifest digest, code version)

LEFT_OUT is the one list of step config fields the key does not hold, each with why: the fields that say
where or under which run a step runs (its own key and paths, the MLflow run, the store and runs
locations, the input and data URIs, whose contents enter as their digests instead), and the fields that
do not change what the job computes (logging and checkpoint cadence, prefetch depth, probe size, the
peak TFLOPS of the MFU estimate). The same list says which of them are MLflow params (`params_of`):
how a step ran is worth comparing, where it ran is in its tags and artifacts. Equal keys mean equal
work, so the store's output under a key can stand in for running the step again.

The code version hashes the source files of the packages the job runs (not the git commit, which says
nothing about a dirty tree). Everything is canonical JSON, so a key is the same in every process.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conf import ConfigError

KEY_FORMAT = "mimovl-step-key/2"


@dataclass(frozen=True)
class LeftOut:
    path: str     # dotted path in the step config; a path a kind's config does not have is skipped
    why: str
    param: bool   # logged as an MLflow param of the step's run (else it is a tag or an artifact there)


LEFT_OUT: tuple[LeftOut, ...] = (
    # where and under which run the step runs
    LeftOut("step_key", "the key itself (tag mimovl.step_key)", param=False),
    LeftOut("output_uri", "derived from the key (tag mimovl.output_checkpoint)", param=False),
    LeftOut("work_dir", "derived from the key", param=False),
    LeftOut("runs_dir", "where local state lives", param=False),
    LeftOut("tracking", "the MLflow server and run", param=False),
    LeftOut("storage", "where the store is; the input's contents enter as its digest", param=True),
    LeftOut("input_checkpoint", "the input's location; its manifest digest is in the key", param=True),
    LeftOut("data.uri", "the data set's location; its manifest digest is in the key", param=True),
    # how the job reports and checkpoints, not what it computes (interfaces.md D)
    LeftOut("stage.log_every", "logging cadence", param=True),
    LeftOut("stage.checkpoint_every", "resume checkpoints: a resumed run ends in the same state", param=True),
    LeftOut("stage.checkpoint_keep", "how many resume checkpoints are kept", param=True),
    LeftOut("stage.packing.prefetch_batches", "how far the prefetch thread runs ahead", param=True),
    LeftOut("stage.probe_batches", "the probe loss measured before and after the stage (a report)", param=True),
    LeftOut("stage.probe_split", "where the probe's rows come from (a report)", param=True),
    LeftOut("stage.deepspeed.steps_per_print", "DeepSpeed's own log cadence", param=True),
    LeftOut("stage.deepspeed.wall_clock_breakdown", "DeepSpeed's timing log", param=True),
    LeftOut("peak_tflops_per_device", "the MFU estimate's denominator", param=True),
    LeftOut("system_metrics", "how often the job samples its machine's CPU, memory and GPU use", param=True),
    LeftOut("eval.download_dir", "where s3:// benchmark folders are cached on the node", param=True),
    LeftOut("eval.compare", "evaluation.compare's settings: the eval job does not read them", param=True),
)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace; NaN and infinities are refused (they have no JSON)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not canonical JSON material: {exc}") from exc


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def without(config: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """A deep copy of `config` without the dotted `paths` (missing ones are skipped)."""
    material = copy.deepcopy(dict(config))
    for dotted in paths:
        node: Any = material
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return material


def key_material(step_config: Mapping[str, Any]) -> dict[str, Any]:
    """The step config without LEFT_OUT (a deep copy; the argument is not changed)."""
    return without(step_config, (field.path for field in LEFT_OUT))


def params_of(step_config: Mapping[str, Any]) -> dict[str, Any]:
    """The step config as its MLflow params: without the LEFT_OUT fields that are tags or artifacts."""
    return without(step_config, (field.path for field in LEFT_OUT if not field.param))


def step_key(step_config: Mapping[str, Any], input_digest: str | None, data_digest: str | None,
             code_version: str, *, resources: Mapping[str, Any]) -> str:
    """sha256 hex of the step's key material; `input_digest` None for a step that starts from scratch;
    `resources` the output-changing resources ({"world_size", "device", "precision"})."""
    return sha256_text(canonical_json({
        "format": KEY_FORMAT,
        "config": key_material(step_config),
        "resources": dict(resources),
        "input_checkpoint_digest": input_digest,
        "data_digest": data_digest,
        "code_version": code_version,
    }))


def source_files(root: Path, paths: Iterable[str]) -> list[Path]:
    """The *.py files under each of `paths` (folders, searched recursively, or single files), sorted.

    A path that does not exist is a ConfigError: a typo would otherwise leave code out of the key.
    """
    found: set[Path] = set()
    for rel in paths:
        path = root / rel
        if path.is_dir():
            found.update(p for p in path.rglob("*.py") if "__pycache__" not in p.parts and p.is_file())
        elif path.is_file():
            found.add(path)
        else:
            raise ConfigError(f"code path '{rel}' does not exist under {root}")
    return sorted(found)


def code_version(root: str | Path, paths: Iterable[str]) -> str:
    """sha256 over (relative path, sha256 of content) of the source files of `paths` under `root`."""
    root = Path(root).resolve()
    hasher = hashlib.sha256()
    for path in source_files(root, paths):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        hasher.update(f"{path.relative_to(root).as_posix()}\t{digest}\n".encode())
    return hasher.hexdigest()

