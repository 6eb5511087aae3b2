"""Read-only access to a data location: a local folder (path or file:// URI) or an s3:// prefix.

S3 goes through boto3 with its standard credential chain; the endpoint URL is optional (an argument,
else boto3's own AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 environment variables).
"""
from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from storage.store import is_s3, resolve_local


class MissingObject(FileNotFoundError):
    """The file or S3 object does not exist."""


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def local_path(uri: str) -> Path:
    """A local folder or file: `file://rel` is relative to the repository root, as in the checkpoint store."""
    return resolve_local(uri)


class Storage:
    """Lists and reads files by URI. One boto3 client, made on first S3 use."""

    def __init__(self, endpoint_url: str | None = None):
        self.endpoint_url = endpoint_url
        self._client: Any = None

    @property
    def s3(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url)
        return self._client

    def list(self, root: str, suffix: str) -> list[str]:
        """URIs of the files under `root` (recursively) whose name ends with `suffix`, sorted."""
        if is_s3(root):
            bucket, prefix = split_s3(root)
            prefix = prefix.rstrip("/") + "/" if prefix else ""
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
            from botocore.exceptions import ClientError

            bucket, key = split_s3(uri)
            try:
                return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    raise MissingObject(f"no such object: {uri}") from exc
                raise
        try:
            return local_path(uri).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise MissingObject(f"no such file: {uri}") from exc

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")


def resolve(base_file: str, ref: str) -> str:
    """The URI of `ref` (relative to the folder of `base_file`, absolute, file:// or s3://)."""
    if is_s3(ref) or ref.startswith("file://") or ref.startswith("/"):
        return ref
    if is_s3(base_file):
        bucket, key = split_s3(base_file)
        return f"s3://{bucket}/{posixpath.normpath(posixpath.join(posixpath.dirname(key), ref))}"
    return str(local_path(base_file).parent / ref)


def join(root: str, name: str) -> str:
    if is_s3(root):
        return root.rstrip("/") + "/" + name
    return str(local_path(root) / name)
