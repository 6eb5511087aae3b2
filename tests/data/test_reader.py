import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from data.manifest import load_manifest
from data.reader import BAD_RECORD, CORRUPT_IMAGE, MISSING_IMAGE, UNREADABLE_IMAGE, SampleReader
from data.schema import SampleError
from storage.files import Storage, TransientReadError
from storage.uri import StoreError


def _copy_split(dataset_dir, tmp_path, split="eval"):
    root = tmp_path / "ds"
    shutil.copytree(dataset_dir / split, root / split)
    shutil.copy(dataset_dir / "manifest.json", root / "manifest.json")
    return root


def _damage(root, split="eval"):
    """Truncate one image, delete another, append a broken JSON line and a schema-breaking record."""
    ordered = [ls.sample for ls in SampleReader(str(root), split=split, load_images=False)]
    with_images = [s for s in ordered if s.image_refs()]
    corrupt, missing = with_images[0], with_images[1]
    corrupt_path = root / split / corrupt.image_refs()[0]
    corrupt_path.write_bytes(corrupt_path.read_bytes()[:60])
    (root / split / missing.image_refs()[0]).unlink()
    shard = sorted((root / split).glob("*.jsonl"))[-1]
    lines = shard.read_text().splitlines()
    lines += ['{"id": "broken", "task": ', '{"id": "no-task", "messages": []}']
    shard.write_text("\n".join(lines) + "\n")
    return ordered, corrupt, missing, shard, len(lines)


def test_reads_a_local_split_with_rgb_images(dataset_dir):
    reader = SampleReader(str(dataset_dir), split="eval")
    loaded = list(reader)
    expected = load_manifest(str(dataset_dir))["splits"]["eval"]
    assert len(loaded) == expected["samples"] == reader.stats.samples
    assert reader.stats.total_skipped == 0 and reader.stats.shards == len(expected["shards"])
    for item in loaded:
        assert len(item.images) == len(item.sample.image_refs())
        assert all(image.mode == "RGB" and image.size[0] >= 56 for image in item.images)
    assert sum(len(item.images) for item in loaded) == expected["images"]


def test_skips_counts_and_logs_bad_samples(dataset_dir, tmp_path, caplog):
    root = _copy_split(dataset_dir, tmp_path)
    ordered, corrupt, missing, shard, n_lines = _damage(root)
    reader = SampleReader(f"file://{root}", split="eval")
    with caplog.at_level(logging.WARNING, logger="data.reader"):
        ids = [item.sample.id for item in reader]
    assert ids == [s.id for s in ordered if s.id not in (corrupt.id, missing.id)]
    assert reader.stats.skipped == {BAD_RECORD: 2, MISSING_IMAGE: 1, CORRUPT_IMAGE: 1, UNREADABLE_IMAGE: 0}
    assert reader.stats.samples == len(ordered) - 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(corrupt.id in w and "corrupt image" in w for w in warnings)
    assert any(missing.id in w and "missing image" in w for w in warnings)
    assert any(f"{shard}:{n_lines - 1}: invalid JSON" in w for w in warnings)
    assert any(f"{shard}:{n_lines}: field 'task': missing" in w for w in warnings)


def test_strict_mode_raises_on_a_malformed_record(dataset_dir, tmp_path):
    root = _copy_split(dataset_dir, tmp_path)
    _, _, _, shard, n_lines = _damage(root)
    reader = SampleReader(str(root), split="eval", strict=True)
    with pytest.raises(SampleError, match=rf"{shard.name}:{n_lines - 1}: invalid JSON"):
        list(reader)
    assert reader.stats.skipped[MISSING_IMAGE] == 1 and reader.stats.skipped[CORRUPT_IMAGE] == 1


def test_absolute_image_references(dataset_dir, tmp_path):
    root = _copy_split(dataset_dir, tmp_path)
    shard = sorted((root / "eval").glob("*.jsonl"))[0]
    first = next(iter(SampleReader(str(root), split="eval")))
    ref = first.sample.image_refs()[0]
    shard.write_text(shard.read_text().replace(f'"{ref}"', f'"{root / "eval" / ref}"', 1))
    again = next(iter(SampleReader(str(root), split="eval")))
    assert again.sample.image_refs()[0] == str(root / "eval" / ref)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(first.images[0]))


def test_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list(SampleReader(str(tmp_path / "nothing")))


def _s3_storage_config(endpoint: str, **s3_overrides):
    from conf import load_group

    cfg = load_group("storage", "s3")
    cfg.s3.endpoint_url = endpoint
    for key, value in s3_overrides.items():
        cfg.s3[key] = value
    return cfg


def _upload(endpoint, root: Path, bucket, prefix):
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root).as_posix()}")


def test_reads_from_s3_like_from_disk(dataset_dir, tmp_path, s3_server, s3_bucket, caplog):
    root = _copy_split(dataset_dir, tmp_path)
    local = list(SampleReader(str(root), split="eval"))
    _, corrupt, missing, _, _ = _damage(root)
    _upload(s3_server, root, s3_bucket, "synthetic/v1")

    storage = Storage(_s3_storage_config(s3_server))
    assert load_manifest(f"s3://{s3_bucket}/synthetic/v1", storage) == load_manifest(str(root))
    reader = SampleReader(f"s3://{s3_bucket}/synthetic/v1", split="eval", storage=storage)
    with caplog.at_level(logging.WARNING, logger="data.reader"):
        remote = list(reader)
    assert reader.stats.skipped == {BAD_RECORD: 2, MISSING_IMAGE: 1, CORRUPT_IMAGE: 1, UNREADABLE_IMAGE: 0}
    expected = [item for item in local if item.sample.id not in (corrupt.id, missing.id)]
    assert [item.sample for item in remote] == [item.sample for item in expected]
    for got, want in zip(remote, expected):
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(got.images, want.images))
    assert remote[0].source.startswith(f"s3://{s3_bucket}/synthetic/v1/eval/shard-00000.jsonl:")
    assert any(missing.id in r.getMessage() and f"s3://{s3_bucket}/synthetic/v1/eval/images/" in r.getMessage()
               for r in caplog.records)


# ----------------------------------------------------------------------------------------- transient reads


class FlakyStorage(Storage):
    """Reads of image files fail transiently `failures` times each, then succeed; counts every read."""

    def __init__(self, config, failures: int):
        super().__init__(config)
        self.failures = failures
        self.reads: dict[str, int] = {}

    def read_bytes(self, uri: str) -> bytes:
        if uri.endswith(".png"):
            self.reads[uri] = self.reads.get(uri, 0) + 1
            if self.reads[uri] <= self.failures:
                raise TransientReadError(f"reading {uri} failed: 503 Service Unavailable")
        return super().read_bytes(uri)


def _local_storage_config(**read_retry):
    from conf import load_group

    cfg = load_group("storage", "local")
    cfg.read_retry.backoff_s = 0.0  # no waiting in tests; the shipped backoff is in conf/storage
    cfg.read_retry.max_backoff_s = 0.0
    for key, value in read_retry.items():
        cfg.read_retry[key] = value
    return cfg


def test_a_transient_failure_is_retried_before_the_sample_is_skipped(dataset_dir, caplog):
    attempts = 3
    cfg = _local_storage_config(attempts=attempts)
    clean = list(SampleReader(str(dataset_dir), split="eval"))
    n_images = sum(len(item.images) for item in clean)

    recovers = FlakyStorage(cfg, failures=attempts - 1)
    reader = SampleReader(str(dataset_dir), split="eval", storage=recovers)
    with caplog.at_level(logging.WARNING, logger="data.reader"):
        loaded = list(reader)
    assert [item.sample for item in loaded] == [item.sample for item in clean]
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for got, want in zip(loaded, clean) for a, b in zip(got.images, want.images))
    assert reader.stats.total_skipped == 0
    assert reader.stats.retries == n_images * (attempts - 1)
    assert set(recovers.reads.values()) == {attempts}
    assert any("503 Service Unavailable" in r.getMessage() and f"read 2 of {attempts}" in r.getMessage()
               for r in caplog.records)

    caplog.clear()
    gives_up = FlakyStorage(cfg, failures=attempts)
    reader = SampleReader(str(dataset_dir), split="eval", storage=gives_up)
    with caplog.at_level(logging.WARNING, logger="data.reader"):
        loaded = list(reader)
    with_images = [item.sample.id for item in clean if item.images]
    assert [item.sample.id for item in loaded] == [item.sample.id for item in clean if not item.images]
    assert reader.stats.skipped[UNREADABLE_IMAGE] == len(with_images) and reader.stats.total_skipped == len(with_images)
    assert max(gives_up.reads.values()) == attempts  # never more reads than configured
    assert any(with_images[0] in r.getMessage() and f"unreadable image after {attempts} reads" in r.getMessage()
               for r in caplog.records)


def test_missing_and_corrupt_images_are_skipped_without_a_retry(dataset_dir, tmp_path):
    root = _copy_split(dataset_dir, tmp_path)
    _, corrupt, missing, _, _ = _damage(root)
    storage = FlakyStorage(_local_storage_config(attempts=5), failures=0)
    reader = SampleReader(str(root), split="eval", storage=storage)
    list(reader)
    assert reader.stats.skipped == {BAD_RECORD: 2, MISSING_IMAGE: 1, CORRUPT_IMAGE: 1, UNREADABLE_IMAGE: 0}
    assert reader.stats.retries == 0
    assert storage.reads[str(root / "eval" / missing.image_refs()[0])] == 1
    assert storage.reads[str(root / "eval" / corrupt.image_refs()[0])] == 1


def test_an_unreachable_s3_endpoint_is_a_transient_read_error(s3_credentials):
    """A refused connection (nothing listens on the port) is classified as transient, not as missing."""
    from storage.net import free_port

    storage = Storage(_s3_storage_config(f"http://127.0.0.1:{free_port()}", max_attempts=1, connect_timeout_s=2))
    with pytest.raises(TransientReadError, match="s3://bucket/eval/images/x.png"):
        storage.read_bytes("s3://bucket/eval/images/x.png")


def test_reading_s3_without_client_settings_names_the_key():
    with pytest.raises(StoreError, match=r"storage\.s3 is null"):
        Storage().read_bytes("s3://bucket/eval/shard-00000.jsonl")
