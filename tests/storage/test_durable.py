"""Durability: contents fsynced before the manifest names them, manifests written atomically, unique staging."""
from __future__ import annotations

import json
import os
import re

import pytest

from conf import load_group
from storage import durable, store as store_module
from storage.store import MANIFEST_NAME, open_store
from tests.storage.test_store import write_checkpoint


def record_durability(monkeypatch, module, events):
    """Record fsync_tree and write_atomically calls of `module` (the real ones still run)."""
    real_fsync_tree, real_write = durable.fsync_tree, durable.write_atomically

    def fsync_tree(folder, relpaths=None):
        events.append(("fsync", folder, None if relpaths is None else sorted(relpaths)))
        real_fsync_tree(folder, relpaths)

    def write_atomically(path, data):
        events.append(("write", path.parent, path.name))
        real_write(path, data)

    monkeypatch.setattr(module, "fsync_tree", fsync_tree)
    monkeypatch.setattr(module, "write_atomically", write_atomically)


def local_store(tmp_path):
    cfg = load_group("storage", "local")
    cfg.root = f"file://{tmp_path / 'store'}"
    return open_store(cfg)


def test_publish_and_fetch_fsync_every_file_before_the_manifest(tmp_path, monkeypatch):
    store = local_store(tmp_path)
    files = write_checkpoint(tmp_path / "export")
    events = []
    record_durability(monkeypatch, store_module, events)

    store.publish(tmp_path / "export", store.uri("stage1", "key"))
    store.fetch(store.uri("stage1", "key"), tmp_path / "copy")

    staged = [(kind, folder.name, what) for kind, folder, what in events]
    assert staged[0][0] == "fsync" and staged[0][2] == sorted(files)
    assert staged[1] == ("write", staged[0][1], MANIFEST_NAME)
    assert re.fullmatch(rf"\.key\.publish-{os.getpid()}-[0-9a-f]{{12}}", staged[0][1])
    assert staged[2][0] == "fsync" and staged[2][2] == sorted(files)
    assert staged[3] == ("write", staged[2][1], MANIFEST_NAME)
    assert re.fullmatch(rf"\.copy\.fetch-{os.getpid()}-[0-9a-f]{{12}}", staged[2][1])


def test_in_place_publish_fsyncs_before_writing_the_manifest(tmp_path, monkeypatch):
    store = local_store(tmp_path)
    uri = store.uri("stage1", "key")
    folder = tmp_path / "store" / "stage1" / "key"
    files = write_checkpoint(folder)
    events = []
    record_durability(monkeypatch, store_module, events)
    store.publish(folder, uri)
    assert events == [("fsync", folder, sorted(files)), ("write", folder, MANIFEST_NAME)]


def test_an_interrupted_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / MANIFEST_NAME
    path.write_text("old")

    def crash(*args):
        raise OSError("power lost")

    monkeypatch.setattr(durable.os, "replace", crash)
    with pytest.raises(OSError, match="power lost"):
        durable.write_atomically(path, b"new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]


def test_staging_names_are_unique_per_call_and_name_the_process(tmp_path):
    names = {durable.unique_sibling(tmp_path / "out", "partial").name for _ in range(100)}
    assert len(names) == 100
    assert all(name.startswith(f".out.partial-{os.getpid()}-") for name in names)


def test_data_manifest_is_written_after_its_files_are_fsynced(tmp_path, monkeypatch):
    from data import manifest as data_manifest

    (tmp_path / "eval" / "images").mkdir(parents=True)
    (tmp_path / "eval" / "shard-00000.jsonl").write_text("{}\n")
    (tmp_path / "eval" / "images" / "a.png").write_bytes(b"png")
    files = {rel: data_manifest.sha256_file(tmp_path / rel) for rel in ("eval/shard-00000.jsonl", "eval/images/a.png")}
    manifest = data_manifest.build_manifest(files, {"eval": {"samples": 1}}, {"seed": 0})
    events = []
    record_durability(monkeypatch, data_manifest, events)

    path = data_manifest.write_manifest(tmp_path, manifest)

    assert events == [("fsync", tmp_path, sorted(files)), ("write", tmp_path, MANIFEST_NAME)]
    assert json.loads(path.read_text()) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", MANIFEST_NAME]

    with pytest.raises(FileNotFoundError, match="eval/images/gone.png"):
        data_manifest.write_manifest(tmp_path, {**manifest, "files": {**files, "eval/images/gone.png": "0" * 64}})
