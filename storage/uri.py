"""File and S3 URIs, the one place that parses them.

`file://relative/path` is relative to the repository root, `file:///abs/path` is absolute, a plain path
is an ordinary file-system path; `s3://bucket/key` names an object or a prefix.
"""
from __future__ import annotations

import posixpath
from pathlib import Path

from conf import REPO_ROOT


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message names the URI."""


def is_s3(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def resolve_local(uri_or_path: str | Path) -> Path:
    """The absolute path of a file:// URI or a plain path.

    `file://runs/store/x` is relative to the repository root, `file:///abs` is absolute, and a plain
    relative path is relative to the working directory (like any path).
    """
    text = str(uri_or_path)
    if is_s3(text):
        raise StoreError(f"not a local URI: {text}")
    if text.startswith("file://"):
        rest = text[len("file://"):]
        if not rest:
            raise StoreError(f"empty file:// URI: {text}")
        path = Path(rest)
        return (path if path.is_absolute() else REPO_ROOT / path).resolve()
    if "://" in text:
        raise StoreError(f"unsupported URI scheme (file:// or s3://): {text}")
    return Path(text).resolve()


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key/` -> ("bucket", "some/key"); the key may be empty (a whole bucket)."""
    if not is_s3(uri):
        raise StoreError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StoreError(f"an s3 URI needs a bucket (s3://bucket/key), got {uri}")
    return bucket, key.strip("/")


def split_s3_prefix(uri: str) -> tuple[str, str]:
    """Like split_s3, for a checkpoint or claim location: the prefix must not be empty."""
    bucket, prefix = split_s3(uri)
    if not prefix:
        raise StoreError(f"an s3 checkpoint URI needs a bucket and a prefix (s3://bucket/prefix), got {uri}")
    return bucket, prefix


def join_uri(base: str, *parts: str) -> str:
    """`join_uri("s3://b/store", "stage1", key)` -> "s3://b/store/stage1/<key>"; no `..` or empty parts."""
    cleaned = []
    for part in parts:
        for piece in str(part).strip("/").split("/"):
            if piece in ("", ".", ".."):
                raise StoreError(f"invalid URI part '{part}' (joining onto {base})")
            cleaned.append(piece)
    return "/".join([str(base).rstrip("/"), *cleaned])


def join(root: str, name: str) -> str:
    """A file under a data folder: s3:// stays a URI, a local root becomes an absolute path."""
    if is_s3(root):
        return root.rstrip("/") + "/" + name
    return str(resolve_local(root) / name)


def resolve(base_file: str, ref: str) -> str:
    """The URI of `ref` (relative to the folder of `base_file`, absolute, file:// or s3://)."""
    if is_s3(ref) or ref.startswith("file://") or ref.startswith("/"):
        return ref
    if is_s3(base_file):
        bucket, key = split_s3(base_file)
        return f"s3://{bucket}/{posixpath.normpath(posixpath.join(posixpath.dirname(key), ref))}"
    return str(resolve_local(base_file).parent / ref)
