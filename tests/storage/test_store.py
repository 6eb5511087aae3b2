"""The checkpoint store against a local folder and a real S3 HTTP endpoint (moto's server on 127.0.0.1)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conf import REPO_ROOT, ConfigError, load_group
from storage.store import (
    MANIFEST_NAME,
    CheckpointExistsError,
    CheckpointNotFoundError,
    CheckpointStore,
    CorruptCheckpointError,
    Manifest,
    StoreError,
    _LocalBackend,
    _S3Backend,
    build_manifest,
    join_uri,
    open_store,
    resolve_local,
)

MIB = 1024 * 1024
# The small settings under test: a file of LARGE_FILE_MB crosses the threshold and uploads in 2 parts.
MULTIPART_THRESHOLD_MB = 1
MULTIPART_CHUNK_MB = 5
LARGE_FILE_MB = 6


def write_checkpoint(folder: Path, seed: int = 0, large: bool = False) -> dict[str, bytes]:
    """A folder shaped like an HF checkpoint; returns relpath -> bytes."""
    rng = hashlib.sha256(f"seed-{seed}".encode()).digest()
    weights_size = LARGE_FILE_MB * MIB if large else 4096
    files = {
        "model.safetensors": (rng * (weights_size // len(rng) + 1))[:weights_size],
        "config.json": json.dumps({"model_type": "qwen2_5_vl", "seed": seed}).encode(),
        "tokenizer.json": b'{"version": "1.0"}',
        "image_processor/preprocessor_config.json": b'{"patch_size": 14}',
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def read_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class LocalRemote:
    """Direct access to a file:// store's objects, to damage them the way a disk or a person would."""

    def __init__(self, root: Path):
        self.root = root

    def uri(self, name: str) -> str:
        return f"file://{self.root / name}"

    def write(self, uri: str, rel: str, data: bytes) -> None:
        path = resolve_local(uri) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def read(self, uri: str, rel: str) -> bytes:
        return (resolve_local(uri) / rel).read_bytes()

    def delete(self, uri: str, rel: str) -> None:
        (resolve_local(uri) / rel).unlink()

    def names(self, uri: str) -> set[str]:
        folder = resolve_local(uri)
        if not folder.exists():
            return set()
        return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


class S3Remote:
    """Direct access to the objects of an s3:// store through a plain boto3 client."""

    def __init__(self, endpoint: str, bucket: str):
        import boto3

        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.bucket = bucket

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/store/{name}"

    def _key(self, uri: str, rel: str) -> str:
        return uri[len(f"s3://{self.bucket}/"):] + "/" + rel

    def write(self, uri: str, rel: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(uri, rel), Body=data)

    def read(self, uri: str, rel: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(uri, rel))["Body"].read()

    def delete(self, uri: str, rel: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(uri, rel))

    def names(self, uri: str) -> set[str]:
        prefix = self._key(uri, "")
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return {obj["Key"][len(prefix):] for obj in listing.get("Contents", [])}


def s3_storage(endpoint: str, bucket: str) -> CheckpointStore:
    cfg = load_group("storage", "s3")
    cfg.root = f"s3://{bucket}/store"
    cfg.s3.endpoint_url = endpoint
    cfg.s3.multipart_threshold_mb = MULTIPART_THRESHOLD_MB
    cfg.s3.multipart_chunk_mb = MULTIPART_CHUNK_MB
    return open_store(cfg)


def local_storage(root: Path) -> CheckpointStore:
    cfg = load_group("storage", "local")
    cfg.root = f"file://{root}"
    return open_store(cfg)


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    """(store, remote) for a file:// store in tmp_path and an s3:// store in a fresh bucket."""
    if request.param == "local":
        return local_storage(tmp_path / "store"), LocalRemote(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return s3_storage(endpoint, bucket), S3Remote(endpoint, bucket)


# ----------------------------------------------------------------------------------------- round trips


def test_local_round_trip_and_in_place_use(tmp_path):
    store = local_storage(tmp_path / "store")
    files = write_checkpoint(tmp_path / "export")
    uri = store.uri("stage1", "key1")

    manifest = store.publish(tmp_path / "export", uri, run_id="run-1", step_key="key1", meta={"tokens": 123})

    assert store.exists(uri)
    assert sorted(manifest.files) == sorted(files)
    assert manifest.files["model.safetensors"].sha256 == hashlib.sha256(files["model.safetensors"]).hexdigest()
    stored = store.read_manifest(uri)
    assert (stored.run_id, stored.step_key, stored.meta) == ("run-1", "key1", {"tokens": 123})
    assert stored.digest == manifest.digest
    # No staging folders are left beside the published one.
    assert sorted(p.name for p in (tmp_path / "store" / "stage1").iterdir()) == ["key1"]

    fetched = store.fetch(uri, tmp_path / "copy")
    assert fetched.digest == manifest.digest
    published_manifest = (tmp_path / "store" / "stage1" / "key1" / MANIFEST_NAME).read_bytes()
    assert read_tree(tmp_path / "copy") == {**files, MANIFEST_NAME: published_manifest}

    # On the same file system a job uses the published folder itself.
    assert store.local_path(uri) == tmp_path / "store" / "stage1" / "key1"
    assert store.materialize(uri, tmp_path / "unused") == tmp_path / "store" / "stage1" / "key1"
    assert not (tmp_path / "unused").exists()


def test_s3_round_trip_with_multipart_upload(tmp_path, s3_server, s3_bucket):
    store = s3_storage(s3_server, s3_bucket)
    remote = S3Remote(s3_server, s3_bucket)
    files = write_checkpoint(tmp_path / "export", large=True)
    uri = store.uri("stage2", "key2")
    assert not store.exists(uri)

    manifest = store.publish(tmp_path / "export", uri, run_id="run-2", step_key="key2")

    assert store.exists(uri)
    assert remote.names(uri) == {*files, MANIFEST_NAME}
    head = remote.client.head_object(Bucket=s3_bucket, Key="store/stage2/key2/model.safetensors")
    assert head["ETag"].strip('"').endswith("-2"), "the large file should upload in 2 parts"
    assert head["ContentLength"] == LARGE_FILE_MB * MIB
    assert store.read_manifest(uri).run_id == "run-2"

    fetched_dir = store.materialize(uri, tmp_path / "cache" / "key2")
    assert fetched_dir == (tmp_path / "cache" / "key2").resolve()
    tree = read_tree(fetched_dir)
    assert json.loads(tree.pop(MANIFEST_NAME))["digest"] == manifest.digest
    assert tree == files


def test_in_place_publish_writes_only_the_manifest(tmp_path):
    store = local_storage(tmp_path / "store")
    uri = store.uri("stage1", "key")
    folder = resolve_local(uri)
    files = write_checkpoint(folder)
    assert not store.exists(uri)

    manifest = store.publish(folder, uri, run_id="run-1")

    assert store.exists(uri)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["key"]
    assert store.local_path(uri) == folder
    assert sorted(manifest.files) == sorted(files)


# ----------------------------------------------------------------------------------------- atomicity


@pytest.mark.parametrize("fail_at_file", [1, 3])
def test_interrupted_publish_leaves_no_checkpoint(backend, tmp_path, monkeypatch, fail_at_file):
    store, remote = backend
    write_checkpoint(tmp_path / "export")
    uri = remote.uri("interrupted")
    transfers = []

    def failing_transfer(self, *args, **kwargs):
        transfers.append(args)
        if len(transfers) == fail_at_file:
            raise ConnectionError("network lost mid-publish")
        return original(self, *args, **kwargs)

    cls, name = (_S3Backend, "_upload_file") if isinstance(remote, S3Remote) else (_LocalBackend, "_copy_file")
    original = getattr(cls, name)
    monkeypatch.setattr(cls, name, failing_transfer)

    with pytest.raises(ConnectionError, match="mid-publish"):
        store.publish(tmp_path / "export", uri, run_id="run-x")

    assert not store.exists(uri)
    assert store.read_manifest(uri) is None
    with pytest.raises(CheckpointNotFoundError, match="manifest.json is missing"):
        store.fetch(uri, tmp_path / "fetched")
    assert not (tmp_path / "fetched").exists()
    assert MANIFEST_NAME not in remote.names(uri)

    # The next attempt publishes normally.
    monkeypatch.setattr(cls, name, original)
    store.publish(tmp_path / "export", uri, run_id="run-y")
    assert store.exists(uri)


def test_files_without_a_manifest_are_not_a_checkpoint(backend, tmp_path):
    """What a publisher killed before its manifest leaves behind (no clean-up ran)."""
    store, remote = backend
    uri = remote.uri("killed")
    remote.write(uri, "model.safetensors", b"half of the weights")
    remote.write(uri, "stale/leftover.bin", b"from an older attempt")

    assert not store.exists(uri)
    with pytest.raises(CheckpointNotFoundError):
        store.fetch(uri, tmp_path / "fetched")

    files = write_checkpoint(tmp_path / "export")
    store.publish(tmp_path / "export", uri)
    assert remote.names(uri) == {*files, MANIFEST_NAME}
    assert remote.read(uri, "model.safetensors") == files["model.safetensors"]


# ----------------------------------------------------------------------------------------- corruption


def test_corrupted_file_is_named_on_fetch(backend, tmp_path):
    store, remote = backend
    files = write_checkpoint(tmp_path / "export")
    uri = remote.uri("corrupt")
    manifest = store.publish(tmp_path / "export", uri)
    damaged = bytearray(files["model.safetensors"])
    damaged[100] ^= 0xFF  # same size, one byte flipped
    remote.write(uri, "model.safetensors", bytes(damaged))

    with pytest.raises(CorruptCheckpointError, match="'model.safetensors' has the wrong sha256") as caught:
        store.fetch(uri, tmp_path / "fetched")

    assert caught.value.relpath == "model.safetensors"
    assert caught.value.expected == manifest.files["model.safetensors"].sha256
    assert caught.value.actual == hashlib.sha256(bytes(damaged)).hexdigest()
    assert caught.value.expected in str(caught.value) and caught.value.actual in str(caught.value)
    assert not (tmp_path / "fetched").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".fetched")] == []


def test_truncated_file_is_named_on_fetch(backend, tmp_path):
    store, remote = backend
    files = write_checkpoint(tmp_path / "export")
    uri = remote.uri("truncated")
    store.publish(tmp_path / "export", uri)
    remote.write(uri, "config.json", files["config.json"][:-3])

    with pytest.raises(CorruptCheckpointError, match="'config.json' has the wrong size") as caught:
        store.fetch(uri, tmp_path / "fetched")
    assert (caught.value.expected, caught.value.actual) == (
        f"{len(files['config.json'])} bytes",
        f"{len(files['config.json']) - 3} bytes",
    )


def test_missing_file_is_named_on_fetch(backend, tmp_path):
    store, remote = backend
    write_checkpoint(tmp_path / "export")
    uri = remote.uri("missing")
    store.publish(tmp_path / "export", uri)
    remote.delete(uri, "image_processor/preprocessor_config.json")

    with pytest.raises(CorruptCheckpointError, match="'image_processor/preprocessor_config.json' is missing"):
        store.fetch(uri, tmp_path / "fetched")


def test_local_path_verifies_in_place(tmp_path):
    store = local_storage(tmp_path / "store")
    files = write_checkpoint(tmp_path / "export")
    uri = store.uri("in-place")
    store.publish(tmp_path / "export", uri)
    (resolve_local(uri) / "tokenizer.json").write_bytes(files["tokenizer.json"].upper())

    with pytest.raises(CorruptCheckpointError, match="'tokenizer.json' has the wrong sha256"):
        store.local_path(uri)
    assert store.local_path(uri, verify=False) == resolve_local(uri)


def test_tampered_manifest_is_rejected(tmp_path):
    store = local_storage(tmp_path / "store")
    write_checkpoint(tmp_path / "export")
    uri = store.uri("tampered")
    store.publish(tmp_path / "export", uri)
    path = resolve_local(uri) / MANIFEST_NAME
    body = json.loads(path.read_text())
    body["files"]["config.json"]["sha256"] = "0" * 64
    path.write_text(json.dumps(body))

    with pytest.raises(StoreError, match="manifest digest .* does not match its file list"):
        store.fetch(uri, tmp_path / "fetched")


@pytest.mark.parametrize("bad_path", ["../escape.bin", "/etc/passwd", "a/../../b", "dir//file", MANIFEST_NAME])
def test_manifest_rejects_paths_outside_the_checkpoint(bad_path):
    files = {bad_path: {"sha256": "a" * 64, "size": 1}}
    body = {"format": 1, "files": files, "digest": "x", "created_at": "now"}
    with pytest.raises(StoreError, match="is not a valid file path"):
        Manifest.from_json(json.dumps(body), "test")


# ----------------------------------------------------------------------------------------- fetch target


def test_fetch_reuses_an_intact_copy_and_repairs_a_damaged_one(tmp_path, s3_server, s3_bucket, monkeypatch):
    store = s3_storage(s3_server, s3_bucket)
    files = write_checkpoint(tmp_path / "export")
    uri = store.uri("cached")
    store.publish(tmp_path / "export", uri)
    store.fetch(uri, tmp_path / "cache")

    downloads = []
    original = _S3Backend.fetch_file
    monkeypatch.setattr(_S3Backend, "fetch_file", lambda self, *a: (downloads.append(a), original(self, *a)))
    store.fetch(uri, tmp_path / "cache")
    assert downloads == []

    (tmp_path / "cache" / "config.json").write_bytes(b"{}")
    store.fetch(uri, tmp_path / "cache")
    assert len(downloads) == len(files)
    assert (tmp_path / "cache" / "config.json").read_bytes() == files["config.json"]


def test_fetch_refuses_to_replace_a_folder_that_is_not_a_checkpoint(tmp_path):
    store = local_storage(tmp_path / "store")
    write_checkpoint(tmp_path / "export")
    uri = store.uri("ckpt")
    store.publish(tmp_path / "export", uri)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")

    with pytest.raises(StoreError, match="refusing to replace .*notes"):
        store.fetch(uri, tmp_path / "notes")
    assert read_tree(tmp_path / "notes") == {"todo.txt": b"keep me"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".notes")] == []


def test_fetch_replaces_an_older_checkpoint_folder(tmp_path):
    store = local_storage(tmp_path / "store")
    old_files = write_checkpoint(tmp_path / "old", seed=1)
    (tmp_path / "old" / "extra.bin").write_bytes(b"only in the old one")
    new_files = write_checkpoint(tmp_path / "new", seed=2)
    store.publish(tmp_path / "old", store.uri("a"))
    store.publish(tmp_path / "new", store.uri("b"))

    store.fetch(store.uri("a"), tmp_path / "work")
    assert "extra.bin" in read_tree(tmp_path / "work")
    store.fetch(store.uri("b"), tmp_path / "work")
    tree = read_tree(tmp_path / "work")
    tree.pop(MANIFEST_NAME)
    assert tree == new_files != old_files


# ----------------------------------------------------------------------------------------- re-publishing


def test_republish_same_files_is_a_no_op(backend, tmp_path):
    store, remote = backend
    write_checkpoint(tmp_path / "first", seed=5)
    write_checkpoint(tmp_path / "second", seed=5)
    uri = remote.uri("same")
    first = store.publish(tmp_path / "first", uri, run_id="run-1", step_key="k")

    second = store.publish(tmp_path / "second", uri, run_id="run-2", step_key="k")

    assert second == first
    assert store.read_manifest(uri).run_id == "run-1"


def test_republish_different_files_needs_overwrite(backend, tmp_path):
    store, remote = backend
    write_checkpoint(tmp_path / "first", seed=1)
    (tmp_path / "first" / "optimizer_hint.json").write_text("{}")
    new_files = write_checkpoint(tmp_path / "second", seed=2)
    uri = remote.uri("different")
    first = store.publish(tmp_path / "first", uri, run_id="run-1")

    with pytest.raises(CheckpointExistsError, match="overwrite=True"):
        store.publish(tmp_path / "second", uri, run_id="run-2")
    assert store.read_manifest(uri).digest == first.digest

    second = store.publish(tmp_path / "second", uri, run_id="run-2", overwrite=True)

    assert store.read_manifest(uri).digest == second.digest != first.digest
    assert remote.names(uri) == {*new_files, MANIFEST_NAME}, "files of the replaced checkpoint are removed"
    store.fetch(uri, tmp_path / "fetched")
    assert (tmp_path / "fetched" / "config.json").read_bytes() == new_files["config.json"]


def test_publish_refuses_to_cover_other_checkpoints(backend, tmp_path):
    store, remote = backend
    write_checkpoint(tmp_path / "export")
    store.publish(tmp_path / "export", store.uri("stage1", "key"))

    with pytest.raises(StoreError, match="refusing to (replace|publish to) .*stage1.*holds"):
        store.publish(tmp_path / "export", store.uri("stage1"))
    assert store.exists(store.uri("stage1", "key"))
    assert not store.exists(store.uri("stage1"))


# ----------------------------------------------------------------------------------------- manifests


def test_digest_ignores_file_order_and_metadata(tmp_path):
    files = write_checkpoint(tmp_path / "a")
    (tmp_path / "b").mkdir()
    for rel in reversed(list(files)):  # created in the opposite order
        (tmp_path / "b" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "b" / rel).write_bytes(files[rel])

    a = build_manifest(tmp_path / "a", run_id="r1", step_key="k1", meta={"x": 1})
    b = build_manifest(tmp_path / "b", run_id="r2", step_key="k2")
    assert a.digest == b.digest

    (tmp_path / "b" / "tokenizer.json").rename(tmp_path / "b" / "tokenizer2.json")
    assert build_manifest(tmp_path / "b").digest != a.digest
    assert Manifest.from_json(a.to_json(), "test") == a


def test_digest_is_stable_across_processes(tmp_path):
    write_checkpoint(tmp_path / "ckpt")
    here = build_manifest(tmp_path / "ckpt").digest
    code = "import sys; from storage.store import build_manifest; print(build_manifest(sys.argv[1]).digest)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "ckpt")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert there == here


def test_empty_folder_is_not_publishable(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="at least one file"):
        local_storage(tmp_path / "store").publish(tmp_path / "empty", f"file://{tmp_path}/store/x")


# ----------------------------------------------------------------------------------------- URIs and config


def test_uris_resolve():
    assert resolve_local("file://runs/store/a") == REPO_ROOT / "runs" / "store" / "a"
    assert resolve_local("file:///tmp/x/y") == Path("/tmp/x/y")
    assert join_uri("s3://bucket/store/", "stage1", "/key/") == "s3://bucket/store/stage1/key"
    with pytest.raises(StoreError, match="invalid URI part"):
        join_uri("file://runs/store", "..", "x")
    with pytest.raises(StoreError, match="needs a bucket and a prefix"):
        CheckpointStore.from_config(load_group("storage", "s3")).exists("s3://bucket-only")
    with pytest.raises(StoreError, match="unsupported URI scheme"):
        resolve_local("gs://bucket/x")


def test_shipped_configs_validate():
    local = open_store(load_group("storage", "local"))
    assert (local.config.kind, local.root, local.config.s3) == ("local", "file://runs/store", None)
    s3 = open_store(load_group("storage", "s3"))
    assert (s3.config.kind, s3.config.s3.retry_mode) == ("s3", "standard")


@pytest.mark.parametrize(
    ("group", "override", "key"),
    [
        ("local", {"kind": "gcs"}, "storage.kind"),
        ("local", {"root": "s3://bucket/store"}, "storage.root"),
        ("s3", {"s3": None}, "storage.s3"),
        ("s3", {"s3": {"multipart_chunk_mb": 2}}, "storage.s3.multipart_chunk_mb"),
        ("s3", {"s3": {"max_attempts": 0}}, "storage.s3.max_attempts"),
        ("s3", {"s3": {"retry_mode": "sometimes"}}, "storage.s3.retry_mode"),
        ("s3", {"s3": {"multipart_treshold_mb": 8}}, "multipart_treshold_mb"),
        ("s3", {"s3": {"max_concurrency": "many"}}, "max_concurrency"),
    ],
)
def test_bad_config_names_the_key(group, override, key):
    cfg = OmegaConf.merge(load_group("storage", group), override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        open_store(cfg)


def test_s3_uri_needs_s3_settings(tmp_path):
    with pytest.raises(StoreError, match="storage.s3 is null"):
        local_storage(tmp_path).exists("s3://bucket/store/x")


def test_missing_bucket_is_named(s3_server, s3_credentials, tmp_path):
    store = s3_storage(s3_server, "no-such-bucket")
    write_checkpoint(tmp_path / "export")
    with pytest.raises(StoreError, match="no-such-bucket.*bucket does not exist"):
        store.publish(tmp_path / "export", store.uri("x"))
