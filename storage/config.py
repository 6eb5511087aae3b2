"""Typed config of the storage layer (conf/storage/*.yaml): the store, the S3 client, data reads; the YAML holds
every value."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from conf import ConfigError

STORAGE_KINDS = {"local": "file://", "s3": "s3://"}
RETRY_MODES = ("legacy", "standard", "adaptive")
ADDRESSING_STYLES = ("auto", "path", "virtual")
CHECKSUM_POLICIES = ("when_supported", "when_required")
# S3 rejects multipart parts below 5 MiB (all but the last); s3transfer silently raises smaller chunks.
S3_MIN_PART_MB = 5


@dataclass
class S3Config:
    """How boto3 talks to S3 or an S3-compatible store; credentials come from the standard chain."""

    endpoint_url: Optional[str] = MISSING  # null: AWS S3; e.g. http://127.0.0.1:9000 for MinIO
    region: Optional[str] = MISSING
    profile: Optional[str] = MISSING  # null: default credential chain (env vars, ~/.aws, instance role)
    addressing_style: str = MISSING  # auto | path | virtual; S3-compatible stores usually want path
    multipart_threshold_mb: int = MISSING
    multipart_chunk_mb: int = MISSING
    max_concurrency: int = MISSING  # parallel part transfers per file
    max_attempts: int = MISSING  # total attempts per request, first one included
    retry_mode: str = MISSING  # legacy | standard | adaptive
    connect_timeout_s: float = MISSING
    read_timeout_s: float = MISSING
    # botocore >= 1.36 sends CRC checksums by default; older S3-compatible servers need when_required.
    request_checksum_calculation: str = MISSING
    response_checksum_validation: str = MISSING

    def check(self, where: str) -> None:
        _one_of(f"{where}.addressing_style", self.addressing_style, ADDRESSING_STYLES)
        _one_of(f"{where}.retry_mode", self.retry_mode, RETRY_MODES)
        _one_of(f"{where}.request_checksum_calculation", self.request_checksum_calculation, CHECKSUM_POLICIES)
        _one_of(f"{where}.response_checksum_validation", self.response_checksum_validation, CHECKSUM_POLICIES)
        for key in ("multipart_threshold_mb", "max_concurrency", "max_attempts"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}.{key}: must be >= 1, got {getattr(self, key)}")
        if self.multipart_chunk_mb < S3_MIN_PART_MB:
            raise ConfigError(
                f"{where}.multipart_chunk_mb: S3 parts are at least {S3_MIN_PART_MB} MiB, got {self.multipart_chunk_mb}"
            )
        for key in ("connect_timeout_s", "read_timeout_s"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{where}.{key}: must be > 0, got {getattr(self, key)}")


@dataclass
class ReadRetryConfig:
    """How a data file (a sample's image) that fails to load transiently is retried before it is skipped.

    Transient: a connection error, a timeout, an S3 5xx or throttling reply, a local I/O error other than
    "not found". A missing or corrupt file is skipped at once. On S3 this comes on top of the client's
    own per-request retries (s3.max_attempts).
    """

    attempts: int = MISSING  # reads per file, the first included
    backoff_s: float = MISSING  # wait before the second read, doubled after each further failure
    max_backoff_s: float = MISSING  # the longest wait between two reads

    def check(self, where: str) -> None:
        if self.attempts < 1:
            raise ConfigError(f"{where}.attempts: must be >= 1, got {self.attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ConfigError(
                f"{where}: backoff_s must be >= 0 and max_backoff_s >= backoff_s, "
                f"got {self.backoff_s} and {self.max_backoff_s}"
            )


@dataclass
class PublishLockConfig:
    """s3:// publishes to one URI run one at a time under a lease (S3 has no atomic folder rename)."""

    lease_s: float = MISSING  # a crashed publisher's lock is taken over this long after its last renewal
    renew_every_s: float = MISSING  # the holder renews its lease this often while it uploads
    poll_s: float = MISSING  # a second publisher checks this often whether the lock is free

    def check(self, where: str) -> None:
        for key in ("lease_s", "renew_every_s", "poll_s"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{where}.{key}: must be > 0, got {getattr(self, key)}")
        if self.renew_every_s >= self.lease_s:
            raise ConfigError(
                f"{where}.renew_every_s: must be below lease_s ({self.lease_s}), got {self.renew_every_s}"
            )


@dataclass
class StorageConfig:
    """Where checkpoints are published: `root` is a file:// or s3:// URI.

    `s3` is needed to read or write any s3:// URI, also an input checkpoint of a local-root pipeline.
    """

    kind: str = MISSING  # local | s3: the scheme of `root`
    root: str = MISSING  # file://runs/store (relative to the repo root), file:///abs/path or s3://bucket/prefix
    s3: Optional[S3Config] = MISSING
    read_retry: ReadRetryConfig = field(default_factory=ReadRetryConfig)
    publish_lock: PublishLockConfig = field(default_factory=PublishLockConfig)

    def check(self, where: str) -> None:
        _one_of(f"{where}.kind", self.kind, tuple(STORAGE_KINDS))
        scheme = STORAGE_KINDS[self.kind]
        if not self.root.startswith(scheme) or len(self.root) == len(scheme):
            raise ConfigError(f"{where}.root: kind '{self.kind}' needs a {scheme}... URI, got '{self.root}'")
        if self.kind == "s3" and self.s3 is None:
            raise ConfigError(f"{where}.s3: kind 's3' needs the s3 client settings, got null")
        if self.s3 is not None:
            self.s3.check(f"{where}.s3")
        self.read_retry.check(f"{where}.read_retry")
        self.publish_lock.check(f"{where}.publish_lock")


def _one_of(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {list(choices)}, got '{value}'")
