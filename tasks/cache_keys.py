"""Step keys and code versions: what makes a step's output what it is (DESIGN.md, "Caching, reruns").

    step key = sha256(resolved step config, input checkpoint digest, data manifest digest, code version)

The resolved step config enters without the fields that say where or under which run a step runs, not
what it computes: its own key and the paths derived from it, the MLflow run, the store and runs
locations, and the input checkpoint and data URIs (whose contents enter as their digests instead). Equal
keys mean equal work, so the store's checkpoint under a key can stand in for running the step again.

The code version hashes the source files of the packages the job runs (not the git commit, which says
nothing about a dirty tree). Everything is canonical JSON, so a key is the same in every process.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from conf import ConfigError

KEY_FORMAT = "mimovl-step-key/1"
# Dotted paths of StepConfig fields left out of the key (see the module docstring).
RUN_SPECIFIC_FIELDS = (
    "step_key",
    "output_uri",
    "work_dir",
    "runs_dir",
    "tracking",
    "storage",
    "input_checkpoint",
    "data.uri",
)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace; NaN and infinities are refused (they have no JSON)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not canonical JSON material: {exc}") from exc


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_material(step_config: Mapping[str, Any]) -> dict[str, Any]:
    """The step config without RUN_SPECIFIC_FIELDS (a deep copy; the argument is not changed)."""
    material = copy.deepcopy(dict(step_config))
    for dotted in RUN_SPECIFIC_FIELDS:
        node: Any = material
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return material


def step_key(step_config: Mapping[str, Any], input_digest: str | None, data_digest: str | None,
             code_version: str) -> str:
    """sha256 hex of the step's key material; `input_digest` None for a step that starts from scratch."""
    return sha256_text(canonical_json({
        "format": KEY_FORMAT,
        "config": key_material(step_config),
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

