import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from data.manifest import load_manifest
from data.reader import BAD_RECORD, CORRUPT_IMAGE, MISSING_IMAGE, SampleReader
from data.schema import SampleError
from storage.files import Storage


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
    assert reader.stats.skipped == {BAD_RECORD: 2, MISSING_IMAGE: 1, CORRUPT_IMAGE: 1}
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

    assert load_manifest(f"s3://{s3_bucket}/synthetic/v1", Storage(s3_server)) == load_manifest(str(root))
    reader = SampleReader(f"s3://{s3_bucket}/synthetic/v1", split="eval", endpoint_url=s3_server)
    with caplog.at_level(logging.WARNING, logger="data.reader"):
        remote = list(reader)
    assert reader.stats.skipped == {BAD_RECORD: 2, MISSING_IMAGE: 1, CORRUPT_IMAGE: 1}
    expected = [item for item in local if item.sample.id not in (corrupt.id, missing.id)]
    assert [item.sample for item in remote] == [item.sample for item in expected]
    for got, want in zip(remote, expected):
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(got.images, want.images))
    assert remote[0].source.startswith(f"s3://{s3_bucket}/synthetic/v1/eval/shard-00000.jsonl:")
    assert any(missing.id in r.getMessage() and f"s3://{s3_bucket}/synthetic/v1/eval/images/" in r.getMessage()
               for r in caplog.records)
