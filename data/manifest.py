"""The data manifest: DIR/manifest.json lists the sha256 of every shard and image of a data set (its preference
pairs' included).

Its `digest` (sha256 over the sorted "path<TAB>sha256" lines) identifies the data: equal files give an
equal digest whatever produced them, and it enters the cache key of every step that reads the data.
The manifest is written last, and durably: every file it lists is fsynced (with its folders) before the
manifest itself is written atomically (temp file + fsync + rename), so a folder without one is not a
finished data set and a folder with one holds every file it lists, also after a crash.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from storage.durable import fsync_tree, write_atomically
from storage.files import Storage, join, local_path
from storage.store import sha256_file

MANIFEST_NAME = "manifest.json"
FORMAT = "mimovl-data/1"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_digest(files: dict[str, str]) -> str:
    """One digest for a set of files given as {relative path: sha256}."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path}\t{files[path]}\n".encode())
    return digest.hexdigest()


def build_manifest(files: dict[str, str], splits: dict[str, Any], generator: dict[str, Any],
                   preference: dict[str, Any] | None = None) -> dict[str, Any]:
    """`files`: {path relative to the data set folder: sha256}; `splits`: per split counts and shards;
    `preference`: the same per split of preference pairs, when the data set holds any (else no such key)."""
    manifest: dict[str, Any] = {"format": FORMAT, "digest": files_digest(files), "splits": splits}
    if preference is not None:
        manifest["preference"] = preference
    manifest.update(generator=generator, files=dict(sorted(files.items())))
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """fsync the files the manifest lists (a missing one is an error), then write it atomically."""
    root = Path(root)
    absent = [rel for rel in manifest["files"] if not (root / rel).is_file()]
    if absent:
        raise FileNotFoundError(f"{root}: the manifest lists {len(absent)} file(s) that are not there: {absent[:5]}")
    fsync_tree(root, list(manifest["files"]))
    path = root / MANIFEST_NAME
    write_atomically(path, (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode())
    return path


def load_manifest(root: str, storage: Storage | None = None) -> dict[str, Any]:
    """The manifest of a data set folder (local path, file:// or s3:// prefix)."""
    manifest = json.loads((storage or Storage()).read_text(join(root, MANIFEST_NAME)))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{join(root, MANIFEST_NAME)}: unknown manifest format {manifest.get('format')!r}")
    return manifest


def verify_manifest(root: str | Path) -> list[str]:
    """Problems of a local data set against its manifest (changed, missing or unlisted files); [] if none."""
    folder = local_path(str(root))
    manifest = load_manifest(str(folder))
    files: dict[str, str] = manifest["files"]
    problems = []
    if files_digest(files) != manifest["digest"]:
        problems.append("digest does not match the listed files")
    for rel, expected in files.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{rel}: sha256 differs from the manifest")
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    for rel in sorted(on_disk - set(files) - {MANIFEST_NAME}):
        problems.append(f"{rel}: not in the manifest")
    return problems
