"""Read JSONL shards from a local folder or an s3:// prefix as validated samples (SampleReader) or
preference pairs (PreferenceReader: the synthetic pairs and public files, data/preference.py) with their images.

A record whose image is missing or cannot be decoded is skipped at once, counted in `reader.stats` and
logged at WARNING with its id; it never stops the run. An image read that fails transiently (a connection
error, a timeout, an S3 5xx: storage.files.TransientReadError) is retried with the storage config's
`read_retry` attempts and backoff, and only then skipped the same way (as unreadable). A record that is
not valid JSON or breaks the schema is skipped too, or raises SampleError in strict mode.
"""
from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from data.preference import PreferencePair
from data.schema import Sample, SampleError
from storage.files import MissingObject, Storage, TransientReadError, join, resolve

log = logging.getLogger(__name__)

BAD_RECORD = "bad_record"
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
UNREADABLE_IMAGE = "unreadable_image"  # still failing transiently after every retry
SKIP_REASONS = (BAD_RECORD, MISSING_IMAGE, CORRUPT_IMAGE, UNREADABLE_IMAGE)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class ReadStats:
    shards: int = 0
    samples: int = 0  # records yielded (samples, or a PreferenceReader's pairs)
    retries: int = 0  # image reads repeated after a transient failure
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, int]:
        return {"shards": self.shards, "samples": self.samples, "retries": self.retries,
                **{f"skipped_{k}": v for k, v in self.skipped.items()}}


@dataclass(frozen=True)
class LoadedSample:
    sample: Sample
    images: list[Image.Image]  # RGB, in the order of sample.image_refs(); empty when images are not loaded
    source: str  # "<shard>:<line>"


@dataclass(frozen=True)
class LoadedPair:
    pair: PreferencePair
    images: list[Image.Image]  # RGB, in the order of pair.image_refs(); empty when images are not loaded
    source: str  # "<file>:<line>"


class _ShardReader:
    """What both readers share: the shards under a root, records parsed (bad ones skipped and counted), images."""

    what = "record"  # in log lines
    record_type: Any  # Sample or PreferencePair: its from_json parses and validates a line
    loaded_type: Any  # LoadedSample or LoadedPair: what iteration yields

    def __init__(self, uri: str, *, split: str | None = None, strict: bool = False, load_images: bool = True,
                 storage: Storage | None = None):
        self.root = join(str(uri), split) if split else str(uri)
        self.strict = strict
        self.load_images = load_images
        self.storage = storage or Storage()
        self.stats = ReadStats()

    def shard_uris(self) -> list[str]:
        return self.storage.list(self.root, ".jsonl")

    def __iter__(self) -> Iterator[Any]:
        for shard in self.shard_uris():
            self.stats.shards += 1
            for line_no, raw in enumerate(self.storage.read_bytes(shard).splitlines(), 1):
                if not raw.strip():
                    continue
                where = f"{shard}:{line_no}"
                record = self._parse(raw, shard, line_no)
                if record is None:
                    continue
                images = self._images(record, shard, where) if self.load_images else []
                if images is None:
                    continue
                self.stats.samples += 1
                yield self.loaded_type(record, images, where)

    def _parse(self, raw: bytes, shard: str, line_no: int) -> Any:
        try:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SampleError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=shard,
                                  line_no=line_no) from exc
            return self.record_type.from_json(line, file=shard, line_no=line_no)
        except SampleError as exc:
            if self.strict:
                raise
            self.stats.skipped[BAD_RECORD] += 1
            log.warning("skipping a malformed record: %s", exc)
            return None

    def _images(self, record: Sample | PreferencePair, shard: str, where: str) -> list[Image.Image] | None:
        images = []
        for ref in record.image_refs():
            uri = resolve(shard, ref)
            try:
                data = self._read_retrying(uri, where)
            except MissingObject:
                return self._skip(MISSING_IMAGE, record, where, f"missing image {uri}")
            except TransientReadError as exc:
                attempts = self.storage.read_retry.attempts
                return self._skip(UNREADABLE_IMAGE, record, where, f"unreadable image after {attempts} reads ({exc})")
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
                    images.append(image.convert("RGB"))
            except _DECODE_ERRORS as exc:
                return self._skip(CORRUPT_IMAGE, record, where, f"corrupt image {uri} ({exc})")
        return images

    def _read_retrying(self, uri: str, where: str) -> bytes:
        """The file's bytes; a transient failure is retried with exponential backoff, the last one re-raised."""
        policy = self.storage.read_retry
        attempt = 1
        while True:
            try:
                return self.storage.read_bytes(uri)
            except TransientReadError as exc:
                if attempt >= policy.attempts:
                    raise
                delay = min(policy.backoff_s * 2 ** (attempt - 1), policy.max_backoff_s)
                attempt += 1
                self.stats.retries += 1
                log.warning("reading %s (%s) failed (%s); read %d of %d in %.1f s",
                            uri, where, exc, attempt, policy.attempts, delay)
                time.sleep(delay)

    def _skip(self, reason: str, record: Sample | PreferencePair, where: str, detail: str) -> None:
        self.stats.skipped[reason] += 1
        log.warning("skipping %s %s (%s): %s", self.what, record.id, where, detail)
        return None


class SampleReader(_ShardReader):
    """Iterates the samples of every *.jsonl file under `uri` (or `uri`/`split`), in sorted file order.

    uri: a local folder, file:// URI or s3://bucket/prefix. Image references resolve against the
    folder of their shard. Each iteration reads the shards again and adds to `stats`. storage: how files
    are read (its S3 client and read_retry); None: local files with the shipped conf/storage/local.yaml.
    """

    what = "sample"
    record_type = Sample
    loaded_type = LoadedSample

    def images_of(self, record: LoadedSample) -> list[Image.Image] | None:
        """The images of a record read with load_images=False; None (skipped, counted, logged) when one is
        missing or corrupt."""
        shard = record.source.rsplit(":", 1)[0]
        return self._images(record.sample, shard, record.source)


class PreferenceReader(_ShardReader):
    """Iterates the preference pairs of every *.jsonl file under `uri` (or `uri`/`split`), in sorted file order:
    the synthetic pairs (`<data set>/preference`, split `train` or `heldout`) or public files in the common
    `prompt`/`chosen`/`rejected` form (data/preference.py). Arguments, images and `stats` as SampleReader's
    (`stats.samples` counts the pairs yielded).
    """

    what = "pair"
    record_type = PreferencePair
    loaded_type = LoadedPair

    def images_of(self, record: LoadedPair) -> list[Image.Image] | None:
        """The images of a pair read with load_images=False; None (skipped, counted, logged) when one is
        missing or corrupt."""
        shard = record.source.rsplit(":", 1)[0]
        return self._images(record.pair, shard, record.source)
