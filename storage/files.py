"""Read-only access to a data location: a local folder (path or file:// URI) or an s3:// prefix.

S3 goes through the project's one client (storage.s3.S3Access), built from the `s3` section of the
storage config; reading an s3:// URI without one is an error naming `storage.s3`. A read that fails for
a reason that may pass (storage.s3.is_transient; a local I/O error other than "not found") raises
TransientReadError, which callers retry with `read_retry` (conf/storage/*.yaml); a missing file raises
MissingObject.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from conf import validated
from storage.config import ReadRetryConfig, StorageConfig
from storage.uri import StoreError, is_s3, join, resolve, resolve_local, split_s3

__all__ = ["MissingObject", "Storage", "TransientReadError", "join", "local_path", "resolve", "split_s3"]


class MissingObject(FileNotFoundError):
    """The file or S3 object does not exist."""


class TransientReadError(OSError):
    """A read failed for a reason that may pass (connection, timeout, 5xx, I/O error): worth a retry."""


def local_path(uri: str) -> Path:
    """A local folder or file: `file://rel` is relative to the repository root, as in the checkpoint store."""
    return resolve_local(uri)


@lru_cache(maxsize=1)
def _shipped_local_config() -> StorageConfig:
    from conf import load_group

    return validated(StorageConfig, load_group("storage", "local"), "storage (conf/storage/local.yaml)")


class Storage:
    """Lists and reads files by URI. One S3 client (from `config.s3`), made on first S3 use.

    config: a StorageConfig or a conf/storage section; None: the shipped conf/storage/local.yaml
    (local files only).
    """

    def __init__(self, config: StorageConfig | Any = None, where: str = "storage"):
        if config is None:
            config = _shipped_local_config()
        self.config = config if isinstance(config, StorageConfig) else validated(StorageConfig, config, where)
        self._access: Any = None

    @property
    def read_retry(self) -> ReadRetryConfig:
        return self.config.read_retry

    @property
    def s3(self) -> Any:
        if self._access is None:
            from storage.s3 import S3Access

            if self.config.s3 is None:
                raise StoreError("reading s3:// data needs the S3 client settings: storage.s3 is null (use storage=s3)")
            self._access = S3Access(self.config.s3)
        return self._access.client

    def list(self, root: str, suffix: str) -> list[str]:
        """URIs of the files under `root` (recursively) whose name ends with `suffix`, sorted."""
        if is_s3(root):
            bucket, prefix = split_s3(root)
            prefix = prefix + "/" if prefix else ""
            keys = []
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys += [obj["Key"] for obj in page.get("Contents", []) if obj["Key"].endswith(suffix)]
            return [f"s3://{bucket}/{key}" for key in sorted(keys)]
        folder = local_path(root)
        if not folder.is_dir():
            raise MissingObject(f"no such folder: {folder}")
        return sorted(str(p) for p in folder.rglob(f"*{suffix}") if p.is_file())

    def read_bytes(self, uri: str) -> bytes:
        if is_s3(uri):
            return self._read_s3(uri)
        try:
            return local_path(uri).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise MissingObject(f"no such file: {uri}") from exc
        except PermissionError:
            raise
        except OSError as exc:  # EIO, ESTALE, ETIMEDOUT on a network file system, ...
            raise TransientReadError(f"reading {uri} failed: {exc}") from exc

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def _read_s3(self, uri: str) -> bytes:
        from storage.s3 import NOT_FOUND_CODES, error_code, is_transient

        bucket, key = split_s3(uri)
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                raise MissingObject(f"no such object: {uri}") from exc
            if is_transient(exc):
                raise TransientReadError(f"reading {uri} failed: {exc}") from exc
            raise
