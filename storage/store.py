"""The checkpoint store: publish, find and fetch checkpoint folders under file:// or s3:// URIs.

A checkpoint is a folder of files (an HF-format model: safetensors, config.json, tokenizer and image
processor files, ...) plus `manifest.json`, which lists the sha256 and size of every file, a digest over
those entries, the MLflow run that produced it and its step key. The manifest is written last, so a
folder without one is not a checkpoint: `exists()` is False and `fetch()` refuses it.

Publishing:
- file://: the files are copied into a unique hidden sibling folder (`.<name>.publish-<pid>-<uuid>`),
  fsynced, the manifest written there atomically, and the folder renamed into place under an flock of the
  parent folder. A folder that is already the destination (a job that exported straight into the store)
  is published in place: its files are fsynced, then its manifest written (temp file + fsync + rename).
- s3://: under a lease-based publish lock on the URI, every file is uploaded (multipart above the
  configured threshold), keys under the prefix that the new manifest does not list are deleted, and
  manifest.json is put last (If-None-Match: *).
- Publishing to a URI that already holds a checkpoint with the same digest does nothing and returns
  the stored manifest: steps publish per step key, so a rerun is idempotent. A different digest raises
  `CheckpointExistsError` unless `overwrite=True`, checked up front and again at the moment of the swap
  (under the parent flock / the publish lock), so of two concurrent publishers of different contents the
  second fails; an overwrite first removes the old manifest, so during it (and after it is interrupted)
  no checkpoint is visible at that URI.
- Nothing is published over a folder or prefix that holds other checkpoints further down.

Fetching downloads (or copies) every file into a unique hidden sibling of the target folder, checks size
and sha256 against the manifest, fsyncs and renames the folder into place; a mismatch or a missing file
raises `CorruptCheckpointError` naming the file. `local_path()` verifies a file:// checkpoint in place
instead of copying it, and `materialize()` picks whichever of the two fits the URI. `cached_folder()`
copies a plain s3:// folder (released weights) once per node.

Claims (`try_claim`, `claim_info`; storage.claims): one owner at a time works on a URI, under a lease
that a crashed owner loses.

URIs (storage.uri): `file://relative/path` is relative to the repository root, `file:///abs/path` is
absolute, a plain path is an ordinary file-system path; `s3://bucket/prefix` needs a non-empty prefix.
This module is plain Python (boto3 + stdlib): job programs and Prefect tasks both import it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from conf import validated
from storage.claims import Claim, ClaimInfo, ClaimLost, FileClaims, S3Claims, try_claim
from storage.config import PublishLockConfig, S3Config, StorageConfig
from storage.durable import fsync_dir, fsync_tree, host_and_pid, locked_dir, locked_file, unique_sibling, write_atomically
from storage.s3 import CONFLICT_CODES, NOT_FOUND_CODES, S3Access, error_code
from storage.uri import StoreError, is_s3, join_uri, resolve_local, split_s3, split_s3_prefix

__all__ = [  # names other packages import from here
    "MANIFEST_NAME", "CheckpointExistsError", "CheckpointNotFoundError", "CheckpointStore", "Claim", "ClaimInfo",
    "ClaimLost", "CorruptCheckpointError", "FileEntry", "Manifest", "StoreError", "build_manifest", "files_digest",
    "is_s3", "join_uri", "open_store", "resolve_local", "sha256_file", "split_s3", "verify_dir",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_MIB = 1024 * 1024
_S3_DELETE_BATCH = 1000  # the most keys one DeleteObjects request accepts
_NOT_FOUND_CODES = NOT_FOUND_CODES
DOWNLOADED_MARKER = ".downloaded"  # written last into a folder copied from a plain s3:// prefix
PUBLISH_LOCK_SUFFIX = ".publishing"


class CheckpointNotFoundError(StoreError, FileNotFoundError):
    """No manifest at the URI: nothing was published there, or a publish did not finish."""


class CheckpointExistsError(StoreError):
    """A different checkpoint is already published at the URI (pass overwrite=True to replace it)."""


class CorruptCheckpointError(StoreError):
    """A file of a checkpoint is missing or does not match its manifest entry."""

    def __init__(
        self, location: str, relpath: str, problem: str, expected: str | None = None, actual: str | None = None
    ):
        self.location = location
        self.relpath = relpath
        self.expected = expected
        self.actual = actual
        detail = f" (expected {expected}, got {actual})" if expected is not None else ""
        super().__init__(f"corrupt checkpoint {location}: file '{relpath}' {problem}{detail}")


# ----------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass
class Manifest:
    """The list of a checkpoint's files with their digests; `digest` depends on the files alone."""

    files: dict[str, FileEntry]
    digest: str
    run_id: str | None
    step_key: str | None
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> str:
        body = {
            "format": self.format,
            "digest": self.digest,
            "run_id": self.run_id,
            "step_key": self.step_key,
            "created_at": self.created_at,
            "meta": self.meta,
            "files": {rel: {"sha256": e.sha256, "size": e.size} for rel, e in sorted(self.files.items())},
        }
        return json.dumps(body, indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> Manifest:
        """Parse and check a manifest; `source` names where it came from in error messages."""
        try:
            body = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{source}: manifest is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise StoreError(f"{source}: manifest must be a JSON object")
        if body.get("format") != MANIFEST_FORMAT:
            raise StoreError(
                f"{source}: unsupported manifest format {body.get('format')!r} (this code reads {MANIFEST_FORMAT})"
            )
        for key in ("files", "digest", "created_at"):
            if key not in body:
                raise StoreError(f"{source}: manifest lacks '{key}'")
        if not isinstance(body["files"], dict):
            raise StoreError(f"{source}: manifest 'files' must be an object")
        files: dict[str, FileEntry] = {}
        for rel, entry in body["files"].items():
            _check_relpath(rel, source)
            if not (isinstance(entry, dict) and _is_sha256(entry.get("sha256")) and _is_size(entry.get("size"))):
                raise StoreError(f"{source}: manifest entry '{rel}' needs a hex 'sha256' and an integer 'size' >= 0")
            files[rel] = FileEntry(sha256=entry["sha256"], size=entry["size"])
        meta = body.get("meta") or {}
        if not isinstance(meta, dict):
            raise StoreError(f"{source}: manifest 'meta' must be an object")
        manifest = cls(
            files=files,
            digest=body["digest"],
            run_id=body.get("run_id"),
            step_key=body.get("step_key"),
            created_at=body["created_at"],
            meta=meta,
        )
        if files_digest(files) != manifest.digest:
            actual = files_digest(files)
            raise StoreError(f"{source}: manifest digest {manifest.digest} does not match its file list ({actual})")
        return manifest


def files_digest(files: Mapping[str, FileEntry]) -> str:
    """sha256 over the sorted `path<TAB>sha256<TAB>size` lines: independent of file order and of metadata."""
    hasher = hashlib.sha256()
    for rel in sorted(files):
        entry = files[rel]
        hasher.update(f"{rel}\t{entry.sha256}\t{entry.size}\n".encode())
    return hasher.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def list_files(local_dir: Path) -> list[str]:
    """Relative POSIX paths of the files under `local_dir`, the top-level manifest excluded."""
    found = []
    for dirpath, dirnames, filenames in os.walk(local_dir):
        linked = [name for name in dirnames if (Path(dirpath) / name).is_symlink()]
        if linked:  # os.walk does not descend into them: their files would be left out silently
            raise StoreError(f"{Path(dirpath) / linked[0]}: symlinked folders are not supported in a checkpoint")
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(local_dir).as_posix()
            if rel != MANIFEST_NAME:
                _check_relpath(rel, str(local_dir))
                found.append(rel)
    return sorted(found)


def build_manifest(
    local_dir: str | Path,
    run_id: str | None = None,
    step_key: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Manifest:
    """Hash every file of `local_dir` (streaming) into a manifest; does not write it."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise StoreError(f"not a folder: {local_dir}")
    files = {}
    for rel in list_files(local_dir):
        path = local_dir / rel
        files[rel] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
    if not files:
        raise StoreError(f"{local_dir}: a checkpoint needs at least one file")
    meta = dict(meta or {})
    try:
        json.dumps(meta)
    except TypeError as exc:
        raise StoreError(f"{local_dir}: manifest meta must be JSON-serialisable: {exc}") from exc
    return Manifest(
        files=files,
        digest=files_digest(files),
        run_id=run_id,
        step_key=step_key,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        meta=meta,
    )


def verify_dir(local_dir: str | Path, manifest: Manifest | None = None) -> Manifest:
    """Check every file of `local_dir` against `manifest` (default: the folder's own manifest.json)."""
    local_dir = Path(local_dir)
    if manifest is None:
        manifest = _read_local_manifest(local_dir)
        if manifest is None:
            raise CheckpointNotFoundError(f"no checkpoint at {local_dir}: {MANIFEST_NAME} is missing")
    for rel, entry in manifest.files.items():
        _verify_file(local_dir / rel, rel, entry, str(local_dir))
    return manifest


def _verify_file(path: Path, rel: str, entry: FileEntry, location: str) -> None:
    if not path.is_file():
        raise CorruptCheckpointError(location, rel, "is missing")
    size = path.stat().st_size
    if size != entry.size:
        raise CorruptCheckpointError(location, rel, "has the wrong size", f"{entry.size} bytes", f"{size} bytes")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise CorruptCheckpointError(location, rel, "has the wrong sha256", entry.sha256, actual)


def _check_relpath(rel: str, source: str) -> None:
    parts = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(ch) < 32 for ch in rel)
        or rel == MANIFEST_NAME
    ):
        raise StoreError(f"{source}: '{rel}' is not a valid file path inside a checkpoint")


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_local_manifest(folder: Path) -> Manifest | None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    return Manifest.from_json(path.read_bytes(), str(path))


# ----------------------------------------------------------------------------------------- backends


class _MissingObject(Exception):
    """A file listed by the manifest is not in the store."""


class _LocalBackend:
    """A checkpoint is a folder; publish and fetch assemble a unique hidden sibling and rename it into place."""

    def read_manifest(self, uri: str) -> Manifest | None:
        return _read_local_manifest(resolve_local(uri))

    def has_manifest(self, uri: str) -> bool:
        return (resolve_local(uri) / MANIFEST_NAME).is_file()

    def fetch_file(self, uri: str, rel: str, target: Path) -> None:
        source = resolve_local(uri) / rel
        if not source.is_file():
            raise _MissingObject(rel)
        self._copy_file(source, target)

    def publish(self, local_dir: Path, uri: str, manifest: Manifest, overwrite: bool) -> Manifest:
        """Returns the manifest now at `uri`: ours, or an equal one that a concurrent publisher placed first."""
        dest = resolve_local(uri)
        if dest == local_dir.resolve():
            return self._publish_in_place(dest, uri, manifest, overwrite)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = unique_sibling(dest, "publish")
        try:
            for rel in manifest.files:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self._copy_file(local_dir / rel, target)
            fsync_tree(staging, list(manifest.files))  # the contents are on disk before the manifest names them
            write_atomically(staging / MANIFEST_NAME, manifest.to_json().encode())
            kept = _swap_into_place(staging, dest, manifest.digest, replace_plain_folder=True, overwrite=overwrite)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return kept or manifest

    @staticmethod
    def _publish_in_place(dest: Path, uri: str, manifest: Manifest, overwrite: bool) -> Manifest:
        fsync_tree(dest, list(manifest.files))
        with locked_dir(dest.parent):
            held = _read_local_manifest(dest)
            if held is not None and held.digest == manifest.digest:
                return held
            if held is not None and not overwrite:
                raise _exists_error(uri, held.digest, manifest.digest, held.run_id)
            write_atomically(dest / MANIFEST_NAME, manifest.to_json().encode())
        return manifest

    def _copy_file(self, source: Path, target: Path) -> None:
        shutil.copyfile(source, target)


class _S3Backend:
    """A checkpoint is the keys under `prefix/`; manifest.json is put after every file.

    Publishes to one URI run one at a time under a lease-based lock (`.<name>.publishing` beside the
    prefix): S3 cannot rename a folder into place, so without it a second publisher would overwrite the
    files of the first. The manifest itself is put with If-None-Match: *.
    """

    def __init__(self, settings: S3Config, publish_lock: PublishLockConfig):
        access = S3Access(settings)
        self._client = access.client
        self._transfer = access.transfer
        self._publish_lock_config = publish_lock
        self.claims = S3Claims(self._client, _s3_errors)
        self._publish_claims = S3Claims(self._client, _s3_errors, suffix=PUBLISH_LOCK_SUFFIX)

    def read_manifest(self, uri: str) -> Manifest | None:
        bucket, prefix = split_s3_prefix(uri)
        key = f"{prefix}/{MANIFEST_NAME}"
        with _s3_errors(uri):
            try:
                body = self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception as exc:
                if error_code(exc) in _NOT_FOUND_CODES:
                    return None
                raise
        return Manifest.from_json(body, f"s3://{bucket}/{key}")

    def has_manifest(self, uri: str) -> bool:
        bucket, prefix = split_s3_prefix(uri)
        with _s3_errors(uri):
            try:
                self._client.head_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST_NAME}")
            except Exception as exc:
                if error_code(exc) in _NOT_FOUND_CODES:
                    return False
                raise
        return True

    def fetch_file(self, uri: str, rel: str, target: Path) -> None:
        bucket, prefix = split_s3_prefix(uri)
        with _s3_errors(uri):
            try:
                self._client.download_file(bucket, f"{prefix}/{rel}", str(target), Config=self._transfer)
            except Exception as exc:
                if error_code(exc) in _NOT_FOUND_CODES:
                    raise _MissingObject(rel) from exc
                raise

    def publish(self, local_dir: Path, uri: str, manifest: Manifest, overwrite: bool) -> Manifest:
        with self._publish_lock(uri):
            existing = self.read_manifest(uri)  # checked again now that no other publisher runs
            if existing is not None:
                if existing.digest == manifest.digest:
                    return existing
                if not overwrite:
                    raise _exists_error(uri, existing.digest, manifest.digest, existing.run_id)
            self._upload(local_dir, uri, manifest, replacing=existing is not None)
            return self._put_manifest(uri, manifest)

    def _upload(self, local_dir: Path, uri: str, manifest: Manifest, replacing: bool) -> None:
        bucket, prefix = split_s3_prefix(uri)
        manifest_key = f"{prefix}/{MANIFEST_NAME}"
        uploaded: list[str] = []
        with _s3_errors(uri):
            present = self._list_keys(bucket, prefix)
            nested = [key for key in present if key.endswith(f"/{MANIFEST_NAME}") and key != manifest_key]
            if nested:
                raise StoreError(
                    f"refusing to publish to {uri}: it holds another checkpoint (s3://{bucket}/{nested[0]})"
                )
            if replacing:
                # From here until the new manifest is put, the URI holds no checkpoint.
                self._client.delete_object(Bucket=bucket, Key=manifest_key)
            try:
                for rel in manifest.files:
                    key = f"{prefix}/{rel}"
                    self._upload_file(local_dir / rel, bucket, key)
                    uploaded.append(key)
                # Files of a replaced checkpoint or of an unfinished publish that this one does not list.
                listed = set(uploaded) | {manifest_key}
                self._delete_keys(bucket, [key for key in present if key not in listed])
            except BaseException:
                self._delete_keys_quietly(bucket, uploaded)
                raise

    def _put_manifest(self, uri: str, manifest: Manifest) -> Manifest:
        """Put the manifest only where none is (If-None-Match: *); the manifest at `uri` afterwards.

        A manifest that appeared meanwhile (a publisher that bypassed the lock) is kept: the same digest is
        a no-op, another raises. Our uploaded keys are then left alone: they are that publisher's keys too.
        """
        bucket, prefix = split_s3_prefix(uri)
        with _s3_errors(uri):
            try:
                self._client.put_object(
                    Bucket=bucket, Key=f"{prefix}/{MANIFEST_NAME}", Body=manifest.to_json().encode(),
                    ContentType="application/json", IfNoneMatch="*",
                )
                return manifest
            except Exception as exc:
                if error_code(exc) not in CONFLICT_CODES:
                    raise
        held = self.read_manifest(uri)
        if held is not None and held.digest == manifest.digest:
            return held
        raise CheckpointExistsError(
            f"{uri}: another manifest (digest {held.digest[:12] if held else 'gone'}) appeared while publishing "
            f"digest {manifest.digest[:12]}: a publisher that does not take the publish lock?"
        )

    @contextmanager
    def _publish_lock(self, uri: str) -> Iterator[None]:
        settings = self._publish_lock_config
        owner = "publisher {host}:{pid}".format(**host_and_pid())
        logged = False
        while (claim := try_claim(self._publish_claims, uri, owner, settings.lease_s)) is None:
            if not logged:
                holder = self._publish_claims.info(uri)
                log.info("waiting for %s to finish publishing %s", holder.owner if holder else "a publisher", uri)
                logged = True
            time.sleep(settings.poll_s)
        with claim.keep_alive(settings.renew_every_s):
            yield

    def list_objects(self, uri: str) -> list[tuple[str, int, str]]:
        """(relative path, size, ETag) of every object under `uri/`, sorted."""
        bucket, prefix = split_s3_prefix(uri)
        found = []
        with _s3_errors(uri):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
                found += [(obj["Key"][len(prefix) + 1:], obj["Size"], obj["ETag"]) for obj in page.get("Contents", [])]
        return sorted(found)

    def download_prefix(self, uri: str, target: Path) -> int:
        """Copy every object under `uri/` into `target` (no manifest needed); returns the file count."""
        bucket, prefix = split_s3_prefix(uri)
        with _s3_errors(uri):
            keys = self._list_keys(bucket, prefix)
            for key in keys:
                rel = key[len(prefix) + 1:]
                _check_relpath(rel, uri)
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                self._client.download_file(bucket, key, str(target / rel), Config=self._transfer)
        return len(keys)

    def _upload_file(self, path: Path, bucket: str, key: str) -> None:
        self._client.upload_file(str(path), bucket, key, Config=self._transfer)

    def _list_keys(self, bucket: str, prefix: str) -> list[str]:
        keys = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def _delete_keys(self, bucket: str, keys: list[str]) -> None:
        for start in range(0, len(keys), _S3_DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start : start + _S3_DELETE_BATCH]]
            self._client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})

    def _delete_keys_quietly(self, bucket: str, keys: list[str]) -> None:
        try:
            self._delete_keys(bucket, keys)
        except Exception as exc:  # the publish error matters more; orphans are invisible without a manifest
            log.warning("could not remove %d uploaded keys of a failed publish: %s", len(keys), exc)


def _exists_error(uri: str, held_digest: str, new_digest: str, held_run: str | None) -> CheckpointExistsError:
    return CheckpointExistsError(
        f"{uri} already holds another checkpoint (digest {held_digest[:12]}, run {held_run}); "
        f"new digest {new_digest[:12]}: pass overwrite=True to replace it"
    )


@contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """Turn botocore's errors into StoreError naming the URI (missing credentials, bucket, endpoint)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError as exc:
        raise StoreError(
            f"{uri}: no AWS credentials found (standard chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            f"~/.aws/credentials, AWS_PROFILE, instance role)"
        ) from exc
    except ClientError as exc:
        code = error_code(exc)
        if code == "NoSuchBucket":
            raise StoreError(f"{uri}: bucket does not exist") from exc
        if code in _NOT_FOUND_CODES or code in CONFLICT_CODES:
            raise
        raise StoreError(f"{uri}: S3 request failed: {exc}") from exc
    except (BotoCoreError, Boto3Error) as exc:  # Boto3Error: S3UploadFailedError wraps a failed transfer
        raise StoreError(f"{uri}: S3 request failed: {exc}") from exc


# ----------------------------------------------------------------------------------------- file helpers


def _swap_into_place(
    staging: Path, dest: Path, digest: str, *, replace_plain_folder: bool, overwrite: bool,
    keep_same_digest: bool = True,
) -> Manifest | None:
    """Rename the finished `staging` folder to `dest`, under the flock of their parent folder, so the
    check of what `dest` holds and the rename are one step for every process on this file system.

    Returns the manifest already at `dest` when it holds the same digest (a concurrent fetch or publish
    finished first; `staging` is discarded), else None. A checkpoint of another digest is replaced only
    with `overwrite` (CheckpointExistsError otherwise); a non-empty folder without a manifest only when
    `replace_plain_folder` (a leftover in the store's own namespace), never when it holds checkpoints.
    """
    trash = None
    with locked_dir(dest.parent):
        try:
            os.rename(staging, dest)  # succeeds when dest is absent or an empty folder
            fsync_dir(dest.parent)
            return None
        except OSError as exc:
            if not dest.is_dir():
                raise StoreError(f"cannot place a checkpoint at {dest}: {exc}") from exc
        held = _held_digest(dest)
        if keep_same_digest and held == digest:
            shutil.rmtree(staging, ignore_errors=True)
            return _read_local_manifest(dest)
        if held is None:
            if not replace_plain_folder:
                raise StoreError(f"refusing to replace {dest}: it is not empty and holds no {MANIFEST_NAME}")
            nested = next(dest.rglob(MANIFEST_NAME), None)
            if nested is not None:
                raise StoreError(f"refusing to replace {dest}: it is not a checkpoint but holds one ({nested})")
        elif not overwrite:
            raise CheckpointExistsError(
                f"{dest} already holds another checkpoint (digest {held[:12] or 'unreadable'}, published "
                f"while this one was staged); new digest {digest[:12]}: pass overwrite=True to replace it"
            )
        trash = unique_sibling(dest, "old")
        os.rename(dest, trash)
        os.rename(staging, dest)
        fsync_dir(dest.parent)
    shutil.rmtree(trash, ignore_errors=True)
    return None


def _held_digest(folder: Path) -> str | None:
    """The digest of the folder's manifest; None without one, "" when it cannot be read."""
    try:
        manifest = _read_local_manifest(folder)
    except StoreError:
        return ""
    return None if manifest is None else manifest.digest


# ----------------------------------------------------------------------------------------- the store


class CheckpointStore:
    """Publish and fetch checkpoints under file:// and s3:// URIs (s3:// needs `config.s3`); claim URIs."""

    def __init__(self, config: StorageConfig):
        self.config = config
        self._local = _LocalBackend()
        self._file_claims = FileClaims()
        self._s3: _S3Backend | None = None

    @classmethod
    def from_config(cls, cfg: StorageConfig | Mapping[str, Any] | Any, where: str = "storage") -> CheckpointStore:
        """From a StorageConfig, or a mapping / DictConfig shaped like conf/storage/*.yaml (validated)."""
        config = cfg if isinstance(cfg, StorageConfig) else validated(StorageConfig, cfg, where)
        return cls(config)

    @property
    def root(self) -> str:
        return self.config.root

    def uri(self, *parts: str) -> str:
        """A URI under the store's root, e.g. `store.uri("stage1", step_key)`."""
        return join_uri(self.root, *parts)

    def read_manifest(self, uri: str) -> Manifest | None:
        """The checkpoint's manifest, or None when there is none (not published, or unfinished)."""
        return self._backend(uri).read_manifest(uri)

    def exists(self, uri: str) -> bool:
        return self._backend(uri).has_manifest(uri)

    def publish(
        self,
        local_dir: str | Path,
        uri: str,
        *,
        run_id: str | None = None,
        step_key: str | None = None,
        meta: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> Manifest:
        """Publish the files of `local_dir` as a checkpoint at `uri`; the manifest goes last.

        Returns the manifest now at `uri`: the stored one when it already held the same files. A
        different digest at `uri` raises CheckpointExistsError unless `overwrite`, checked before any
        copy and again at the moment the checkpoint is placed (a concurrent publisher may land first).
        """
        local_dir = Path(local_dir)
        backend = self._backend(uri)
        manifest = build_manifest(local_dir, run_id=run_id, step_key=step_key, meta=meta)
        existing = backend.read_manifest(uri)
        if existing is not None:
            if existing.digest == manifest.digest:
                log.info("checkpoint %s already published (digest %s)", uri, existing.digest[:12])
                return existing
            if not overwrite:
                raise _exists_error(uri, existing.digest, manifest.digest, existing.run_id)
        start = time.perf_counter()
        placed = backend.publish(local_dir, uri, manifest, overwrite)
        if placed is not manifest:
            log.info("checkpoint %s was published concurrently with the same digest %s", uri, placed.digest[:12])
            return placed
        log.info(
            "published %s: %d files, %.1f MiB, digest %s in %.2f s",
            uri, len(manifest.files), manifest.total_size / _MIB, manifest.digest[:12], time.perf_counter() - start,
        )
        return manifest

    def fetch(self, uri: str, local_dir: str | Path) -> Manifest:
        """Copy the checkpoint at `uri` into `local_dir`, verifying every file; returns its manifest.

        `local_dir` is replaced as a whole (it must be absent, empty or an earlier checkpoint folder);
        when it already holds this checkpoint intact, nothing is transferred.
        """
        local_dir = Path(local_dir).resolve()
        backend = self._backend(uri)
        manifest = backend.read_manifest(uri)
        if manifest is None:
            raise CheckpointNotFoundError(
                f"no checkpoint at {uri}: {MANIFEST_NAME} is missing (never published, or the publish did not finish)"
            )
        held = _held_digest(local_dir)
        if held == manifest.digest:
            try:
                verify_dir(local_dir, manifest)
                log.info("checkpoint %s already in %s", uri, local_dir)
                return manifest
            except CorruptCheckpointError as exc:
                log.warning("refetching %s into %s: the local copy is damaged: %s", uri, local_dir, exc)
        damaged = held == manifest.digest
        start = time.perf_counter()
        local_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = unique_sibling(local_dir, "fetch")
        try:
            for rel, entry in manifest.files.items():
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    backend.fetch_file(uri, rel, target)
                except _MissingObject:
                    raise CorruptCheckpointError(uri, rel, "is missing") from None
                _verify_file(target, rel, entry, uri)
            fsync_tree(staging, list(manifest.files))
            write_atomically(staging / MANIFEST_NAME, manifest.to_json().encode())
            _swap_into_place(
                staging, local_dir, manifest.digest, replace_plain_folder=False, overwrite=True,
                keep_same_digest=not damaged,
            )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info(
            "fetched %s -> %s: %d files, %.1f MiB in %.2f s",
            uri, local_dir, len(manifest.files), manifest.total_size / _MIB, time.perf_counter() - start,
        )
        return manifest

    def local_path(self, uri: str, verify: bool = True) -> Path:
        """The folder of a file:// checkpoint, used in place (no copy); verified unless verify=False."""
        if is_s3(uri):
            raise StoreError(f"{uri} is not on this file system: use fetch() or materialize()")
        folder = resolve_local(uri)
        manifest = _read_local_manifest(folder)
        if manifest is None:
            raise CheckpointNotFoundError(f"no checkpoint at {uri}: {MANIFEST_NAME} is missing")
        if verify:
            verify_dir(folder, manifest)
        return folder

    def materialize(self, uri: str, cache_dir: str | Path) -> Path:
        """A verified local folder holding the checkpoint: in place for file://, fetched into `cache_dir` for s3://."""
        if is_s3(uri):
            self.fetch(uri, cache_dir)
            return Path(cache_dir).resolve()
        return self.local_path(uri)

    def download_folder(self, uri: str, local_dir: str | Path) -> Path:
        """A plain s3:// folder (e.g. released weights, no manifest) copied once into `local_dir`.

        Processes on this node that ask for the same `local_dir` at once serialise on an flock of
        `.<name>.lock` beside it: the first downloads, the others wait and reuse its copy (the
        `.downloaded` marker, written last, names the URI and the downloader's host and pid).
        """
        local_dir = Path(local_dir).resolve()
        backend = self._s3_backend(uri)
        with locked_file(local_dir.parent / f".{local_dir.name}.lock"):
            if (local_dir / DOWNLOADED_MARKER).is_file():
                log.info("reusing %s: %s was downloaded into it before", local_dir, uri)
                return local_dir
            staging = unique_sibling(local_dir, "download")
            try:
                count = backend.download_prefix(uri, staging)
                if count == 0:
                    raise CheckpointNotFoundError(f"no objects under {uri}")
                fsync_tree(staging)
                marker = {"uri": uri, "files": count, **host_and_pid()}
                write_atomically(staging / DOWNLOADED_MARKER, json.dumps(marker).encode())
                if local_dir.exists():  # an unfinished copy (no marker)
                    trash = unique_sibling(local_dir, "old")
                    os.rename(local_dir, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                os.rename(staging, local_dir)
                fsync_dir(local_dir.parent)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        log.info("downloaded %d files of %s into %s", count, uri, local_dir)
        return local_dir

    def cached_folder(self, uri: str, cache_root: str | Path) -> Path:
        """`download_folder` into `cache_root/<key>`, the key a digest of the URI and of every object's
        path, size and ETag: a changed object under the prefix gives a new copy, an unchanged one is reused."""
        listing = self._s3_backend(uri).list_objects(uri)
        if not listing:
            raise CheckpointNotFoundError(f"no objects under {uri}")
        hasher = hashlib.sha256(f"{uri}\n".encode())
        for rel, size, etag in listing:
            hasher.update(f"{rel}\t{size}\t{etag}\n".encode())
        return self.download_folder(uri, Path(cache_root) / hasher.hexdigest()[:16])

    # ------------------------------------------------------------------------------------- claims

    def try_claim(self, uri: str, owner: str, lease_s: float) -> Claim | None:
        """Claim `uri` for `owner` for lease_s seconds (renew to extend); None while another owner's lease
        is live. An expired lease (a crashed owner) is taken over; exactly one of two claimants wins."""
        return try_claim(self._claims(uri), uri, owner, lease_s)

    def claim_info(self, uri: str) -> ClaimInfo | None:
        """Who holds a live claim on `uri` and until when; None when nobody does."""
        return self._claims(uri).info(uri)

    def _claims(self, uri: str) -> FileClaims | S3Claims:
        return self._s3_backend(uri).claims if is_s3(uri) else self._file_claims

    def _s3_backend(self, uri: str) -> _S3Backend:
        backend = self._backend(uri)
        if not isinstance(backend, _S3Backend):
            raise StoreError(f"{uri} is not an s3:// URI")
        return backend

    def _backend(self, uri: str) -> _LocalBackend | _S3Backend:
        if not is_s3(uri):
            return self._local
        if self._s3 is None:
            if self.config.s3 is None:
                raise StoreError(f"{uri}: this store has no S3 settings (storage.s3 is null); use storage=s3")
            self._s3 = _S3Backend(self.config.s3, self.config.publish_lock)
        return self._s3


def open_store(cfg: StorageConfig | Mapping[str, Any] | Any, where: str = "storage") -> CheckpointStore:
    return CheckpointStore.from_config(cfg, where)
